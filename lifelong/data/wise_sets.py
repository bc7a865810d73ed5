"""The WISE paper's Hallucination and Temporal sets (WISE/EasyEdit data bundle).

`wise_hallucination` (SelfCheckGPT / WikiBio; `hallucination-{edit,train}.json`): prompt, target_new
(a long sentence), locality_prompt, locality_ground_truth (RedPajama text), subject. No rephrase:
the Rel metric is the perplexity of target_new given prompt (`scoring.target_perplexity`).

`wise_temporal` (`temporal-{edit,train}.json`): the same plus `ood_rephrase`, a long out-of-
distribution text about the subject; it is kept in extras["ood_rephrase"] (not as a rephrase: its
metric is WISE's Eq. 10, `scoring.temporal_ood`), never as a teacher-forced generalization pair.

Targets are long (hundreds of tokens): use `max_prompt_chars` to count long prompts if needed.

The official files hold rows whose `locality_ground_truth` is "" (hallucination-edit: 7 rows,
hallucination-train: 5, temporal-train: 1): short RedPajama/Pile documents with nothing left to
continue. The edit itself is fine, so by default (`empty_locality: drop_probe`) the row is kept
without a locality probe (locality_prompt = "", counted in report["no_locality_probe"]) and the
original strings stay in extras["raw_locality"]. `empty_locality: error` treats it as a malformed
row (strict: raise; lenient: skip the row).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping

from ..core.records import EditRecord
from .rows import opt_str, req_str
from .source import FileOptions, open_source

OFFICIAL = ("the WISE data bundle (EasyEdit README, WISE section: Google Drive 'data/wise' with "
            "hallucination/ and temporal/ edit and train files)")


@dataclass(kw_only=True)
class HallucinationOptions(FileOptions):
    path: str = "wise_hallucination/hallucination-edit.json"
    empty_locality: Literal["drop_probe", "error"] = "drop_probe"


@dataclass(kw_only=True)
class TemporalOptions(FileOptions):
    path: str = "wise_temporal/temporal-edit.json"
    empty_locality: Literal["drop_probe", "error"] = "drop_probe"


_USED = {"prompt", "target_new", "locality_prompt", "locality_ground_truth", "subject"}


def _record(row: Mapping[str, Any], index: int, extras: dict, opts) -> EditRecord:
    prompt, target = req_str(row, "prompt"), req_str(row, "target_new")
    loc_prompt = req_str(row, "locality_prompt")
    loc_answer = req_str(row, "locality_ground_truth", empty_ok=opts.empty_locality == "drop_probe")
    if not loc_answer.strip():
        extras["raw_locality"] = {"prompt": loc_prompt, "answer": loc_answer}
        loc_prompt = loc_answer = ""
    return EditRecord(prompt=prompt, target=target, rephrases=(), locality_prompt=loc_prompt,
                      locality_answer=loc_answer, subject=opt_str(row, "subject") or "", ground_truth=None,
                      uid=str(index), extras=extras)


def convert_hallucination(row: Mapping[str, Any], index: int, opts) -> EditRecord:
    return _record(row, index, {k: v for k, v in row.items() if k not in _USED}, opts)


def convert_temporal(row: Mapping[str, Any], index: int, opts) -> EditRecord:
    ood = req_str(row, "ood_rephrase")
    extras = {k: v for k, v in row.items() if k not in _USED}
    extras["ood_rephrase"] = ood
    return _record(row, index, extras, opts)


def load_hallucination(name: str, options: dict, *, data_dir, where: str):
    return open_source(name, HallucinationOptions, options, data_dir=data_dir, where=where,
                       convert=convert_hallucination, official=OFFICIAL)


def load_temporal(name: str, options: dict, *, data_dir, where: str):
    return open_source(name, TemporalOptions, options, data_dir=data_dir, where=where,
                       convert=convert_temporal, official=OFFICIAL)
