"""Prefix cache for WISE's inner loop: run only what lies above the side memory.

During one edit the 12 training rows never change and nothing below the edited module depends on
the side weight, so the inputs to the edited module are the same at every optimisation step. One
no-grad pass per edit records them; every step then runs only

  * module level (the edited module is a layer's FFN value/down projection whose output is added to
    the residual stream, true of GPT-2, GPT-J, LLaMA, Mistral, Qwen2): side = x·W_cur (+b),
    h = residual + side, the layers above, the final norm, and the lm_head *at the positions the loss
    reads* (the reference computes logits at every position of every row);
  * layer level (any other projection, e.g. GPT-2-XL's `c_fc`): the whole decoder layer holding the
    module, re-run on its recorded inputs, then as above.

Every decoder layer above is called with exactly the positional and keyword arguments the model
passed it in the recorded pass (attention mask, rotary embeddings, position ids, ...), so per-layer
masks (sliding windows) are honoured. `tests/test_wise.py` compares loss trajectories with the full
forward. The recorded pass stops at the final norm, so it never pays for the lm_head.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...models.families import Family
from ...models.modules import get_module, num_layers
from ..common.hooks import stop_before


@dataclass
class PrefixCache:
    level: str                               # "module" or "layer"
    layer_index: int
    x: torch.Tensor | None = None            # module input (module level)
    main: torch.Tensor | None = None         # main-memory output of the module (module level)
    main_act: torch.Tensor | None = None     # σ(main), reused by every step's Δ
    residual: torch.Tensor | None = None     # what the module output is added to (module level)
    layer_input: tuple = ()                  # (hidden, *other positional args) of the edited layer (layer level)
    calls: dict[int, tuple[tuple, dict]] = field(default_factory=dict)   # layer -> (args[1:], kwargs)


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


class UpperStack:
    """Knows where the edited module sits in the model and how to run what lies above it."""

    def __init__(self, model: nn.Module, family: Family, layer_index: int, module_path: str, adapter: nn.Module):
        self.model, self.family, self.adapter = model, family, adapter
        self.layer_index = layer_index
        self.layers = get_module(model, family.layers)
        self.n_layers = num_layers(model)
        self.final_norm = get_module(model, family.final_norm)
        self.lm_head = get_module(model, family.lm_head)
        prefix = f"{family.layers}.{layer_index}."
        relative = module_path[len(prefix):] if module_path.startswith(prefix) else None
        self.level = "module" if relative == family.mlp_out else "layer"
        self.residual_module = None
        if self.level == "module" and family.residual_input is not None:
            self.residual_module = get_module(self.layers[layer_index], family.residual_input)

    @torch.no_grad()
    def record(self, inputs: dict[str, torch.Tensor]) -> PrefixCache:
        """One pass of the model (adapter in its current mode), recording what the upper stack needs."""
        cache = PrefixCache(self.level, self.layer_index)
        L = self.layer_index
        handles = []
        seen: dict[str, torch.Tensor] = {}

        def layer_hook(i):
            def hook(module, args, kwargs):
                cache.calls[i] = (tuple(args[1:]), dict(kwargs))
                if i == L:
                    cache.layer_input = tuple(args)
            return hook

        for i in range(L, self.n_layers):
            handles.append(self.layers[i].register_forward_pre_hook(layer_hook(i), with_kwargs=True))
        if self.level == "module":
            def module_hook(module, args, output):
                seen["x"], seen["out"] = args[0], output
            handles.append(self.adapter.register_forward_hook(module_hook))
            if self.residual_module is not None:
                handles.append(self.residual_module.register_forward_pre_hook(
                    lambda m, args: seen.__setitem__("residual", args[0])))
            else:  # e.g. GPT-J's parallel block: layer output = residual + module output
                handles.append(self.layers[L].register_forward_hook(
                    lambda m, args, out: seen.__setitem__("layer_out", _first(out))))

        try:
            with stop_before(self.final_norm):
                self.model(**inputs, use_cache=False)
        finally:
            for h in handles:
                h.remove()
        if self.level == "module":
            cache.x = seen["x"]
            cache.main = self.adapter.main(cache.x)
            cache.main_act = self.adapter.act(cache.main)
            cache.residual = seen["residual"] if "residual" in seen else seen["layer_out"] - seen["out"]
        return cache

    def run(self, cache: PrefixCache, w_cur: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
            keep_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits at (rows, cols) and the per-row training Δ, with side weight `w_cur` (grad flows).
        Above the side memory only the first `keep_rows` rows are carried (the loss reads no logits of
        the irrelevant last row: it enters through Δ, which is computed at the side memory)."""
        L = self.layer_index
        if cache.level == "module":
            side = self.adapter.project(cache.x, w_cur)
            scores = self.adapter.scores(side, cache.main, training=True, main_act=cache.main_act)
            h = cache.residual + side
        else:
            args, kwargs = cache.calls[L]
            h = _first(self.layers[L](cache.layer_input[0], *args, **kwargs))
            scores = self.adapter.train_scores
        batch = h.shape[0]
        keep = batch if keep_rows is None else keep_rows
        h = h[:keep]
        for i in range(L + 1, self.n_layers):
            args, kwargs = cache.calls[i]
            if keep != batch:
                args, kwargs = _rows(args, batch, keep), _rows(kwargs, batch, keep)
            h = _first(self.layers[i](h, *args, **kwargs))
        h = self.final_norm(h)
        return self.lm_head(h[rows, cols]), scores


def _rows(obj: Any, batch: int, keep: int) -> Any:
    """The first `keep` rows of every batch-major tensor (≥ 2 dims, leading dim == batch) inside obj."""
    if isinstance(obj, torch.Tensor):
        return obj[:keep] if obj.dim() >= 2 and obj.shape[0] == batch else obj
    if isinstance(obj, tuple):
        return tuple(_rows(o, batch, keep) for o in obj)
    if isinstance(obj, list):
        return [_rows(o, batch, keep) for o in obj]
    if isinstance(obj, dict):
        return {k: _rows(v, batch, keep) for k, v in obj.items()}
    return obj
