"""UltraEditBench (the UltraEdit authors' 2M-pair edit stream, HF `XiaojieGu/UltraEditBench`).

Rows: prompt, rephrase_prompt, ans, loc, loc_ans (+ subject, read only by EasyEdit). Pairs:
(prompt -> ans), (rephrase_prompt -> ans), (loc -> loc_ans). The 20K runs use the first 20,000 rows
(`n_edits: 20000`), the 1M runs 10,000 turns of 100.

The file is ~800 MB. Like every file-backed source (see source.py), it is converted once into a cached
Arrow file that is memory-mapped, not held: one pass at load time validates the used rows, counts them
and reports duplicates (bound it with `n_edits`), and `records(start, stop)` reads any range on demand.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..core.records import EditRecord
from .rows import opt_str, req_str
from .source import FileOptions, open_source

OFFICIAL = ("UltraEditBench_2M.json from the Hugging Face dataset XiaojieGu/UltraEditBench "
            "(licence not confirmed; check before redistributing)")


@dataclass(kw_only=True)
class UltraEditBenchOptions(FileOptions):
    path: str = "ultraeditbench/UltraEditBench_2M.json"
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
