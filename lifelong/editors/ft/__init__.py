"""FT-M: fine-tune one MLP weight with cross-entropy on the target tokens only (prompt masked).

The standard baseline of both papers (EasyEdit's FT-M). Each turn trains the chosen projection on
the turn's (prompt, target) pairs for `n_iter` Adam steps; every other parameter stays frozen.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ...core.records import EditRecord
from ...models.modules import layer_path
from ...models.tokenization import encode_batch
from ..base import EditorHparams, WeightEditor


@dataclass
class FTHparams(EditorHparams):
    layer: int = -2                  # which layer's MLP down projection (negative: from the top)
    module: str | None = None        # explicit module path; overrides `layer`
    lr: float = 5e-4
    n_iter: int = 25                 # optimisation steps per turn
    weight_decay: float = 0.0
    norm_constraint: float | None = None  # elementwise clamp of W - W0, as in EasyEdit FT

    def validate(self) -> None:
        super().validate()
        if self.n_iter < 1:
            raise ValueError(f"n_iter must be >= 1, got {self.n_iter}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


class FTEditor(WeightEditor):
    name = "ft"
    hparams_class = FTHparams

    def __init__(self, model, tokenizer, hparams: FTHparams, context):
        super().__init__(model, tokenizer, hparams, context)
        self.path = hparams.module or layer_path(model, hparams.layer)
        self.module = self.track(self.path)

    def edit_turn(self, records: Sequence[EditRecord]) -> dict[str, float]:
        hp: FTHparams = self.hparams
        batch = encode_batch(self.tokenizer, [(r.prompt, r.target) for r in records]).to(self.context.device)
        weight = self.module.weight
        base = weight.detach().clone()
        weight.requires_grad_(True)
        opt = torch.optim.Adam([weight], lr=hp.lr, weight_decay=hp.weight_decay)
        try:
            for _ in range(hp.n_iter):
                logits = self.model(**batch.model_inputs()).logits
                # labels are pre-shifted (tokenization.py), so no shift here
                loss = F.cross_entropy(logits.flatten(0, 1).float(), batch.labels.flatten(), ignore_index=-100)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if hp.norm_constraint is not None:
                    with torch.no_grad():
                        weight.copy_(base + (weight - base).clamp(-hp.norm_constraint, hp.norm_constraint))
        finally:
            weight.requires_grad_(False)
            weight.grad = None
        self.edits_done += len(records)
        return {"loss": float(loss.detach())}
