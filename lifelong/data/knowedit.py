"""KnowEdit (EasyEdit's benchmark; Zhang et al. 2024, "A Comprehensive Study of Knowledge Editing").

One layout covers its four sets (spec baselines.md §7): ZsRE-test-all.json, wiki_counterfact test_cf.json,
wiki_recent recent_test.json and WikiBio wikibio-test-all.json. A row holds
    subject (WikiBio: concept), prompt (WikiBio: text), target_new (WikiBio: labels),
    ground_truth (a string, a list of aliases, or absent for insertions), rephrase_prompt (optional),
    locality:    {list name: [{prompt, ground_truth}, ...]}   e.g. Relation_Specificity, Forgetfulness
    portability: {list name: [{prompt, ground_truth}, ...]}   e.g. Reasoning, Subject_Aliasing, Logical_Generalization
where a list answer is a string, a list of aliases, or a list of alias groups.

Mapping: ground_truth and every list answer keep their first non-blank alias (KnowEdit's script does the same).
The record's locality probe is the first Relation_Specificity entry (else the first entry of the first list);
every named list is scored separately and averaged (eval/lists.py). A missing rephrase, locality or portability
is counted in the run's `named_lists.missing_parts`, never fatal; a `locality` or `portability` that is not an
object of lists is a row error naming the key.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..core.records import EditRecord
from . import named_lists
from .rows import RowError, opt_str, req_str
from .source import FileOptions, open_source

OFFICIAL = ("EasyEdit's KnowEdit release (Hugging Face dataset zjunlp/KnowEdit: ZsRE/ZsRE-test-all.json, "
            "wiki_counterfact/test_cf.json, wiki_recent/recent_test.json, WikiBio/wikibio-test-all.json; MIT)")


@dataclass(kw_only=True)
class KnowEditOptions(FileOptions):
    path: str = "knowedit/ZsRE-test-all.json"


def _either(row: Mapping[str, Any], *fields: str) -> str:
    for field in fields:
        if field in row:
            return req_str(row, field)
    raise RowError(fields[0], "missing" + (f" (nor {', '.join(fields[1:])})" if len(fields) > 1 else ""))


def convert(row: Mapping[str, Any], index: int, opts: KnowEditOptions) -> EditRecord:
    subject = _either(row, "subject", "concept")
    prompt = _either(row, "prompt", "text")
    target = _either(row, "target_new", "labels")
    truth = row.get("ground_truth")
    if truth is not None and not isinstance(truth, (str, list)):
        raise RowError("ground_truth", f"expected a string or a list of strings, got {type(truth).__name__}")
    rephrase = opt_str(row, "rephrase_prompt")
    locality, skipped_loc = named_lists.prompt_lists(row, "locality")
    portability, skipped_port = named_lists.prompt_lists(row, "portability")
    probe = (locality.get("Relation_Specificity") or next(iter(locality.values()), None) or [("", "")])[0]
    missing = [part for part, absent in (("rephrase_prompt", rephrase is None), ("locality", not locality),
                                         ("portability", not portability)) if absent]
    used = {"subject", "concept", "prompt", "text", "target_new", "labels", "ground_truth", "rephrase_prompt",
            "locality", "portability"}
    extras = {k: v for k, v in row.items() if k not in used}
    extras.update({named_lists.LOCALITY_LISTS: locality, named_lists.PORTABILITY: portability,
                   named_lists.SKIPPED: skipped_loc + skipped_port, named_lists.MISSING: missing})
    return EditRecord(prompt=prompt, target=target, rephrases=(rephrase,) if rephrase else (),
                      locality_prompt=probe[0], locality_answer=probe[1], subject=subject,
                      ground_truth=named_lists.first_alias(truth), uid=str(index), extras=extras)


def load(name: str, options: dict, *, data_dir, where: str):
    return open_source(name, KnowEditOptions, options, data_dir=data_dir, where=where,
                       convert=convert, official=OFFICIAL)
