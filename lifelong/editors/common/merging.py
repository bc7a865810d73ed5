"""Merging side-memory shards into one weight (WISE §1.8): TIES and the other GTA-family merges.

Every merge takes the base weight `W0`, a list of shard weights `W_j` (same shape) and one weight
`w_j` per shard, and returns one tensor. The GTA ("generalised task arithmetic") family works on
the deltas `δ_j = W_j − W0`:

1. sparsify each δ_j: magnitude (keep the top ⌊d·numel⌋ entries by |value|, per tensor) or
   Bernoulli(d) (DARE, optionally rescaled by 1/d), or nothing;
2. weight: u_j = w_j · δ_j;
3. sign election (optional): s = +1 where Σ_j u_j ≥ 0 else −1 (a tie counts as +);
   agree_j = sign(u_j) == s (zeros never agree);
4. combine: Σ_j u_j·agree_j, divided by Σ_j w_j·agree_j (0 → 1) when `normalize`;
5. result = W0 + combined.

`densities` may differ per shard: WISE-Merge's cleaned-up re-merge keeps the previously merged memory
at density 1.0 instead of re-trimming it (`retrim_merged=False` in the editor).

`linear` and `slerp` use *every* shard (the reference's B8 used only the first one).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ...core.errors import LifelongError

# name -> (sparsify, sign election, normalize, rescale for DARE)
GTA_METHODS: dict[str, tuple[str | None, bool, bool, bool]] = {
    "ties": ("magnitude", True, True, False),
    "magnitude_norm": ("magnitude", False, True, False),
    "magnitude": ("magnitude", False, False, False),
    "sign": (None, True, True, False),
    "dare_ties": ("bernoulli", True, False, True),
    "dare_linear": ("bernoulli", False, False, False),
}
MERGE_ALGS = tuple(GTA_METHODS) + ("linear", "slerp")


def magnitude_trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the top ⌊density·numel⌋ entries of |delta| (over the whole flattened tensor), zero the rest."""
    if density >= 1.0:
        return delta.clone()
    flat = delta.reshape(-1)
    k = int(math.floor(density * flat.numel()))
    out = torch.zeros_like(flat)
    if k > 0:
        idx = torch.topk(flat.abs(), k, largest=True, sorted=False).indices
        out[idx] = flat[idx]
    return out.reshape(delta.shape)


def bernoulli_trim(delta: torch.Tensor, density: float, rescale: bool,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """DARE: keep each entry with probability `density`; optionally rescale the survivors by 1/density."""
    if density >= 1.0:
        return delta.clone()
    keep = torch.rand(delta.shape, generator=generator, device="cpu").to(delta.device) < density
    out = delta * keep
    return out / density if rescale and density > 0 else out


def gta_merge(base: torch.Tensor, tensors: Sequence[torch.Tensor], weights: Sequence[float],
              densities: Sequence[float] | float, *, sparsify: str | None, sign_election: bool,
              normalize: bool, rescale: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    if isinstance(densities, (int, float)):
        densities = [float(densities)] * len(tensors)
    _check(base, tensors, weights)
    if len(densities) != len(tensors):
        raise LifelongError(f"merge: {len(densities)} densities for {len(tensors)} tensors")
    base32 = base.float()
    units = []
    for tensor, weight, density in zip(tensors, weights, densities):
        delta = tensor.float() - base32
        if sparsify == "magnitude":
            delta = magnitude_trim(delta, density)
        elif sparsify == "bernoulli":
            delta = bernoulli_trim(delta, density, rescale, generator)
        units.append(weight * delta)
    u = torch.stack(units)                                            # [k, ...]
    w = torch.tensor([float(x) for x in weights], dtype=u.dtype, device=u.device).view(-1, *[1] * base.dim())
    if sign_election:
        elected = torch.where(u.sum(0) >= 0, 1.0, -1.0).to(u.dtype)
        agree = torch.sign(u) == elected                              # zeros never agree
    else:
        agree = torch.ones_like(u, dtype=torch.bool)
    combined = (u * agree).sum(0)
    if normalize:
        denom = (w * agree).sum(0)
        combined = combined / torch.where(denom == 0, torch.ones_like(denom), denom)
    return (base32 + combined).to(base.dtype)


def linear_merge(tensors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Weighted mean of all shards, Σ w_j W_j / Σ w_j."""
    total = float(sum(weights))
    if total == 0:
        raise LifelongError("linear merge: weights sum to 0")
    out = sum(float(w) * t.float() for w, t in zip(weights, tensors))
    return (out / total).to(tensors[0].dtype)


def slerp_pair(a: torch.Tensor, b: torch.Tensor, t: float, eps: float = 1e-8) -> torch.Tensor:
    """Spherical interpolation of two flattened tensors; linear when they are (nearly) colinear."""
    a32, b32 = a.float().reshape(-1), b.float().reshape(-1)
    na, nb = a32.norm(), b32.norm()
    if na < eps or nb < eps:
        return ((1 - t) * a32 + t * b32).reshape(a.shape).to(a.dtype)
    dot = torch.clamp((a32 / na) @ (b32 / nb), -1.0, 1.0)
    if abs(float(dot)) > 0.9995:
        out = (1 - t) * a32 + t * b32
    else:
        theta = torch.arccos(dot)
        sin = torch.sin(theta)
        out = (torch.sin((1 - t) * theta) / sin) * a32 + (torch.sin(t * theta) / sin) * b32
    return out.reshape(a.shape).to(a.dtype)


def slerp_merge(tensors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """All shards: fold them in one by one, shard j at t = w_j / (w_1 + ... + w_j).
    For two shards with equal weights this is the plain slerp at t = 0.5."""
    out, acc = tensors[0], float(weights[0])
    for tensor, weight in zip(tensors[1:], weights[1:]):
        acc += float(weight)
        out = slerp_pair(out, tensor, float(weight) / acc if acc else 0.5)
    return out


def merge(alg: str, base: torch.Tensor, tensors: Sequence[torch.Tensor], weights: Sequence[float],
          densities: Sequence[float] | float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Merge `tensors` (full weights, not deltas) against `base` with the named algorithm."""
    _check(base, tensors, weights)
    if alg in GTA_METHODS:
        sparsify, sign, normalize, rescale = GTA_METHODS[alg]
        return gta_merge(base, tensors, weights, densities, sparsify=sparsify, sign_election=sign,
                         normalize=normalize, rescale=rescale, generator=generator)
    if alg == "linear":
        return linear_merge(tensors, weights)
    if alg == "slerp":
        return slerp_merge(tensors, weights)
    raise LifelongError(f"unknown merge_alg {alg!r}; known: {', '.join(MERGE_ALGS)}")


def ties_merge(base: torch.Tensor, tensors: Sequence[torch.Tensor], weights: Sequence[float],
               densities: Sequence[float] | float) -> torch.Tensor:
    return merge("ties", base, tensors, weights, densities)


def _check(base: torch.Tensor, tensors: Sequence[torch.Tensor], weights: Sequence[float]) -> None:
    if not tensors:
        raise LifelongError("merge: no tensors to merge")
    if len(weights) != len(tensors):
        raise LifelongError(f"merge: {len(weights)} weights for {len(tensors)} tensors")
    for t in tensors:
        if t.shape != base.shape:
            raise LifelongError(f"merge: shape {tuple(t.shape)} differs from the base {tuple(base.shape)}")
