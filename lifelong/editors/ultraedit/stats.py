"""UltraEdit's lifelong normalizer, with the reference's exact semantics (spec ultraedit.md §1.5).

One `RunningStats` per weight shape (d_in, d_out) holds, for D = d_in + d_out:
    n (scalar), mean[D], S[D] (an accumulated sum of squares, named `var` in the reference), std[D].

`update(x)` with a batch of m rows x = [k ; g]:
    n'   = n + m
    δ    = mean_rows(x) - mean
    mean = mean + m·δ / n'
    S    = S + m·var_unbiased_rows(x) + n·m·δ² / n'
    std  = sqrt(S / (n' - 1 + eps))          eps = float32 machine epsilon
    n    = n'
`normalize(z) = (z - mean) / (std + eps)`.

This is Chan's parallel update except for the reference quirk `m·var_unbiased` where the exact
formula has `(m-1)·var_unbiased`: S = M2_exact + Σ_t var_unbiased(x_t), one extra batch variance per
update call. We keep the quirk and the call granularity (one call per mini-batch and module).

Deviation, documented: a batch with a single row has no unbiased variance (the reference gets NaN
and poisons the statistics forever). Here its variance term is taken as 0, which is also what the
exact formula's (m-1)·var contributes; the mean and the δ² term are updated as usual.

`dtype` is float32 in the faithful mode; float64 keeps the counters from saturating after ~1.7e7
rows (a named deviation, `stats_dtype`). eps is float32's in both cases.
"""
from __future__ import annotations

from typing import Any

import torch

from ...core.errors import LifelongError

EPS = float(torch.finfo(torch.float32).eps)  # ≈ 1.19e-7, the reference's eps (its rows are fp32)


def shape_key(d_in: int, d_out: int) -> str:
    """The reference keys its normalizers by str((d_in, d_out))."""
    return str((int(d_in), int(d_out)))


class RunningStats:
    def __init__(self, d_in: int, d_out: int, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu"):
        self.d_in, self.d_out = int(d_in), int(d_out)
        self.dtype = dtype
        dim = self.d_in + self.d_out
        self.n = torch.zeros((), dtype=dtype, device=device)
        self.mean = torch.zeros(dim, dtype=dtype, device=device)
        self.S = torch.zeros(dim, dtype=dtype, device=device)
        self.std = torch.zeros(dim, dtype=dtype, device=device)

    @property
    def dim(self) -> int:
        return self.d_in + self.d_out

    @property
    def count(self) -> int:
        return int(round(float(self.n)))

    @torch.no_grad()
    def update(self, keys: torch.Tensor, grads: torch.Tensor) -> None:
        """One reference `update` call with the rows x = [keys ; grads] ([m, d_in] and [m, d_out])."""
        if keys.shape[0] != grads.shape[0]:
            raise LifelongError(f"normalizer update: {keys.shape[0]} key rows but {grads.shape[0]} gradient rows")
        if keys.shape[1] != self.d_in or grads.shape[1] != self.d_out:
            raise LifelongError(f"normalizer for shape {(self.d_in, self.d_out)} got rows of widths "
                                f"{(keys.shape[1], grads.shape[1])}")
        m = keys.shape[0]
        if m == 0:
            return
        x = torch.cat([keys, grads], dim=1).to(self.dtype)
        n_new = self.n + m
        batch_mean = x.mean(0)
        delta = batch_mean - self.mean
        self.mean += m * delta / n_new
        # var_unbiased of one row is undefined (NaN in the reference); its exact contribution is 0.
        batch_var = x.var(0, unbiased=True) if m > 1 else torch.zeros_like(batch_mean)
        self.S += m * batch_var + self.n * m * delta.pow(2) / n_new
        self.std = (self.S / (n_new - 1 + EPS)).sqrt()
        self.n = n_new

    @torch.no_grad()
    def normalize(self, keys: torch.Tensor, grads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(k̂, ĝ): the split of (z - mean) / (std + eps), computed in the statistics' dtype."""
        k = (keys.to(self.dtype) - self.mean[: self.d_in]) / (self.std[: self.d_in] + EPS)
        g = (grads.to(self.dtype) - self.mean[self.d_in :]) / (self.std[self.d_in :] + EPS)
        return k, g

    # -- checkpoints -----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"d_in": self.d_in, "d_out": self.d_out, "dtype": str(self.dtype).removeprefix("torch."),
                "n": self.n.detach().cpu().clone(), "mean": self.mean.detach().cpu().clone(),
                "S": self.S.detach().cpu().clone(), "std": self.std.detach().cpu().clone()}

    @classmethod
    def from_state(cls, state: dict[str, Any], *, dtype: torch.dtype, device: torch.device | str) -> "RunningStats":
        stats = cls(state["d_in"], state["d_out"], dtype=dtype, device=device)
        for name in ("n", "mean", "S", "std"):
            value = torch.as_tensor(state[name]).reshape(getattr(stats, name).shape)
            setattr(stats, name, value.to(device=device, dtype=dtype).clone())
        return stats

    def copy(self) -> "RunningStats":
        return RunningStats.from_state(self.state(), dtype=self.dtype, device=self.mean.device)

