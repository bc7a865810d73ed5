"""GRACE's codebook: the pure arithmetic of keys, values, radii and labels (no model here).

An entry i holds a key k_i (a module input, fp32), a value v_i (a module output, fp32), a radius ε_i and
the label of the edit that made it. A query h *hits* when ‖h − k_i*‖₂ ≤ ε_i* for its nearest key i*.

`update(h, label, new_value)` is the reference's codebook step (GRACE `GRACEAdapter.forward` at training
iteration 0; spec baselines.md §2), with d the distance to the nearest key i*:
  1. empty codebook                         -> add (h, v_new, ε0, label)                     "add"
  2. d > ε0 + ε_i*                          -> add                                          "add"
  3. labels differ                          -> add, then split: ε_i* = d/2 − 1e-5, ε_new = d/2 "split"
  4. labels match and d > ε_i*              -> expand: ε_i* = d (moving_average: first
                                               k_i* = (k_i* + h)/2)                          "expand"
  5. labels match and d ≤ ε_i*              -> nothing changes                              "keep"
It returns the entry whose value the edit then trains. Labels are appended, so labels[i] is always the
label of keys[i] (EasyEdit's G1 prepends them). The split reproduces G3 (a "split" that grows ε_i*) unless
`faithful_split` is false. Comparisons are made in fp32, as in the reference, and "greater" is strict: at
d = ε0 + ε_i* exactly the query is not new (rule 2 fails) and a differing label splits.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from ...core.errors import LifelongError
from ...models.tokenization import IGNORE

ADD, SPLIT, EXPAND, KEEP = "add", "split", "expand", "keep"
COUNTERS = {ADD: "additions", SPLIT: "splits", EXPAND: "expansions", KEEP: "keeps"}
SPLIT_MARGIN = 1e-5


def distances(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """[B, N] Euclidean distances in fp32, computed from differences (exact, unlike the Gram-matrix form)."""
    return torch.cdist(queries.float(), keys.float(), compute_mode="donot_use_mm_for_euclid_dist")


def labels_match(a: Sequence[int], b: Sequence[int], how: str = "mean") -> bool:
    """`mean` (reference: `edit_label.float().mean() == key_label.float().mean()`): the fp32 means of the two
    label rows are equal; `target`: the target ids (the entries that are not -100) are equal."""
    if how == "mean":
        mean = lambda row: float(torch.tensor(list(row), dtype=torch.float32).mean())  # noqa: E731
        return mean(a) == mean(b)
    if how == "target":
        return [t for t in a if t != IGNORE] == [t for t in b if t != IGNORE]
    raise ValueError(f"unknown label_match {how!r}")


class Codebook:
    def __init__(self, eps0: float, d_in: int, d_out: int, *, expand: str = "coverage", faithful_split: bool = True,
                 label_match: str = "mean", device: torch.device | str = "cpu"):
        if expand not in ("coverage", "moving_average"):
            raise ValueError(f"unknown eps_expand {expand!r}")
        self.eps0, self.d_in, self.d_out = float(eps0), int(d_in), int(d_out)
        self.expand, self.faithful_split, self.label_match = expand, faithful_split, label_match
        self.device = torch.device(device)
        self.keys = torch.zeros(0, self.d_in, device=self.device)
        self.values = torch.zeros(0, self.d_out, device=self.device)
        self.radii = torch.zeros(0, device=self.device)
        self.labels: list[list[int]] = []
        self.counts = {name: 0 for name in COUNTERS.values()}

    def __len__(self) -> int:
        return self.keys.shape[0]

    # -- lookup -----------------------------------------------------------------------------------
    def nearest(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(distance [B], index [B]) of each query's nearest key (ties: the lowest index)."""
        if not len(self):
            raise LifelongError("the GRACE codebook is empty: no nearest key")
        return distances(queries.reshape(-1, self.d_in).to(self.device), self.keys).min(dim=1)

    def lookup(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(hit [B] bool, index [B], distance [B]): hit when the nearest key lies within its radius."""
        dist, index = self.nearest(queries)
        return dist <= self.radii[index], index, dist

    # -- the update -------------------------------------------------------------------------------
    def update(self, query: torch.Tensor, label: Sequence[int],
               new_value: Callable[[], torch.Tensor]) -> tuple[int, str, dict[str, Any]]:
        """Apply one edit's codebook step. Returns (entry to train, action, undo); `restore(undo)` takes
        the step back. `new_value()` is called only when an entry is added."""
        query = query.detach().reshape(self.d_in).float().to(self.device)
        label = [int(t) for t in label]
        undo = {"n": len(self), "radii": self.radii.clone(), "key": None, "counts": dict(self.counts)}
        if not len(self):
            index, action = self._add(query, new_value(), label), ADD
        else:
            dist, near = (t[0] for t in self.nearest(query[None]))
            i = int(near)
            if dist > self.eps0 + self.radii[i]:
                index, action = self._add(query, new_value(), label), ADD
            elif not labels_match(label, self.labels[i], self.label_match):
                index, action = self._add(query, new_value(), label), SPLIT
                self._split(i, index, dist)
            elif dist > self.radii[i]:
                index, action = i, EXPAND
                if self.expand == "moving_average":
                    undo["key"] = (i, self.keys[i].clone())
                    self.keys[i] = 0.5 * self.keys[i] + 0.5 * query
                self.radii[i] = dist
            else:
                index, action = i, KEEP
        self.counts[COUNTERS[action]] += 1
        return index, action, undo

    def _add(self, key: torch.Tensor, value: torch.Tensor, label: list[int]) -> int:
        value = value.detach().reshape(self.d_out).float().to(self.device)
        self.keys = torch.cat([self.keys, key[None]])
        self.values = torch.cat([self.values, value[None]])
        self.radii = torch.cat([self.radii, self.radii.new_full((1,), self.eps0)])
        self.labels.append(label)
        return len(self) - 1

    def _split(self, near: int, new: int, dist: torch.Tensor) -> None:
        half = dist / 2
        if self.faithful_split:   # G3: the reference's values, even where ε_near grows
            self.radii[near] = half - SPLIT_MARGIN
            self.radii[new] = half
        else:                     # a split only ever shrinks
            self.radii[near] = torch.minimum(self.radii[near], half - SPLIT_MARGIN)
            self.radii[new] = torch.minimum(self.radii[new], half)

    def restore(self, undo: dict[str, Any]) -> None:
        n = undo["n"]
        self.keys, self.values, self.radii = self.keys[:n], self.values[:n], undo["radii"]
        del self.labels[n:]
        if undo["key"] is not None:
            i, key = undo["key"]
            self.keys[i] = key
        self.counts = dict(undo["counts"])

    def set_value(self, index: int, value: torch.Tensor) -> None:
        self.values[index] = value.detach().reshape(self.d_out).float().to(self.device)

    # -- state ------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        cpu = lambda t: t.detach().to("cpu", copy=True)  # noqa: E731
        full = len(self) > 0
        return {"keys": cpu(self.keys) if full else None, "values": cpu(self.values) if full else None,
                "radii": cpu(self.radii) if full else None, "labels": [list(row) for row in self.labels],
                "counts": dict(self.counts)}

    def load(self, state: dict[str, Any]) -> None:
        labels = [[int(t) for t in row] for row in state.get("labels", [])]
        n = len(labels)
        if n:
            keys, values, radii = state["keys"].float(), state["values"].float(), state["radii"].float()
            want = {"keys": (n, self.d_in), "values": (n, self.d_out), "radii": (n,)}
            for name, tensor in (("keys", keys), ("values", values), ("radii", radii)):
                if tuple(tensor.shape) != want[name]:
                    raise LifelongError(f"GRACE state: {name} has shape {tuple(tensor.shape)}, expected {want[name]} "
                                        "(a different module or a corrupt state)")
                if not bool(torch.isfinite(tensor).all()):
                    raise LifelongError(f"GRACE state: {name} holds non-finite numbers; refusing to load it")
            self.keys, self.values, self.radii = (t.to(self.device, copy=True) for t in (keys, values, radii))
        elif state.get("keys") is not None:
            raise LifelongError("GRACE state: keys without labels")
        self.labels = labels
        self.counts = {name: int(state.get("counts", {}).get(name, 0)) for name in COUNTERS.values()}
