"""WISE hyperparameters (params.yaml `editors.wise`). Values and their sources: shared/specs/wise.md §2.

Defaults are the reference code's (EasyEdit hparams/WISE/llama-7b.yaml plus its hard-coded constants),
so a default run reproduces the paper's setup, including the code-only behaviours listed under
"code-only behaviours". `CLEAN_VARIANT` switches all of those off.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..base import EditorHparams
from ..common.merging import MERGE_ALGS


@dataclass
class WiseHparams(EditorHparams):
    # where the side memory lives
    layer: int | None = None          # layer index (negative: from the top); None: from layer_fraction
    layer_fraction: float = 0.85      # int(f·n_layers), at most n_layers-2: 7B (32) -> 27; GPT-J (0.75·28) -> 21
    module: str | None = None         # explicit module path; overrides layer (e.g. GPT-2-XL's mlp.c_fc)
    # optimisation (paper Table 10 and the yaml files)
    n_iter: int = 70
    edit_lr: float = 1.0
    mask_ratio: float = 0.2
    alpha: float = 5.0
    beta: float = 20.0
    gamma: float = 10.0
    act_ratio: float = 0.88
    weight_decay: float = 1e-5
    norm_constraint: float | None = 1.0   # elementwise clamp of W_cur to W0 ± c (B7 fixed: ints apply too)
    early_stop_delta: float = 1e-4
    early_stop_loss: float = 0.02
    # sharding and merging
    save_freq: int = 500
    merge_freq: int = 1000
    merge_alg: str = "ties"
    densities: float = 0.53
    merge_weights: float = 1.0
    retrieve: bool = True             # WISE-Retrieve (every yaml); false: WISE-Merge (the paper's default)
    remerge_weights: tuple[float, float] = (0.4, 0.6)   # Merge mode, later merges: new shards / old merged
    # augmentation and inputs
    template_seeds: tuple[str, ...] = ("I", "You", "Because", "Yes", "Q: ")
    template_lengths: tuple[int, ...] = (5, 10)   # max_new_tokens of each greedy generation round
    max_pool_len: int = 100           # inference: max-pool rows with more real tokens than this
    pool_policy: Literal["cycle", "strict"] = "cycle"   # locality_pool smaller than the stream: reuse / error
    mask_seed: int | None = None      # None: context.seed
    prefix_cache: bool = True         # inner loop runs only the layers above the side memory
    # code-only behaviours; the defaults are the reference code's, see CLEAN_VARIANT
    decay_masked_entries: bool = True  # B10: SGD weight decay also shrinks mask-0 entries
    ce_plus_one: bool = True           # B11: per-row CE divided by n_target + 1
    retrim_merged: bool = True         # Merge mode: the old merged memory is re-trimmed at each merge
    best_from_current: bool = True     # B9: Retrieve's running best starts at the current shard's score
    train_pool_pads: bool = True       # training Δ is pooled over pad positions too
    train_padding: Literal["left", "right"] = "left"
    margin_reduction: Literal["violating", "mean"] = "violating"
    side_bias: bool = True             # B3 fixed; false: a biased Linear's side path drops its bias

    def validate(self) -> None:
        super().validate()
        for name in ("n_iter", "save_freq", "merge_freq", "max_pool_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.merge_freq % self.save_freq:
            raise ValueError(f"merge_freq ({self.merge_freq}) must be a multiple of save_freq ({self.save_freq})")
        if not 0 < self.mask_ratio <= 1:
            raise ValueError(f"mask_ratio must be in (0, 1], got {self.mask_ratio}")
        if not 0 < self.densities <= 1:
            raise ValueError(f"densities must be in (0, 1], got {self.densities}")
        if self.merge_alg not in MERGE_ALGS:
            raise ValueError(f"merge_alg must be one of {list(MERGE_ALGS)}, got {self.merge_alg!r}")
        if self.edit_lr <= 0 or self.act_ratio <= 0:
            raise ValueError("edit_lr and act_ratio must be > 0")
        if len(self.remerge_weights) != 2:
            raise ValueError(f"remerge_weights must be [new, old], got {list(self.remerge_weights)}")
        if not self.template_seeds:
            raise ValueError("template_seeds must not be empty")


# The cleaned-up variant: every code-only behaviour switched off (build_hparams overrides).
CLEAN_VARIANT: dict[str, Any] = {"decay_masked_entries": False, "ce_plus_one": False, "retrim_merged": False,
                                 "best_from_current": False, "train_pool_pads": False, "train_padding": "right"}
