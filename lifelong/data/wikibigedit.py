"""WikiBigEdit (Thede et al. 2025; HF `lukasthede/WikiBigEdit`, Apache-2.0).

Rows: tag (new|update), subject, update (the edit question), rephrase, personas, ans, loc, loc_ans,
mhop, mhop_ans. Pairs: (update -> ans), (rephrase -> ans), (loc -> loc_ans, NO "?" appended).
`personas` (-> ans) and `mhop` (-> mhop_ans) may be null; they go to `extras` as strings or None
(the reference loader crashes on a null mhop, spec §1.10 h; here a null is simply "no such probe").
A non-null `mhop` needs a non-empty `mhop_ans`.

The full set is >500K rows: the source memory-maps a cached Arrow conversion, so memory stays bounded
(see source.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..core.records import EditRecord
from .rows import RowError, opt_str, req_str
from .source import FileOptions, open_source

OFFICIAL = ("the Hugging Face dataset lukasthede/WikiBigEdit (Apache-2.0; one JSON file per monthly "
            "Wikidata diff), or the UltraEdit authors' wikibigedit_eval_17k.json (Google Drive folder "
            "1wsxG5Ybf6hT9QUlccvzTuJSfL_TFNyKQ)")


@dataclass(kw_only=True)
class WikiBigEditOptions(FileOptions):
    path: str = "wikibigedit/wikibigedit_eval_17k.json"


def convert(row: Mapping[str, Any], index: int, opts: WikiBigEditOptions) -> EditRecord:
    prompt = req_str(row, "update")
    target = req_str(row, "ans")
    rephrase = req_str(row, "rephrase")
    loc, loc_ans = req_str(row, "loc"), req_str(row, "loc_ans")
    tag = opt_str(row, "tag")
    personas = opt_str(row, "personas")
    mhop = opt_str(row, "mhop")
    mhop_ans = opt_str(row, "mhop_ans")
    if mhop is not None and mhop_ans is None:
        raise RowError("mhop_ans", "missing or null while mhop is given")
    used = {"tag", "subject", "update", "rephrase", "personas", "ans", "loc", "loc_ans", "mhop", "mhop_ans"}
    extras = {k: v for k, v in row.items() if k not in used}
    extras.update(tag=tag, personas=personas, mhop=mhop, mhop_ans=mhop_ans if mhop is not None else None)
    return EditRecord(prompt=prompt, target=target, rephrases=(rephrase,), locality_prompt=loc,
                      locality_answer=loc_ans, subject=opt_str(row, "subject") or "", ground_truth=None,
                      uid=str(index), extras=extras)


def load(name: str, options: dict, *, data_dir, where: str):
    return open_source(name, WikiBigEditOptions, options, data_dir=data_dir, where=where,
                       convert=convert, official=OFFICIAL)
