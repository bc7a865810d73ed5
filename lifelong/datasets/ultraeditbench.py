"""UltraEditBench (the UltraEdit authors' 2M-pair edit stream, HF `XiaojieGu/UltraEditBench`).

Rows: prompt, rephrase_prompt, ans, loc, loc_ans (+ subject, read only by EasyEdit). Pairs:
(prompt -> ans), (rephrase_prompt -> ans), (loc -> loc_ans). The 20K runs use the first 20,000 rows
(`n_edits: 20000`), the 1M runs 10,000 turns of 100.

The file is ~800 MB, so this loader STREAMS by default (`stream: true`): rows are parsed one at a
time from disk (JSON array or JSON Lines) and `records(start, stop)` re-reads from the nearest
checkpoint; nothing holds the whole file. With `prescan: true` (default) one pass at load time
validates the used rows, counts them and reports duplicates; bound it with `n_edits`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..records import EditRecord
from .filesource import FileOptions, open_source
from .jsonio import opt_str, req_str

OFFICIAL = ("UltraEditBench_2M.json from the Hugging Face dataset XiaojieGu/UltraEditBench "
            "(licence not confirmed; check before redistributing)")


@dataclass(kw_only=True)
class UltraEditBenchOptions(FileOptions):
    path: str = "ultraeditbench/UltraEditBench_2M.json"
    stream: bool = True
    loc_question_mark: bool = False


def convert(row: Mapping[str, Any], index: int, opts: UltraEditBenchOptions) -> EditRecord:
    loc = req_str(row, "loc")
    if opts.loc_question_mark and not loc.endswith("?"):
        loc += "?"
    used = {"prompt", "rephrase_prompt", "ans", "loc", "loc_ans", "subject"}
    return EditRecord(
        prompt=req_str(row, "prompt"),
        target=req_str(row, "ans"),
        rephrases=(req_str(row, "rephrase_prompt"),),
        locality_prompt=loc,
        locality_answer=req_str(row, "loc_ans"),
        subject=opt_str(row, "subject") or "",
        ground_truth=None,
        uid=str(index),
        extras={k: v for k, v in row.items() if k not in used},
    )


def load(name: str, options: dict, *, data_dir, where: str):
    return open_source(name, UltraEditBenchOptions, options, data_dir=data_dir, where=where,
                       convert=convert, official=OFFICIAL)
