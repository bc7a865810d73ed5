"""AlphaEdit (Fang et al., ICLR 2025): MEMIT's turn with a null-space-projected, cumulative solve (spec §4).

The turn (templates, z, keys, the bottom-up layer loop, rollback) is `editors/common/mass_edit.py`; this
package holds what differs from MEMIT:

* before any edit, per layer: (U, S) = SVD(C) of the stats folder's E[k kᵀ], P = Û Ûᵀ over the singular
  vectors with S < `nullspace_threshold` (absolute, as the reference: A2). dim null(P) is logged per layer,
  with the relative criterion S/S_max < threshold alongside (0: only α acts; d_in: no protection);
* cache_c = K_p K_pᵀ of past edits, d_in × d_in per layer, zero at the start and sized from the weight (A1);
* per layer, in float32 (spec §10): X = solve(P(K Kᵀ + cache_c) + α·I, P K Rᵀ), α = `L2`; W += Xᵀ
  (in place, cumulatively: no λC term, no restore). Since P K0 ≈ 0, Xᵀ K0 ≈ 0 for any α;
* after the turn, K is recomputed with the edited model and K Kᵀ is added to cache_c (A3: post-edit keys,
  never projected). `extra_state` carries cache_c; `reset()` zeroes it and keeps P.

Reduction to MEMIT (tested): with P = I and cache_c = 0, Xᵀ = R Kᵀ (K Kᵀ + α I)⁻¹, which is MEMIT's Eq. 14
`memit_delta(K, R, C=I, λ=α)`: MEMIT with an identity covariance and mom2_update_weight α. With P = I and a
cache, it is MEMIT with λC = α I + K_p K_pᵀ.

Deviation (A4): P is built once per editor in memory from the stats folder (not written to a file in the
working directory as the reference does, nor cached on disk).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...core.errors import LifelongError
from ...models.modules import shape_in_out
from ..common.mass_edit import MassEditHparams, MassEditor
from ..common.mass_vectors import KeyRows, read_keys


@dataclass
class AlphaEditHparams(MassEditHparams):
    nullspace_threshold: float = 2e-2       # singular values of C below it span the protected null space
    L2: float = 10.0                        # α

    def validate(self) -> None:
        super().validate()
        if not self.nullspace_threshold >= 0 or not self.L2 >= 0:
            raise ValueError(f"nullspace_threshold and L2 must be >= 0, got {self.nullspace_threshold}, {self.L2}")


def null_space_projector(cov: torch.Tensor, threshold: float) -> tuple[torch.Tensor, dict]:
    """P = Û Ûᵀ over the singular vectors of `cov` with singular value < threshold (float32), and what it
    covers: null_dim (that rule), null_dim_relative (S/S_max < threshold), d_in, s_max."""
    u, s, _ = torch.linalg.svd(cov.float(), full_matrices=False)
    small = s < threshold
    basis = u[:, small]
    s_max = float(s.max()) if s.numel() else 0.0
    info = {"null_dim": int(small.sum()), "null_dim_relative": int((s < threshold * s_max).sum()),
            "d_in": int(cov.shape[0]), "s_max": s_max}
    return basis @ basis.T, info


def alphaedit_delta(keys: torch.Tensor, resid: torch.Tensor, projector: torch.Tensor, cache_c: torch.Tensor,
                    alpha: float, solver=None) -> torch.Tensor:
    """Xᵀ (d_out × d_in), X = solve(P(K Kᵀ + cache_c) + α I, P K Rᵀ), in float32, from K (d_in × n) and R (d_out × n).
    `solver(a, b)` solves a·x = b (default: torch.linalg.solve)."""
    k, r, p = keys.float(), resid.float(), projector.float()
    system = p @ (k @ k.T + cache_c.float())
    system.diagonal().add_(alpha)
    x = (solver or torch.linalg.solve)(system, p @ k @ r.T)    # d_in × d_out
    return x.T


class AlphaEditor(MassEditor):
    name = "alphaedit"
    hparams_class = AlphaEditHparams

    def __init__(self, model, tokenizer, hparams: AlphaEditHparams, context):
        super().__init__(model, tokenizer, hparams, context)
        self.projectors: dict[str, torch.Tensor] = {}
        self.null_space: dict[str, dict] = {}

    def prepare(self) -> None:
        for path in self.paths:
            self.projectors[path], self.null_space[path] = null_space_projector(
                self.layer_stats(path), self.hparams.nullspace_threshold)

    def solve(self, index: int, path: str, keys: torch.Tensor, resid: torch.Tensor) -> torch.Tensor:
        return alphaedit_delta(keys, resid, self.projectors[path], self.cache_c[path], self.hparams.L2,
                               lambda a, b: self.solve_system(a, b, symmetric=False))

    def edit_turn(self, records) -> dict[str, float]:
        stats = super().edit_turn(records)
        for layer, path in zip(self.layer_ids, self.paths):
            if path in self.null_space:
                stats[f"null_dim_L{layer}"] = float(self.null_space[path]["null_dim"])
        return stats

    @torch.no_grad()
    def after_turn(self, rows: KeyRows) -> None:
        keys, _ = read_keys(self.model, self.tokenizer, self.family, rows, self.paths, None)   # the edited model (A3)
        updated = {path: self.cache_c[path] + keys[path].T @ keys[path] for path in self.paths}
        if not all(torch.isfinite(c).all() for c in updated.values()):
            raise LifelongError(f"{self.name}: the post-edit keys are not finite; the turn was rolled back")
        self.cache_c = updated

    # -- state ---------------------------------------------------------------------------------------
    def extra_state(self) -> dict:
        return {**super().extra_state(), "cache_c": {p: c.detach().cpu().clone() for p, c in self.cache_c.items()}}

    @torch.no_grad()
    def load_extra_state(self, state: dict) -> None:
        """`{}` (reset) zeroes cache_c; P is kept (a function of the unedited model's statistics)."""
        super().load_extra_state(state)
        saved = state.get("cache_c", {})
        unknown = sorted(set(saved) - set(self.paths))
        if unknown:
            raise LifelongError(f"alphaedit state has caches for {unknown}; this editor edits {self.paths}")
        cache = {}
        for path in self.paths:
            weight = self.edited[path].weight
            d_in = shape_in_out(self.edited[path])[0]
            if path in saved and tuple(saved[path].shape) != (d_in, d_in):
                raise LifelongError(f"alphaedit state: cache_c of {path} is {tuple(saved[path].shape)}, expected "
                                    f"{(d_in, d_in)}")
            cache[path] = (saved[path].to(weight.device, torch.float32) if path in saved
                           else torch.zeros(d_in, d_in, device=weight.device, dtype=torch.float32))
        self.cache_c = cache

    def report(self) -> dict:
        return {**super().report(), "nullspace_threshold": self.hparams.nullspace_threshold, "L2": self.hparams.L2,
                "null_space": self.null_space}


__all__ = ["AlphaEditHparams", "AlphaEditor", "alphaedit_delta", "null_space_projector"]
