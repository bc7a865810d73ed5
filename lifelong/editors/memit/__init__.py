"""MEMIT (Meng et al., ICLR 2023) and MEMIT-MASS (spec baselines.md §3).

The turn (templates, z, keys, the bottom-up layer loop, rollback) is `editors/common/mass_edit.py`; this package
is MEMIT's per-layer solve, spec Eq. 14, in float64:

    adj = solve(λC + K Kᵀ, K),   Δ = R adjᵀ  = R Kᵀ (λC + K Kᵀ)⁻¹

with C = E[k kᵀ] of the layer's down-projection input (the run's stats folder, `common/covariance.py`) and
λ = `mom2_update_weight`. λC + KKᵀ is symmetric positive (semi)definite: it is solved by Cholesky, with the
documented ridge retry of `mass_edit.safe_solve` when it is numerically singular (counted in the report).

MEMIT vs MEMIT-MASS is the turn size: `turn_size: 1` is the WISE paper's "MEMIT" (one MEMIT call per edit,
the deltas accumulating); `turn_size: T` is its "MEMIT-MASS" (all T edits solved in one batch). MEMIT ignores
past edits' keys; that is the gap AlphaEdit's cache fills.

Reproduced: M2 (right padding), M3 (‖δ‖ in the weight decay), M4 (sampled templates, seeded and kept in the
state), the key weighting (½ bare prompt, 1/10 per template). Fixed: M1 (targets without BOS), M5 (a record
without its subject falls back to the last prompt token and is counted, or is an error with
`missing_subject: error`). M6: λ scales a *mean* second moment; the tiny models' λ is re-swept (params.yaml).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..common.mass_edit import MassEditHparams, MassEditor


@dataclass
class MemitHparams(MassEditHparams):
    mom2_update_weight: float = 15000.0     # λ

    def validate(self) -> None:
        super().validate()
        if not self.mom2_update_weight >= 0:
            raise ValueError(f"mom2_update_weight must be >= 0, got {self.mom2_update_weight}")


def memit_delta(keys: torch.Tensor, resid: torch.Tensor, cov: torch.Tensor, lam: float, solver=None) -> torch.Tensor:
    """Δ = R Kᵀ (λC + K Kᵀ)⁻¹ in float64 (d_out × d_in), from K (d_in × n), R (d_out × n) and C (d_in × d_in).
    `solver(a, b)` solves a·x = b (default: torch.linalg.solve)."""
    k, r = keys.double(), resid.double()
    system = lam * cov.double() + k @ k.T
    adj = (solver or torch.linalg.solve)(system, k)          # d_in × n
    return r @ adj.T


class MemitEditor(MassEditor):
    name = "memit"
    hparams_class = MemitHparams

    def __init__(self, model, tokenizer, hparams: MemitHparams, context):
        super().__init__(model, tokenizer, hparams, context)
        self.covariances: dict[str, torch.Tensor] = {}

    def prepare(self) -> None:
        self.covariances = {path: self.layer_stats(path) for path in self.paths}

    def solve(self, index: int, path: str, keys: torch.Tensor, resid: torch.Tensor) -> torch.Tensor:
        return memit_delta(keys, resid, self.covariances[path], self.hparams.mom2_update_weight,
                           lambda a, b: self.solve_system(a, b, symmetric=True))

    def report(self) -> dict:
        return {**super().report(), "mom2_update_weight": self.hparams.mom2_update_weight,
                "variant": "MEMIT" if self.hparams.turn_size == 1 else f"MEMIT-MASS (turn_size {self.hparams.turn_size})"}


__all__ = ["MemitEditor", "MemitHparams", "memit_delta"]
