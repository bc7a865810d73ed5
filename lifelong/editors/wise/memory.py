"""WISE's side memory: the adapter that replaces one projection, the activation score Δ, routing,
and the pieces of the editing loss (margin loss, early stop).

The adapter (`common/adapters.Adapter`) keeps the original module as the *main memory* and never
writes to it; `model.state_dict()` keys and values are unchanged while it is installed. Side weights (the current shard `w_cur`, stored
`memories`, the Merge-mode `merged` weight) are plain tensors in the module's native orientation
(Linear: [out, in]; GPT-2 Conv1D: [in, out]); `project` applies either (this fixes the reference's B4).

Routing is decided per sequence (row) of a batch, so batch size 1 is not required (B6); positions
are pooled over real tokens only, using the attention mask the editor captures from the model call.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..common.adapters import Adapter
from ..common.merging import merge as merge_weights

EMPTY_STAT = 1e9   # the reference's "no edit recorded yet" minimum: threshold act_ratio·1e9 never passes
MAIN, CURRENT = -1, 0  # route codes; stored memory j is j + 1 (Retrieve), the merged memory is 1 (Merge)


def activation_scores(side: torch.Tensor, main: torch.Tensor, act: Callable, mask: torch.Tensor | None = None,
                      max_pool_len: int | None = None, main_act: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row Δ: d_t = ‖σ(side_t) − σ(main_t)‖₂ over the hidden size, pooled over the positions of
    `mask` (all positions when None) by the mean, or by the max for rows with more than `max_pool_len`
    positions (inference only; None disables the switch). `main_act` may pass a precomputed σ(main)."""
    d = (act(side) - (act(main) if main_act is None else main_act)).norm(dim=-1)   # [B, S]
    if mask is None:
        mask = torch.ones_like(d)
    mask = mask.to(d.dtype)
    count = mask.sum(-1)
    mean = (d * mask).sum(-1) / count.clamp(min=1)
    if max_pool_len is None:
        return mean
    peak = d.masked_fill(mask == 0, float("-inf")).amax(-1)
    return torch.where(count > max_pool_len, peak, mean)


def random_mask(shape, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Elementwise Bernoulli(ratio) gradient mask (bool), drawn on the CPU from the editor's generator."""
    return torch.rand(tuple(shape), generator=generator) < ratio


def positive_mean(t: torch.Tensor) -> torch.Tensor:
    """The mean of the strictly positive entries of `t`, or 0 when there are none (the code's reduction)."""
    pos = t > 0
    if not bool(pos.any()):
        return t.new_zeros(())
    return t[pos].mean()


def margin_loss(d_in: torch.Tensor, d_out: torch.Tensor, alpha: float, beta: float, gamma: float,
                reduction: str = "violating") -> torch.Tensor:
    """L_a = hinge(out − in + γ) + hinge(out − α) + hinge(β − in).

    reduction "violating" (code): each hinge is the mean of its violating (positive) entries only;
    "mean" (one reading of the paper's Eq. 5): each hinge is the mean of relu over all its entries."""
    d_out = d_out.reshape(-1)
    terms = (d_out - d_in + gamma, d_out - alpha, beta - d_in)
    if reduction == "violating":
        return sum(positive_mean(t) for t in terms)
    if reduction == "mean":
        return sum(F.relu(t).mean() for t in terms)
    raise ValueError(f"unknown margin reduction {reduction!r}")


class EarlyStopper:
    """The code's stop rule: stop when the last two total losses differ by ≤ delta and the last is ≤ level."""

    def __init__(self, delta: float = 1e-4, level: float = 0.02):
        self.delta, self.level = delta, level
        self.prev = self.last = float("inf")

    def update(self, loss: float) -> None:
        self.prev, self.last = self.last, float(loss)

    def should_stop(self) -> bool:
        if self.last == float("inf") or self.prev == float("inf"):
            return False
        return abs(self.last - self.prev) <= self.delta and self.last <= self.level


def route_retrieve(d_cur: torch.Tensor, thr_cur: float, d_mems: Sequence[torch.Tensor], thr_mems: Sequence[float],
                   best_from_current: bool = True) -> torch.Tensor:
    """Per-row WISE-Retrieve choice: MAIN (-1), CURRENT (0) or stored memory j (j + 1).

    The current shard is used when d_cur ≥ its threshold; then every stored memory whose score beats
    both the best so far and its own threshold takes over ("top-1 activation"). With
    `best_from_current` (the code, B9) the running best starts at d_cur even when the current shard was
    not selected; otherwise it starts at −inf unless the current shard was selected."""
    choice = torch.where(d_cur >= thr_cur, CURRENT, MAIN).long()
    if best_from_current:
        best = d_cur.clone()
    else:
        best = torch.where(choice == CURRENT, d_cur, torch.full_like(d_cur, float("-inf")))
    for j, (d, thr) in enumerate(zip(d_mems, thr_mems)):
        take = (d > best) & (d > thr)
        choice = torch.where(take, torch.full_like(choice, j + 1), choice)
        best = torch.where(take, d, best)
    return choice


def route_merge(d_merged: torch.Tensor, d_cur: torch.Tensor, thr: float) -> torch.Tensor:
    """Per-row WISE-Merge choice: MAIN (-1) when both scores are below thr, else the merged memory (1)
    if it scores higher than the current shard, else CURRENT (0)."""
    choice = torch.where(d_merged > d_cur, 1, CURRENT).long()
    return torch.where((d_merged < thr) & (d_cur < thr), torch.full_like(choice, MAIN), choice)


class WiseAdapter(Adapter):
    """Replaces one projection. mode "infer": route per row; mode "train": every row goes through
    `w_cur` and the per-row training Δ is kept in `train_scores`."""

    def __init__(self, original: nn.Module, act: Callable, *, retrieve: bool, act_ratio: float,
                 side_bias: bool = True, max_pool_len: int = 100, best_from_current: bool = True,
                 train_pool_pads: bool = True):
        super().__init__(original)
        self.__dict__["act"] = act           # ACT2FN entries are modules; keep them out of the tree
        self.retrieve, self.act_ratio = retrieve, act_ratio
        self.side_bias, self.max_pool_len = side_bias, max_pool_len
        self.best_from_current, self.train_pool_pads = best_from_current, train_pool_pads
        self.mode = "infer"
        self.train_scores: torch.Tensor | None = None
        self.last_choice: torch.Tensor | None = None
        self.last_scores: dict[str, torch.Tensor] = {}
        self.clear()

    # -- state ----------------------------------------------------------------------------------
    def clear(self) -> None:
        self.w_cur = self.weight.detach().clone()
        self.mask: torch.Tensor | None = None
        self.memories: list[torch.Tensor] = []
        self.mem_stats: list[float] = []
        self.merged: torch.Tensor | None = None
        self.cur_min = EMPTY_STAT
        self.edit_count = 0
        self.merge_count = 0
        self.last_choice = None

    def has_knowledge(self) -> bool:
        return self.cur_min < EMPTY_STAT or bool(self.memories) or self.merged is not None

    def thresholds(self) -> dict[str, object]:
        return {"current": self.act_ratio * self.cur_min,
                "memories": [self.act_ratio * s for s in self.mem_stats]}

    # -- sharding and merging (§1.7) -------------------------------------------------------------
    @torch.no_grad()
    def save_shard(self) -> None:
        """Store the current shard and start a fresh copy of W0 (Retrieve: with fresh statistics)."""
        self.memories.append(self.w_cur.detach().clone())
        self.w_cur = self.weight.detach().clone()
        if self.retrieve:
            self.mem_stats.append(self.cur_min)
            self.cur_min = EMPTY_STAT

    @torch.no_grad()
    def merge(self, alg: str, k: int, weights: float, density: float, remerge_weights: Sequence[float],
              retrim_merged: bool, generator: torch.Generator | None = None) -> None:
        """Retrieve: the last k memories -> one (weights/k each), statistic = their min.
        Merge: the first merge combines every stored memory (weights/n each) into `merged`; later ones
        combine the n new memories (remerge_weights[0]/n each) with the old merged one
        (remerge_weights[1]; re-trimmed to `density` if `retrim_merged`, else kept whole)."""
        base = self.weight.detach()
        if self.retrieve:
            mems, stats = self.memories[-k:], self.mem_stats[-k:]
            merged = merge_weights(alg, base, mems, [weights / len(mems)] * len(mems), density, generator)
            del self.memories[-k:], self.mem_stats[-k:]
            self.memories.append(merged)
            self.mem_stats.append(min(stats))
        else:
            n = len(self.memories)
            if self.merged is None:
                self.merged = merge_weights(alg, base, self.memories, [weights / n] * n, density, generator)
            else:
                new_w, old_w = remerge_weights
                dens = [density] * n + [density if retrim_merged else 1.0]
                self.merged = merge_weights(alg, base, self.memories + [self.merged], [new_w / n] * n + [old_w],
                                            dens, generator)
            self.memories.clear()
        self.merge_count += 1

    # -- maths ----------------------------------------------------------------------------------
    def project(self, x: torch.Tensor, weight: torch.Tensor, bias: bool | None = None) -> torch.Tensor:
        """x through a side weight in the module's orientation; with the module bias if `bias`
        (default: `side_bias`; GPT-2's Conv1D path always has it, as in the reference)."""
        use_bias = self.side_bias if bias is None else bias
        b = self.bias if (use_bias or self.conv1d) else None
        if self.conv1d:
            shape = x.shape[:-1] + (weight.shape[1],)
            flat = x.reshape(-1, x.shape[-1])
            out = torch.addmm(b, flat, weight) if b is not None else flat @ weight
            return out.view(shape)
        return F.linear(x, weight, b)

    def scores(self, side: torch.Tensor, main: torch.Tensor, *, training: bool,
               main_act: torch.Tensor | None = None) -> torch.Tensor:
        mask = self.mask_for(side)
        if training:
            return activation_scores(side, main, self.act, None if self.train_pool_pads else mask, main_act=main_act)
        return activation_scores(side, main, self.act, mask, self.max_pool_len)

    # -- forward --------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "train":
            side = self.project(x, self.w_cur)
            with torch.no_grad():
                main = self.main(x)
            self.train_scores = self.scores(side, main, training=True)
            return side
        main = self.main(x)
        if not self.has_knowledge():
            return main                                  # no edit yet: bitwise the base model
        squeeze = x.dim() == 2
        if squeeze:
            x, main = x.unsqueeze(0), main.unsqueeze(0)
        out = self._route(x, main)
        return out.squeeze(0) if squeeze else out

    def _route(self, x: torch.Tensor, main: torch.Tensor) -> torch.Tensor:
        cur = self.project(x, self.w_cur)
        d_cur = self.scores(cur, main, training=False)
        thr_cur = self.act_ratio * self.cur_min
        outputs = {CURRENT: cur}
        if self.retrieve:
            mem_out = [self.project(x, w) for w in self.memories]
            d_mems = [self.scores(o, main, training=False) for o in mem_out]
            thr_mems = [self.act_ratio * s for s in self.mem_stats]
            choice = route_retrieve(d_cur, thr_cur, d_mems, thr_mems, self.best_from_current)
            outputs.update({j + 1: o for j, o in enumerate(mem_out)})
            self.last_scores = {"current": d_cur, **{f"memory{j}": d for j, d in enumerate(d_mems)}}
        else:
            merged_w = self.merged if self.merged is not None else self.weight
            merged_out = self.project(x, merged_w, bias=True)   # the reference's `layer(x)` has the bias
            d_merged = self.scores(merged_out, main, training=False)
            choice = route_merge(d_merged, d_cur, thr_cur)
            outputs[1] = merged_out
            self.last_scores = {"current": d_cur, "merged": d_merged}
        self.last_choice = choice
        out = main
        for code, candidate in outputs.items():
            sel = (choice == code)
            if bool(sel.any()):
                out = torch.where(sel.view(-1, *[1] * (main.dim() - 1)), candidate, out)
        return out
