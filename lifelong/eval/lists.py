"""Named lists of probes per edit: portability and harder locality (EasyEdit/KnowEdit; spec baselines.md §6).

A record's lists live in `extras["portability"]` and `extras["locality_lists"]` as `{name: [(prompt, answer)]}`
(data/named_lists.py). Each list gets its own per-edit column, `portability[one_hop]`; the headline column
(`portability`) is KnowEdit's aggregation: per record, the mean over its lists of each list's mean over
prompts, so lists A = [1, 0] and B = [1] give 0.75, not 2/3. A record without lists is NaN (left out).

* portability: teacher-forced token accuracy against the list's answer, and generation exact match
  (`portability_em`, generation.py), both on the prompt as asked.
* locality lists: agreement with the unedited model, the fraction of answer positions whose argmax is
  unchanged (EasyEdit's locality). The pre-edit argmax tokens of a record's lists are kept as one array per
  record (`ListPredictions`), in list order, prompt order.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from ..core.errors import LifelongError
from ..core.records import EditRecord
from ..data.named_lists import LOCALITY_LISTS, PORTABILITY
from . import generation
from .teacher_forced import score_pairs

Owner = tuple[int, str]   # (record index in the chunk, list name)


def flatten(records: Sequence[EditRecord], kind: str) -> tuple[list[tuple[str, str]], list[Owner]]:
    """Every (prompt, answer) of every record's `kind` lists, with the (record, list name) it belongs to."""
    pairs: list[tuple[str, str]] = []
    owners: list[Owner] = []
    for i, record in enumerate(records):
        for name, items in ((record.extras or {}).get(kind) or {}).items():
            for prompt, answer in items:
                pairs.append((prompt, answer))
                owners.append((i, name))
    return pairs, owners


def aggregate(column: str, values: np.ndarray, owners: list[Owner], n: int) -> dict[str, np.ndarray]:
    """Per-prompt values -> `column[name]` (per record, the list's mean; NaN where the record lacks the list)
    and `column` (per record, the mean over its lists)."""
    groups: dict[tuple[int, str], list[float]] = defaultdict(list)
    for value, owner in zip(values, owners):
        groups[owner].append(float(value))
    names = sorted({name for _, name in owners})
    out = {f"{column}[{name}]": np.full(n, np.nan) for name in names}
    per_record: dict[int, list[float]] = defaultdict(list)
    for (i, name), vals in groups.items():
        out[f"{column}[{name}]"][i] = np.mean(vals)
        per_record[i].append(float(np.mean(vals)))
    headline = np.full(n, np.nan)
    for i, means in per_record.items():
        headline[i] = np.mean(means)
    return {column: headline} | out


def portability(model, tokenizer, records: Sequence[EditRecord], *, max_length, batch_size, prompt_ends=None,
                chat_template: bool = False) -> dict[str, np.ndarray]:
    """`portability` (teacher-forced accuracy) and `portability_em` (generated exact match), per list too."""
    n = len(records)
    pairs, owners = flatten(records, PORTABILITY)
    if not pairs:
        return {"portability": np.full(n, np.nan), "portability_em": np.full(n, np.nan)}
    kw = dict(max_length=max_length, prompt_ends=prompt_ends)
    accuracy = score_pairs(model, tokenizer, pairs, batch_size=batch_size, **kw).accuracy
    em = generation.generation_exact_match(model, tokenizer, pairs, batch_size=min(batch_size, 64),
                                           chat_template=chat_template, **kw).exact_match
    return aggregate("portability", accuracy, owners, n) | aggregate("portability_em", em, owners, n)


def locality_lists(model, tokenizer, records: Sequence[EditRecord], *, reference: list[np.ndarray] | None,
                   max_length, batch_size, prompt_ends=None) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """(`locality_lists` agreement columns, per record the argmax tokens at every list answer position).

    Without `reference` (the pre-edit pass) the columns are all 1.0 where a record has lists: the unedited
    model agrees with itself."""
    n = len(records)
    pairs, owners = flatten(records, LOCALITY_LISTS)
    predictions: list[np.ndarray] = [np.zeros(0, dtype=np.int32) for _ in range(n)]
    if not pairs:
        return {"locality_lists": np.full(n, np.nan)}, predictions
    out = score_pairs(model, tokenizer, pairs, batch_size=batch_size, max_length=max_length,
                      prompt_ends=prompt_ends).predictions
    per_record: dict[int, list[np.ndarray]] = defaultdict(list)
    for j, (i, _) in enumerate(owners):
        per_record[i].append(out[j])
    agreement = np.ones(len(pairs))
    for i, preds in per_record.items():
        predictions[i] = np.concatenate(preds).astype(np.int32)
        if reference is None:
            continue
        ref = reference[i]
        if len(ref) != len(predictions[i]):
            raise LifelongError(f"locality lists of record {records[i].uid!r}: {len(predictions[i])} answer positions "
                                f"after the edit but {len(ref)} before; pre and post must score the same lists")
    if reference is not None:
        offsets: dict[int, int] = defaultdict(int)
        for j, (i, _) in enumerate(owners):
            start = offsets[i]
            ref = reference[i][start:start + len(out[j])]
            agreement[j] = float(np.mean(ref == out[j])) if len(ref) else 1.0
            offsets[i] = start + len(out[j])
    return aggregate("locality_lists", agreement, owners, n), predictions
