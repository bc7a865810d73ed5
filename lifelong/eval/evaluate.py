"""Streaming evaluation of edit records: reliability, generalization, locality (gold and agreement).

Beyond teacher forcing, a dataset entry may ask for more per-edit metrics (`metrics:` in params.yaml,
see `registry.OPTIONS`): generation exact match of the edit and its rephrase, the target's perplexity
(WISE Hallucination), the temporal OOD indicator (WISE Eq. 10), portability, extra locality lists and
fluency. They live in `Scores.extra`; a per-list column (`portability[one_hop]`) exists only where some
record has that list, so chunks are joined with NaN where one lacks a column.

Records are scored in chunks, so evaluating a million edits never holds more than one chunk of
tokenized text. Pre-edit locality predictions, which locality-as-agreement compares against, are
kept compactly (one flat int32 array plus offsets) so that they stay small at 1M edits.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from ..core.records import EditRecord
from . import lists, registry
from .teacher_forced import PromptEnds, score_pairs


@dataclass
class Predictions:
    """Argmax tokens at the answer positions of many pairs, stored flat."""

    flat: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    offsets: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))

    @classmethod
    def from_list(cls, preds: list[np.ndarray]) -> "Predictions":
        lengths = np.array([len(p) for p in preds], dtype=np.int64)
        flat = np.concatenate(preds).astype(np.int32) if preds else np.zeros(0, dtype=np.int32)
        return cls(flat, np.concatenate([[0], np.cumsum(lengths)]))

    def extend(self, other: "Predictions") -> None:
        self.offsets = np.concatenate([self.offsets, other.offsets[1:] + self.offsets[-1]])
        self.flat = np.concatenate([self.flat, other.flat])

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def slice(self, start: int, stop: int) -> list[np.ndarray]:
        return self.take(range(start, stop))

    def take(self, index: Iterable[int]) -> list[np.ndarray]:
        """The predictions of the pairs at `index`, in that order."""
        return [self.flat[self.offsets[i] : self.offsets[i + 1]] for i in index]


@dataclass
class Scores:
    """Per-edit scores of one evaluation, aligned with the records evaluated (NaN where absent)."""

    reliability: np.ndarray
    generalization: np.ndarray
    locality: np.ndarray
    locality_agreement: np.ndarray
    locality_predictions: Predictions
    extra: dict[str, np.ndarray] = field(default_factory=dict)   # optional metric columns (registry.OPTIONS)
    lists_predictions: Predictions = field(default_factory=Predictions)   # per edit, argmax over its locality lists

    def means(self) -> dict[str, float]:
        return {k: _nanmean(v) for k, v in self.columns().items()}

    def take(self, index: np.ndarray) -> "Scores":
        """The scores of the edits at `index` (positions in this evaluation), in that order."""
        return Scores(self.reliability[index], self.generalization[index], self.locality[index],
                      self.locality_agreement[index], Predictions.from_list(self.locality_predictions.take(index)),
                      {k: v[index] for k, v in self.extra.items()},
                      Predictions.from_list(self.lists_predictions.take(index)))

    def columns(self) -> dict[str, np.ndarray]:
        """Every per-edit metric column, core first (names from the metric registry)."""
        return {k: getattr(self, k) for k in registry.CORE} | self.extra

    @classmethod
    def concat(cls, parts: list["Scores"]) -> "Scores":
        preds, lists = Predictions(), Predictions()
        for p in parts:
            preds.extend(p.locality_predictions)
            lists.extend(p.lists_predictions)
        cat = lambda k: np.concatenate([getattr(p, k) for p in parts]) if parts else np.zeros(0)
        keys = dict.fromkeys(k for p in parts for k in p.extra)
        extra = {k: np.concatenate([p.extra.get(k, np.full(len(p.reliability), np.nan)) for p in parts]) for k in keys}
        return cls(cat("reliability"), cat("generalization"), cat("locality"), cat("locality_agreement"), preds,
                   extra, lists)


def score_records(model, tokenizer, records: list[EditRecord], *, batch_size: int = 256,
                  reference: list[np.ndarray] | None = None, extras: tuple[str, ...] = (),
                  max_length: int | None = None, prompt_ends: PromptEnds = None, chat_template: bool = False,
                  lists_reference: list[np.ndarray] | None = None) -> Scores:
    """Score one chunk of records. `reference`: pre-edit locality predictions for agreement (`lists_reference`:
    the same for the locality lists);
    `extras`: option names from the metric registry; `max_length`: the model's context (longer inputs are cut
    from the left, so the answer is kept); `prompt_ends`: told each batch's last prompt tokens before its
    forward (an editor's `set_prompt_ends`; see `teacher_forced.score_pairs`); `chat_template`: generation metrics
    prompt through the tokenizer's chat template (generation.py)."""
    n = len(records)
    kw = dict(batch_size=batch_size, max_length=max_length, prompt_ends=prompt_ends)
    rel = score_pairs(model, tokenizer, [(r.prompt, r.target) for r in records], **kw).accuracy

    gen = np.full(n, np.nan)
    has_reph = [i for i, r in enumerate(records) if r.rephrase]
    if has_reph:
        gen[has_reph] = score_pairs(model, tokenizer, [(records[i].rephrase, records[i].target) for i in has_reph],
                                    **kw).accuracy

    loc = np.full(n, np.nan)
    agree = np.full(n, np.nan)
    preds: list[np.ndarray] = [np.zeros(0, dtype=np.int32)] * n
    has_loc = [i for i, r in enumerate(records) if r.locality_prompt]
    if has_loc:
        out = score_pairs(model, tokenizer, [(records[i].locality_prompt, records[i].locality_answer) for i in has_loc],
                          **kw)
        loc[has_loc] = out.accuracy
        for j, i in enumerate(has_loc):
            preds[i] = out.predictions[j]
            if reference is not None:
                ref = reference[i]
                agree[i] = float(np.mean(ref == out.predictions[j])) if len(ref) else 1.0
    extra: dict[str, np.ndarray] = {}
    list_preds: list[np.ndarray] = [np.zeros(0, dtype=np.int32)] * n
    for option in extras:
        if option == "locality_lists":
            columns, list_preds = lists.locality_lists(model, tokenizer, records, reference=lists_reference, **kw)
            extra |= columns
        else:
            extra |= registry.OPTIONS[option](model, tokenizer, records, **kw, chat_template=chat_template)
    return Scores(rel, gen, loc, agree, Predictions.from_list(preds), extra, Predictions.from_list(list_preds))


def score_stream(model, tokenizer, records: Iterable[EditRecord], *, chunk: int = 4096, batch_size: int = 256,
                 reference: Predictions | None = None, extras: tuple[str, ...] = (),
                 max_length: int | None = None, prompt_ends: PromptEnds = None, chat_template: bool = False,
                 lists_reference: Predictions | None = None) -> Scores:
    """Score any number of records, `chunk` at a time."""
    parts, offset = [], 0
    for block in chunked(records, chunk):
        ref = reference.slice(offset, offset + len(block)) if reference is not None else None
        lists_ref = lists_reference.slice(offset, offset + len(block)) if lists_reference is not None else None
        parts.append(score_records(model, tokenizer, block, batch_size=batch_size, reference=ref, extras=extras,
                                   max_length=max_length, prompt_ends=prompt_ends, chat_template=chat_template,
                                   lists_reference=lists_ref))
        offset += len(block)
    return Scores.concat(parts)


def chunked(items: Iterable[EditRecord], size: int) -> Iterator[list[EditRecord]]:
    block: list[EditRecord] = []
    for item in items:
        block.append(item)
        if len(block) == size:
            yield block
            block = []
    if block:
        yield block


def _nanmean(a: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    return float(np.nanmean(a)) if a.size and not np.all(np.isnan(a)) else float("nan")
