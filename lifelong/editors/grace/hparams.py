"""GRACE hyperparameters (params.yaml `editors.grace`) and where the codebook lives.

Defaults are EasyEdit's LLaMA-2-7B row (shared/specs/baselines.md §2): lr 1.0, 50 iterations, ε0 = 1.0,
`replace_last`, cold values, `coverage` expansion, Euclidean distance. ε0 is an absolute distance in the
wrapped module's input space, so a model of another scale needs its own (params.yaml records the tiny
models' calibration).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...models.modules import side_module
from ..base import EditorHparams

REPLACEMENTS = ("replace_last", "replace_all", "replace_prompt")


@dataclass
class GraceHparams(EditorHparams):
    # where the codebook lives (the module it wraps)
    layer: int | None = None          # layer index (negative: from the top); None: from layer_fraction
    layer_fraction: float = 0.85      # int(f·n_layers), at most n_layers-2: LLaMA-2-7B (32 layers) -> 27
    module: str | None = None         # explicit MLP projection path; overrides layer (GPT-2 XL: h.35.mlp.c_fc)
    # value training
    edit_lr: float = 1.0              # Adam, rebuilt for every edit, over the current entry's value only
    n_iter: int = 50
    val_init: Literal["cold", "warm"] = "cold"   # cold: U[0,1) (seeded); warm: the module's output at the key
    value_seed: int | None = None     # seed of the cold-value generator; None: the run's seed
    # the codebook
    eps: float = 1.0                  # ε0, the radius of a new entry
    eps_expand: Literal["coverage", "moving_average"] = "coverage"
    dist_fn: Literal["euc"] = "euc"
    replacement: Literal["replace_last", "replace_all", "replace_prompt"] = "replace_last"
    # how two edit labels "match" (a near query with a matching label expands, otherwise splits):
    #   mean   (reference code): the means of their label rows ([-100] * prompt tokens + target ids) are equal
    #   target: their target token ids are equal
    label_match: Literal["mean", "target"] = "mean"
    # G3 (reproduced by default): a split sets ε_i* = d/2 − 1e-5 and ε_new = d/2 even when that grows a radius;
    # false: a split never grows one (ε_i* = min(ε_i*, d/2 − 1e-5), ε_new = min(ε0, d/2))
    faithful_split: bool = True

    def validate(self) -> None:
        super().validate()
        if self.n_iter < 1:
            raise ValueError(f"n_iter must be >= 1, got {self.n_iter}")
        if not self.edit_lr > 0:
            raise ValueError(f"edit_lr must be > 0, got {self.edit_lr}")
        if not self.eps >= 0 or self.eps == float("inf"):
            raise ValueError(f"eps (the initial radius ε0) must be a finite number >= 0, got {self.eps}")
        if not 0 < self.layer_fraction <= 1:
            raise ValueError(f"layer_fraction must be in (0, 1], got {self.layer_fraction}")
        choices = {"replacement": REPLACEMENTS, "val_init": ("cold", "warm"),
                   "eps_expand": ("coverage", "moving_average"), "dist_fn": ("euc",),
                   "label_match": ("mean", "target")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")


def resolve_module(model, hp: GraceHparams) -> tuple[int | None, str]:
    """(layer index, module path) of the wrapped projection (`models.modules.side_module`)."""
    return side_module(model, layer=hp.layer, layer_fraction=hp.layer_fraction, module=hp.module, editor="GRACE")
