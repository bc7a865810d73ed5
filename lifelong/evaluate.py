"""Streaming evaluation of edit records: reliability, generalization, locality (gold and agreement).

Beyond teacher forcing, a dataset entry may ask for more per-edit metrics (`metrics:` in params.yaml,
see EXTRA_METRICS): generation exact match of the edit and its rephrase, the target's perplexity
(WISE Hallucination) and the temporal OOD indicator (WISE Eq. 10). They live in `Scores.extra`.

Records are scored in chunks, so evaluating a million edits never holds more than one chunk of
tokenized text. Pre-edit locality predictions, which locality-as-agreement compares against, are
kept compactly (one flat int32 array plus offsets) so that they stay small at 1M edits.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from .errors import ConfigError
from .metrics import score_pairs
from .records import EditRecord

# name in params.yaml -> the per-edit columns it adds
EXTRA_METRICS: dict[str, tuple[str, ...]] = {
    "exact_match": ("reliability_em", "generalization_em"),
    "perplexity": ("target_ppl",),
    "temporal_ood": ("ood_success", "ood_loss"),
}


def check_extra_metrics(names, where: str) -> tuple[str, ...]:
    names = tuple(names or ())
    unknown = [n for n in names if n not in EXTRA_METRICS]
    if unknown:
        raise ConfigError(f"{where}: unknown metric(s) {unknown}; known: {', '.join(EXTRA_METRICS)}")
    return names


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
        return [self.flat[self.offsets[i] : self.offsets[i + 1]] for i in range(start, stop)]


@dataclass
class Scores:
    """Per-edit scores of one evaluation, aligned with the records evaluated (NaN where absent)."""

    reliability: np.ndarray
    generalization: np.ndarray
    locality: np.ndarray
    locality_agreement: np.ndarray
    locality_predictions: Predictions
    extra: dict[str, np.ndarray] = field(default_factory=dict)   # EXTRA_METRICS columns

    def means(self) -> dict[str, float]:
        keys = ("reliability", "generalization", "locality", "locality_agreement")
        return {k: _nanmean(getattr(self, k)) for k in keys} | {k: _nanmean(v) for k, v in self.extra.items()}

    @classmethod
    def concat(cls, parts: list["Scores"]) -> "Scores":
        preds = Predictions()
        for p in parts:
            preds.extend(p.locality_predictions)
        cat = lambda k: np.concatenate([getattr(p, k) for p in parts]) if parts else np.zeros(0)
        extra = {k: np.concatenate([p.extra[k] for p in parts]) for k in (parts[0].extra if parts else {})}
        return cls(cat("reliability"), cat("generalization"), cat("locality"), cat("locality_agreement"), preds,
                   extra)


def score_records(model, tokenizer, records: list[EditRecord], *, batch_size: int = 256,
                  reference: list[np.ndarray] | None = None, extras: tuple[str, ...] = (),
                  max_length: int | None = None) -> Scores:
    """Score one chunk of records. `reference`: pre-edit locality predictions for agreement;
    `extras`: names from EXTRA_METRICS; `max_length`: the model's context (longer inputs are cut
    from the left, so the answer is kept)."""
    n = len(records)
    rel = score_pairs(model, tokenizer, [(r.prompt, r.target) for r in records], batch_size=batch_size,
                      max_length=max_length).accuracy

    gen = np.full(n, np.nan)
    has_reph = [i for i, r in enumerate(records) if r.rephrase]
    if has_reph:
        gen[has_reph] = score_pairs(model, tokenizer, [(records[i].rephrase, records[i].target) for i in has_reph],
                                    batch_size=batch_size, max_length=max_length).accuracy

    loc = np.full(n, np.nan)
    agree = np.full(n, np.nan)
    preds: list[np.ndarray] = [np.zeros(0, dtype=np.int32)] * n
    has_loc = [i for i, r in enumerate(records) if r.locality_prompt]
    if has_loc:
        out = score_pairs(model, tokenizer, [(records[i].locality_prompt, records[i].locality_answer) for i in has_loc],
                          batch_size=batch_size, max_length=max_length)
        loc[has_loc] = out.accuracy
        for j, i in enumerate(has_loc):
            preds[i] = out.predictions[j]
            if reference is not None:
                ref = reference[i]
                agree[i] = float(np.mean(ref == out.predictions[j])) if len(ref) else 1.0
    extra = _extra_scores(model, tokenizer, records, extras, has_reph, max_length, batch_size) if extras else {}
    return Scores(rel, gen, loc, agree, Predictions.from_list(preds), extra)


def _extra_scores(model, tokenizer, records: list[EditRecord], extras: tuple[str, ...], has_reph: list[int],
                  max_length: int | None, batch_size: int) -> dict[str, np.ndarray]:
    from . import scoring

    n, out = len(records), {}
    if "exact_match" in extras:
        out["reliability_em"] = scoring.generation_exact_match(
            model, tokenizer, [(r.prompt, r.target) for r in records], max_length=max_length,
            batch_size=batch_size).exact_match
        out["generalization_em"] = np.full(n, np.nan)
        if has_reph:
            out["generalization_em"][has_reph] = scoring.generation_exact_match(
                model, tokenizer, [(records[i].rephrase, records[i].target) for i in has_reph],
                max_length=max_length, batch_size=batch_size).exact_match
    if "perplexity" in extras:
        out["target_ppl"] = scoring.target_perplexity(model, tokenizer, [(r.prompt, r.target) for r in records],
                                                      max_length=max_length).ppl
    if "temporal_ood" in extras:
        out["ood_success"], out["ood_loss"] = np.full(n, np.nan), np.full(n, np.nan)
        has_ood = [i for i, r in enumerate(records) if (r.extras or {}).get("ood_rephrase")]
        if has_ood:
            ood = scoring.temporal_ood(model, tokenizer, scoring.temporal_ood_pairs([records[i] for i in has_ood]),
                                       max_length=max_length)
            out["ood_success"][has_ood], out["ood_loss"][has_ood] = ood.success, ood.loss
    return out


def score_stream(model, tokenizer, records: Iterable[EditRecord], *, chunk: int = 4096, batch_size: int = 256,
                 reference: Predictions | None = None, extras: tuple[str, ...] = (),
                 max_length: int | None = None) -> Scores:
    """Score any number of records, `chunk` at a time."""
    parts, offset = [], 0
    for block in chunked(records, chunk):
        ref = reference.slice(offset, offset + len(block)) if reference is not None else None
        parts.append(score_records(model, tokenizer, block, batch_size=batch_size, reference=ref, extras=extras,
                                   max_length=max_length))
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
