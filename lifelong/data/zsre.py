"""ZsRE, in its two public layouts.

`zsre_mend` — the MEND/ROME layout (`zsre_mend_eval.json`, WISE's `zsre_mend_edit.json`, the train
split `zsre_mend_train*.json`): subject, src, pred, rephrase, alt, answers[list], loc, loc_ans, cond
(+ portability in some copies). Protocol choices, both REQUIRED so that a params entry states them:
  * `target`: "alt" (MEND's alternative answer: EasyEdit / WISE runs) or "answers" (answers[0]:
    MEMIT / AlphaEdit). ground_truth is always answers[0].
  * `loc_question_mark`: append "?" to `loc` (the MEND/MALMEN/UltraEdit lineage does; EasyEdit's
    WISE runner does not).

`zsre_ultraedit` — the UltraEdit/RLEdit layout (`zsre_eval_20k.json`): src, rephrase, ans, loc,
loc_ans (+ subject). `loc_question_mark` is required here too (the authors' loader appends "?").

Portability (data/named_lists.py): EasyEdit's `portability` object becomes the list `one_hop`; the
portability copies' `inverse question` (answer: the subject) and `alter_subject_question` (answer: the new
target) become `inverse_relation` and `subject_replace`. Those copies carry no `loc`: set
`require_locality: false` for them.

Every other field not used for the record is kept in `extras` (pred, cond, all answers, ...).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping

from ..core.records import EditRecord
from . import named_lists
from .rows import RowError, opt_str, req_str, str_list
from .source import FileOptions, open_source

MEND_OFFICIAL = ("MEND-format zsre_mend_eval.json (19,086 rows) from https://memit.baulab.info/data/dsets/ "
                 "(also rome.baulab.info); WISE's zsre_mend_edit.json / zsre_mend_train.json come in the "
                 "WISE/EasyEdit data bundle (EasyEdit README, 'data/wise')")
ULTRAEDIT_OFFICIAL = ("the UltraEdit authors' zsre_eval_20k.json from their Google Drive folder "
                      "1wsxG5Ybf6hT9QUlccvzTuJSfL_TFNyKQ (place it under data/raw/zsre/)")


@dataclass(kw_only=True)
class ZsreMendOptions(FileOptions):
    path: str = "zsre/zsre_mend_edit.json"
    target: Literal["alt", "answers"]
    loc_question_mark: bool
    require_locality: bool = True   # false: a row without `loc` has no locality probe (the portability copies)


@dataclass(kw_only=True)
class ZsreUltraEditOptions(FileOptions):
    path: str = "zsre/zsre_eval_20k.json"
    loc_question_mark: bool


def _loc(row: Mapping[str, Any], append: bool) -> str:
    loc = req_str(row, "loc")
    return loc + "?" if append and not loc.endswith("?") else loc


def convert_mend(row: Mapping[str, Any], index: int, opts: ZsreMendOptions) -> EditRecord:
    src = req_str(row, "src")
    answers = str_list(row, "answers")
    if opts.target == "alt":
        target = req_str(row, "alt")
    else:
        target = answers[0]
        if "alt" in row and not isinstance(row["alt"], str):
            raise RowError("alt", f"expected a string, got {type(row['alt']).__name__}")
    rephrase = req_str(row, "rephrase")
    has_loc = opts.require_locality or "loc" in row
    loc = _loc(row, opts.loc_question_mark) if has_loc else ""
    loc_ans = req_str(row, "loc_ans") if has_loc else ""
    subject = opt_str(row, "subject") or ""
    used = {"src", "rephrase", "loc", "loc_ans", "subject", "portability", "inverse question",
            "alter_subject_question"}
    extras = {k: v for k, v in row.items() if k not in used}
    extras["target_field"] = opts.target
    extras |= _portability(row, subject, target)
    return EditRecord(prompt=src, target=target, rephrases=(rephrase,), locality_prompt=loc,
                      locality_answer=loc_ans, subject=subject, ground_truth=answers[0], uid=str(index),
                      extras=extras)


def _portability(row: Mapping[str, Any], subject: str, target: str) -> dict[str, Any]:
    lists, skipped = named_lists.merged(
        named_lists.one_hop(row),
        _question(row, "inverse question", "inverse_relation", subject),
        _question(row, "alter_subject_question", "subject_replace", target))
    return {named_lists.PORTABILITY: lists, named_lists.SKIPPED: skipped} if lists or skipped else {}


def _question(row: Mapping[str, Any], field: str, name: str, answer: str) -> tuple[dict, int]:
    if field not in row:
        return {}, 0
    question = req_str(row, field)
    return ({name: [(question, answer)]}, 0) if answer.strip() else ({}, 1)


def convert_ultraedit(row: Mapping[str, Any], index: int, opts: ZsreUltraEditOptions) -> EditRecord:
    src = req_str(row, "src")
    target = req_str(row, "ans")
    rephrase = req_str(row, "rephrase")
    loc = _loc(row, opts.loc_question_mark)
    loc_ans = req_str(row, "loc_ans")
    subject = opt_str(row, "subject") or ""
    used = {"src", "ans", "rephrase", "loc", "loc_ans", "subject"}
    extras = {k: v for k, v in row.items() if k not in used}
    return EditRecord(prompt=src, target=target, rephrases=(rephrase,), locality_prompt=loc,
                      locality_answer=loc_ans, subject=subject, ground_truth=None, uid=str(index), extras=extras)


def load(name: str, options: dict, *, data_dir, where: str):
    return open_source(name, ZsreMendOptions, options, data_dir=data_dir, where=where,
                       convert=convert_mend, official=MEND_OFFICIAL)


def load_ultraedit(name: str, options: dict, *, data_dir, where: str):
    return open_source(name, ZsreUltraEditOptions, options, data_dir=data_dir, where=where,
                       convert=convert_ultraedit, official=ULTRAEDIT_OFFICIAL)
