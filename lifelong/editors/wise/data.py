"""WISE training inputs: the 12 training rows of one edit, and where the side memory lives. Pure functions
of (model, tokenizer, hparams); no state of their own. (The context templates: common/templates.py.)"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ...core.errors import LifelongError
from ...models.modules import side_module
from ...models.tokenization import answer_ids, pad, pad_id


@dataclass
class TrainRows:
    input_ids: torch.Tensor       # [R, W]: R-1 template rows then the irrelevant row
    attention_mask: torch.Tensor
    rows: torch.Tensor            # positions whose logits predict target tokens (in-scope rows only)
    cols: torch.Tensor
    targets: torch.Tensor
    n_target: int


def build_rows(tokenizer, templates: Sequence[str], prompt: str, target: str, irrelevant: tuple[str, str],
               padding: str = "left") -> TrainRows:
    """template.format(prompt) + " " + target for each template, then "loc loc_answer"; padded."""
    answer = answer_ids(tokenizer, target)
    if not answer:
        raise LifelongError(f"target {target!r} (prompt {prompt!r}) tokenizes to nothing")
    seqs, spans = [], []
    for template in templates:
        p = tokenizer(template.format(prompt))["input_ids"]
        seqs.append(p + answer)
        spans.append(len(p))
    seqs.append(tokenizer(irrelevant[0])["input_ids"] + answer_ids(tokenizer, irrelevant[1]))
    ids, mask = pad(seqs, pad_id(tokenizer), side=padding)
    width = ids.shape[1]
    rows, cols, targets = [], [], []
    for r, seq in enumerate(seqs[:len(templates)]):
        off = width - len(seq) if padding == "left" else 0
        for k, tok in enumerate(answer):
            rows.append(r)
            cols.append(off + spans[r] - 1 + k)
            targets.append(tok)
    return TrainRows(ids, mask, torch.tensor(rows), torch.tensor(cols), torch.tensor(targets), len(answer))


def resolve_module(model, hp) -> tuple[int, str]:
    """(layer index, module path) of the side memory (`models.modules.side_module`)."""
    return side_module(model, layer=hp.layer, layer_fraction=hp.layer_fraction, module=hp.module, editor="WISE")
