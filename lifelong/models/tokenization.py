"""The (prompt, answer) -> input_ids / labels convention shared by every editor and metric.

From the UltraEdit reference (spec ultraedit.md §3.6):
    A = tok(" " + answer, add_special_tokens=False)   # a space is always prefixed
    P = tok(prompt)                                    # BOS if the tokenizer adds one
    input_ids = P + A[:-1]
    labels    = [-100] * (len(P) - 1) + A              # already shifted: labels[j] is predicted at j

So the positions with labels != -100 run from the last prompt token to the second-to-last answer
token: exactly the positions whose output predicts an answer token. Nothing downstream shifts again.

SentencePiece tokenizers can turn " X" into a lone "▁" piece followed by "X" (spec §1.10 k). By default
we keep the reference behaviour (the lone piece is an answer token); `drop_lone_space=True` drops it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

import torch

from ..core.errors import LifelongError

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]


def answer_ids(tokenizer, answer: str, *, drop_lone_space: bool = False) -> list[int]:
    ids = tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
    if drop_lone_space and len(ids) > 1 and tokenizer.convert_ids_to_tokens(ids[0]) in ("▁", "Ġ"):
        ids = ids[1:]
    return ids


def encode_pair(tokenizer, prompt: str, answer: str, *, drop_lone_space: bool = False) -> Encoded:
    if not answer.strip():
        raise LifelongError(f"empty answer for prompt {prompt!r}")
    prompt_ids = tokenizer(prompt)["input_ids"]
    target_ids = answer_ids(tokenizer, answer, drop_lone_space=drop_lone_space)
    if not target_ids:
        raise LifelongError(f"answer {answer!r} (prompt {prompt!r}) tokenizes to nothing")
    if not prompt_ids:
        raise LifelongError(f"prompt {prompt!r} tokenizes to nothing (and the tokenizer adds no BOS)")
    input_ids = prompt_ids + target_ids[:-1]
    labels = [IGNORE] * (len(prompt_ids) - 1) + target_ids
    return Encoded(input_ids, labels)


@dataclass
class Batch:
    """Right-padded tensors. Right padding keeps position ids correct for every causal LM."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device))

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}


def pad(sequences: Sequence[Sequence[int]], value: int, *, side: Literal["right", "left"] = "right",
        width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The one padding helper: a [n, width] long tensor of `sequences` filled with `value`, and the mask
    of real tokens (1) vs padding (0). Right padding keeps position ids correct for every causal LM;
    left padding is what batched generation needs."""
    width = max((len(s) for s in sequences), default=0) if width is None else width
    out = torch.full((len(sequences), width), value, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if not len(seq):
            continue
        cols = slice(0, len(seq)) if side == "right" else slice(width - len(seq), width)
        out[row, cols] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, cols] = 1
    return out, mask


def collate(encoded: Sequence[Encoded], pad_id: int = 0, max_length: int | None = None) -> Batch:
    """Pad a list of encoded pairs. With max_length, sequences are cut from the left (the answer stays)."""
    seqs = [(e.input_ids, e.labels) for e in encoded]
    if max_length is not None:
        seqs = [(i[-max_length:], l[-max_length:]) for i, l in seqs]
    input_ids, mask = pad([i for i, _ in seqs], pad_id)
    labels, _ = pad([l for _, l in seqs], IGNORE)
    return Batch(input_ids, mask, labels)


def encode_batch(tokenizer, pairs: Iterable[tuple[str, str]], *, drop_lone_space: bool = False,
                 max_length: int | None = None) -> Batch:
    encoded = [encode_pair(tokenizer, p, a, drop_lone_space=drop_lone_space) for p, a in pairs]
    return collate(encoded, pad_id=pad_id(tokenizer), max_length=max_length)


def pad_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0
