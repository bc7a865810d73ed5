"""FEVER fact-checking edits (MEND's split via MALMEN/UltraEdit: `fever_eval_20k.json`).

Rows: prompt (a claim), equiv_prompt (a LIST of paraphrased claims), alt ("SUPPORTS" or "REFUTES",
the label to insert, flipped relative to the truth), unrel_prompt, unrel_ans. Pairs: (prompt -> alt),
(equiv -> alt), (unrel_prompt -> unrel_ans); the label is generated as text (" SUPPORTS").

`equiv`: which paraphrase becomes the rephrase. "random" follows the reference (one seeded random
choice per row); the choice uses a per-row RNG seeded with (seed, row index), so it is the same
however the file is read. "first" takes the first; "all" keeps every paraphrase as a rephrase.
All paraphrases are kept in extras["equiv_prompts"]. ground_truth is the other label.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from ..core.records import EditRecord
from .rows import RowError, req_str, str_list
from .source import FileOptions, open_source

OFFICIAL = ("the UltraEdit/MALMEN fever_eval_20k.json (UltraEdit authors' Google Drive folder "
            "1wsxG5Ybf6hT9QUlccvzTuJSfL_TFNyKQ; MEND's FEVER fact-checking split)")


@dataclass(kw_only=True)
class FeverOptions(FileOptions):
    path: str = "fever/fever_eval_20k.json"
    equiv: Literal["random", "first", "all"] = "random"
    seed: int = 0
    labels: list[str] = field(default_factory=lambda: ["SUPPORTS", "REFUTES"])

    def validate(self) -> None:
        super().validate()
        if len(self.labels) != 2 or len(set(self.labels)) != 2:
            raise ValueError(f"labels must be two distinct strings, got {self.labels}")


def convert(row: Mapping[str, Any], index: int, opts: FeverOptions) -> EditRecord:
    prompt = req_str(row, "prompt")
    paraphrases = str_list(row, "equiv_prompt")
    alt = req_str(row, "alt")
    if alt not in opts.labels:
        raise RowError("alt", f"expected one of {opts.labels}, got {alt!r}")
    unrel, unrel_ans = req_str(row, "unrel_prompt"), req_str(row, "unrel_ans")
    if opts.equiv == "random":
        rephrases = (random.Random(f"{opts.seed}:{index}").choice(paraphrases),)
    elif opts.equiv == "first":
        rephrases = (paraphrases[0],)
    else:
        rephrases = tuple(paraphrases)
    used = {"prompt", "equiv_prompt", "alt", "unrel_prompt", "unrel_ans"}
    extras = {k: v for k, v in row.items() if k not in used}
    extras["equiv_prompts"] = list(paraphrases)
    other = opts.labels[1] if alt == opts.labels[0] else opts.labels[0]
    return EditRecord(prompt=prompt, target=alt, rephrases=rephrases, locality_prompt=unrel,
                      locality_answer=unrel_ans, ground_truth=other, uid=str(index), extras=extras)


def load(name: str, options: dict, *, data_dir, where: str):
    return open_source(name, FeverOptions, options, data_dir=data_dir, where=where,
                       convert=convert, official=OFFICIAL)
