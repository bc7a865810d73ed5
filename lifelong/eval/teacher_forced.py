"""Metrics, exactly as the papers compute them.

`token_accuracy` is the authors' `succ_ratios` (UltraEdit) and EasyEdit's teacher-forced accuracy:
per sample, the fraction of answer tokens whose argmax (given the gold prefix) is right; the score
of a set is the unweighted mean over samples, never over tokens.

`score_pairs` runs it over any number of (prompt, answer) pairs in large, length-sorted batches,
and also returns the argmax tokens at the answer positions, which locality-as-agreement
(EasyEdit/WISE: post-edit argmax == pre-edit argmax) needs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from ..core.errors import LifelongError
from ..models.modules import logits_at
from ..models.tokenization import IGNORE, Batch, collate, encode_pair, pad_id

# Padded tokens per evaluation batch. Activations grow with tokens, not rows, so this bounds memory where a row
# count cannot (256 rows of a 300-token hallucination prompt are 77K tokens); batch_size still caps the rows.
MAX_BATCH_TOKENS = 16384

# Told, before each model forward, the index of each input row's last prompt token (None: unknown); an
# editor's `set_prompt_ends` (GRACE reads its query there). None, the default, tells nobody anything.
PromptEnds = Optional[Callable[[Optional[torch.Tensor]], None]]


def token_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample teacher-forced accuracy. labels are pre-shifted; -100 positions never count."""
    valid = labels != IGNORE
    hits = (logits.argmax(-1) == labels) & valid
    return hits.sum(-1).float() / valid.sum(-1).clamp(min=1).float()


@dataclass
class PairScores:
    accuracy: np.ndarray            # [n] per-pair token accuracy
    predictions: list[np.ndarray]   # per pair, argmax tokens at the answer positions

    def agreement(self, reference: "PairScores") -> np.ndarray:
        """Per-pair fraction of answer positions where predictions equal `reference`'s."""
        return np.array([float(np.mean(a == b)) if len(a) else 1.0
                         for a, b in zip(self.predictions, reference.predictions)])


def label_prompt_ends(labels: torch.Tensor) -> torch.Tensor:
    """The last prompt token of each row of pre-shifted labels: the first column whose label is not -100."""
    return (labels != IGNORE).int().argmax(-1)


def teacher_forced_batches(model, tokenizer, pairs: Sequence[tuple[str, str]], *, batch_size: int,
                           max_length: int | None = None, device: torch.device | str | None = None,
                           prompt_ends: PromptEnds = None, drop_lone_space: bool = False,
                           max_tokens: int = MAX_BATCH_TOKENS) -> Iterator[tuple[list[int], Batch]]:
    """The (prompt, answer) pairs as right-padded batches on the model's device, shortest first (length-sorted
    batches waste little on padding), with the model in eval mode; a batch holds at most `batch_size` rows and
    `max_tokens` padded tokens (but always one row). Yields (indices into `pairs`, batch);
    `prompt_ends`, if given, is told each batch's last-prompt-token positions before the caller's forward, and
    None at the end. The model's training flag is restored afterwards."""
    device = device or next(model.parameters()).device
    encoded = [encode_pair(tokenizer, p, a, drop_lone_space=drop_lone_space) for p, a in pairs]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    pid = pad_id(tokenizer)
    was_training = model.training
    model.eval()
    lengths = [min(len(encoded[i].input_ids), max_length or 1 << 30) for i in order]
    try:
        for idx in _budgeted(order, lengths, batch_size, max_tokens):
            batch = collate([encoded[i] for i in idx], pad_id=pid, max_length=max_length).to(device)
            if prompt_ends is not None:
                prompt_ends(label_prompt_ends(batch.labels))
            yield idx, batch
    finally:
        if prompt_ends is not None:
            prompt_ends(None)
        model.train(was_training)


def _budgeted(order: list[int], lengths: list[int], rows: int, tokens: int) -> Iterator[list[int]]:
    """Split length-sorted `order` into runs of at most `rows` items whose padded size (rows x longest) fits
    `tokens`; a single item longer than the budget goes alone."""
    start = 0
    while start < len(order):
        stop = start + 1
        while stop < len(order) and stop - start < rows and (stop - start + 1) * lengths[stop] <= tokens:
            stop += 1
        yield order[start:stop]
        start = stop


@torch.no_grad()
def score_pairs(model, tokenizer, pairs: Sequence[tuple[str, str]], *, batch_size: int = 256,
                device: torch.device | str | None = None, max_length: int | None = None,
                prompt_ends: PromptEnds = None) -> PairScores:
    """Teacher-forced accuracy of each (prompt, answer) pair under `model`, in input order. `prompt_ends`, if
    given, is called with each batch's last-prompt-token positions before its forward, and with None at the end."""
    accuracy = np.zeros(len(pairs), dtype=np.float64)
    predictions: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(pairs)
    for idx, batch in teacher_forced_batches(model, tokenizer, pairs, batch_size=batch_size, max_length=max_length,
                                             device=device, prompt_ends=prompt_ends):
        # the LM head only at answer positions: at a 49K vocabulary, full logits are most of the memory and time
        answer = batch.labels != IGNORE
        argmax = logits_at(model, batch.model_inputs(), answer).argmax(-1)
        hits = (argmax == batch.labels[answer]).float()
        rows = answer.nonzero()[:, 0]
        acc = torch.zeros(len(idx), device=hits.device).index_add_(0, rows, hits) / answer.sum(-1).clamp(min=1)
        acc, argmax, counts = acc.cpu().numpy(), argmax.cpu().numpy(), answer.sum(-1).cpu().numpy()
        offsets = np.concatenate([[0], np.cumsum(counts)])
        for row, i in enumerate(idx):
            accuracy[i] = acc[row]
            predictions[i] = argmax[offsets[row]:offsets[row + 1]]
    return PairScores(accuracy, predictions)


def reliability_pairs(records) -> list[tuple[str, str]]:
    return [(r.prompt, r.target) for r in records]


def generalization_pairs(records) -> list[tuple[str, str]]:
    return [(r.rephrase, r.target) for r in records if r.rephrase]


def locality_pairs(records) -> list[tuple[str, str]]:
    return [(r.locality_prompt, r.locality_answer) for r in records if r.locality_prompt]


def locality_agreement(post: PairScores, pre: PairScores) -> np.ndarray:
    """Per locality pair: fraction of answer positions where the edited model's argmax equals the
    unedited model's (`pre`, computed on the same pairs before any edit). 1.0 = unchanged."""
    if len(post.predictions) != len(pre.predictions):
        raise LifelongError(f"locality_agreement: {len(post.predictions)} post-edit pairs but "
                            f"{len(pre.predictions)} pre-edit pairs; score the same pairs before and after")
    for i, (a, b) in enumerate(zip(post.predictions, pre.predictions)):
        if len(a) != len(b):
            raise LifelongError(f"locality_agreement: pair {i} has {len(a)} answer positions after the edit and "
                                f"{len(b)} before; pre and post must use the same pairs and tokenizer")
    return post.agreement(pre)
