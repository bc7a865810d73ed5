"""UltraEdit (Gu et al. 2025): training-, subject- and memory-free lifelong editing.

Per turn (spec ultraedit.md §1), for the turn's (prompt, target) pairs:
  1. sort the pairs by token length (longest first), cut them into mini-batches of `batch_size`;
  2. per mini-batch, one forward and one backward pass with the mean cross-entropy over the
     mini-batch's answer tokens; capture, at every answer position, each edited module's input k
     (the key) and the gradient g of the loss w.r.t. its output (the value gradient);
  3. update the lifelong normalizer of the module's weight shape with the rows [k ; g]
     (mini-batch by mini-batch, module by module in config order, all before any normalisation);
  4. normalise: k̂, ĝ; pseudo-values v = -lr·||k̂||²·ĝ;
  5. ridge solve with the RAW keys: Δ = (KᵀK + I)⁻¹KᵀV, as the N×N Woodbury form Kᵀ(KKᵀ + I)⁻¹V
     when N < d_in;
  6. add every module's Δ at once (Linear: W += Δᵀ; GPT-2 Conv1D: W += Δ).

Speed: keys and gradients stay in memory (the reference writes them to disk); only activation
gradients are computed (`torch.autograd.grad` w.r.t. the hooked module outputs, weights never
require grad, so backward stops at the first edited module); nothing but the model and the
normalizer survives a turn.

Faithful vs improved (`faithful: true` is the default, as spec §6.6 asks):
  * `stats_dtype`: float32 counters (reference) or float64 (no saturation after ~1.7e7 rows);
  * `master_fp32`: keep an fp32 master copy of edited low-precision (bf16/fp16) weights, so shifts do
    not accumulate bf16 rounding (the reference adds each Δ to the bf16 weight in place);
  * `fix_pairing` (default true, even when faithful, since it only matters when turn_size is not a
    multiple of batch_size): false reproduces reference bug §1.10a (the last partial mini-batch's
    keys are paired with zero gradients in the solve).
  * faithful also computes the cross-entropy on the model-dtype logits, as the reference does.

Module selection: `modules` (full paths) > `preset` (the published lists, checked against the
model's depth) > `layers` × `projections` (projection-major; negative layers count from the top).
Per-family values live in params.yaml: real models use the presets with lr 1e-6; the 6-layer
testbed models use `layers: [-2]` (the down projection) with lr 2e-3 (sweep in the UltraEdit report).

Deviation, documented: the LM head runs on the answer positions only (`models.modules.logits_at`); the
loss and every gradient are the same as with full logits, without the head's work on prompt tokens.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...core.errors import LifelongError
from ...core.records import EditRecord
from ...models.modules import family_of, layer_path, logits_at, num_layers, oriented, shape_in_out
from ...models.tokenization import IGNORE, Batch, collate, encode_pair, pad_id
from ..base import EditorHparams, WeightEditor
from ..common.hooks import capture
from .presets import PRESETS
from .stats import RunningStats, shape_key

@dataclass
class UltraEditHparams(EditorHparams):
    turn_size: int = 100                 # edits per turn (the reference's n_edits)
    batch_size: int = 10                 # pairs per forward/backward mini-batch (dataset.batch_size)
    lr: float = 1e-6                     # pseudo-value coefficient: v = -lr·||k̂||²·ĝ
    # Which modules: explicit `modules` paths, or a `preset`, or layers × projections (projection-major).
    layers: list[int] | None = None      # None: [-3, -2]; negative indices count from the top
    projections: list[str] | None = None  # roles (mlp_out, mlp_in, mlp_gate) or paths in a layer; None: mlp_out
    modules: list[str] | None = None     # full paths, e.g. "model.layers.5.mlp.down_proj"
    preset: str | None = None            # a published selection (PRESETS), e.g. "llama3-8b"
    token: Literal["ans", "mask"] = "ans"  # capture at answer positions (reference) or all non-pad tokens
    ridge: float = 1.0                   # regularizer of the solve (reference: exactly 1)
    solve: Literal["auto", "woodbury", "direct"] = "auto"  # auto: Woodbury when rows < d_in
    row_chunk: int = 1024                # rows per normalisation chunk (no mathematical effect)
    faithful: bool = True                # reference numerics unless an option below says otherwise
    stats_dtype: Literal["float32", "float64"] | None = None  # None: float32 if faithful else float64
    master_fp32: bool | None = None      # None: off if faithful else on (only for non-fp32 weights)
    fix_pairing: bool = True             # false reproduces reference bug §1.10a
    drop_lone_space: bool = False        # drop a lone "▁"/"Ġ" first answer piece (spec §1.10 k)
    max_length: int | None = None        # cut sequences from the left (answer kept)

    def validate(self) -> None:
        super().validate()
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not self.ridge > 0:
            raise ValueError(f"ridge must be > 0, got {self.ridge}")
        if self.row_chunk < 1:
            raise ValueError(f"row_chunk must be >= 1, got {self.row_chunk}")
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")
        for name in ("layers", "projections", "modules"):
            value = getattr(self, name)
            if value is not None and len(value) == 0:
                raise ValueError(f"{name} must not be empty (use null for the default)")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; known presets: {', '.join(sorted(PRESETS))}")
        if self.preset is not None and self.modules is not None:
            raise ValueError("give either `preset` or `modules`, not both")

    @property
    def resolved_stats_dtype(self) -> torch.dtype:
        name = self.stats_dtype or ("float32" if self.faithful else "float64")
        return getattr(torch, name)

    @property
    def resolved_master_fp32(self) -> bool:
        return (not self.faithful) if self.master_fp32 is None else self.master_fp32


def resolve_modules(model: nn.Module, hp: UltraEditHparams) -> list[str]:
    """The edited module paths, in config order (the normalizer's update order)."""
    fam = family_of(model)
    if hp.modules is not None:
        paths = list(hp.modules)
    elif hp.preset is not None:
        model_type, n_layers, groups = PRESETS[hp.preset]
        if (fam.name, num_layers(model)) != (model_type, n_layers):
            raise LifelongError(f"preset {hp.preset!r} is for a {n_layers}-layer {model_type} model; this is a "
                                f"{num_layers(model)}-layer {fam.name} model (use layers/projections or modules)")
        paths = [layer_path(model, layer, role) for role, layers in groups for layer in layers]
    else:
        layers = hp.layers if hp.layers is not None else [-3, -2]
        projections = hp.projections or ["mlp_out"]
        paths = [layer_path(model, layer, rel) for rel in projections for layer in layers]
    duplicates = sorted({p for p in paths if paths.count(p) > 1})
    if duplicates:
        raise LifelongError(f"ultraedit: module(s) listed twice: {', '.join(duplicates)}")
    return paths


# -- the math, as pure functions (tests call them directly) ----------------------------------------
def pseudo_values(stats: RunningStats, keys: torch.Tensor, grads: torch.Tensor, lr: float,
                  row_chunk: int = 1024) -> torch.Tensor:
    """V = -lr·||k̂||²·ĝ per row, with (k̂, ĝ) the normalised [k ; g]; fp32 [N, d_out]."""
    out = []
    for start in range(0, keys.shape[0], row_chunk):
        k_hat, g_hat = stats.normalize(keys[start : start + row_chunk], grads[start : start + row_chunk])
        coef = -lr * k_hat.pow(2).sum(1, keepdim=True)
        out.append((coef * g_hat).float())
    return torch.cat(out) if out else grads.new_zeros((0, stats.d_out), dtype=torch.float32)


def ridge_solve(keys: torch.Tensor, values: torch.Tensor, ridge: float = 1.0,
                method: str = "auto") -> torch.Tensor:
    """argmin_P ||K P - V||² + ridge·||P||² = (KᵀK + ridge·I)⁻¹KᵀV = Kᵀ(KKᵀ + ridge·I)⁻¹V  ([d_in, d_out])."""
    n, d_in = keys.shape
    if method == "auto":
        method = "woodbury" if n < d_in else "direct"
    if method == "woodbury":
        gram = keys @ keys.T
        gram.diagonal().add_(ridge)
        return keys.T @ torch.linalg.solve(gram, values)
    if method == "direct":
        gram = keys.T @ keys
        gram.diagonal().add_(ridge)
        return torch.linalg.solve(gram, keys.T @ values)
    raise LifelongError(f"unknown solve method {method!r} (auto, woodbury, direct)")


class UltraEditor(WeightEditor):
    name = "ultraedit"
    hparams_class = UltraEditHparams
    atomic_turns = True   # a failed turn restores the statistics and writes no weight

    def __init__(self, model, tokenizer, hparams: UltraEditHparams, context):
        super().__init__(model, tokenizer, hparams, context)
        self.paths = resolve_modules(model, hparams)
        self.shapes = {path: shape_in_out(self.track(path)) for path in self.paths}
        self.device = self.edited[self.paths[0]].weight.device
        self.stats_dtype = hparams.resolved_stats_dtype
        self.stats: dict[str, RunningStats] = {}
        self.master: dict[str, torch.Tensor] = {}
        self.load_extra_state({})

    # -- the turn --------------------------------------------------------------------------------
    def edit_turn(self, records: Sequence[EditRecord]) -> dict[str, float]:
        hp: UltraEditHparams = self.hparams
        if not records:
            return {"edits": 0.0}
        start = time.perf_counter()
        batches = self.minibatches(records)
        snapshot = {key: stats.copy() for key, stats in self.stats.items()}
        try:
            keys: dict[str, list[torch.Tensor]] = {p: [] for p in self.paths}
            grads: dict[str, list[torch.Tensor]] = {p: [] for p in self.paths}
            losses = []
            for batch in batches:  # every update of the turn happens before any normalisation
                loss, captured = self.capture(batch)
                losses.append(loss)
                for path in self.paths:
                    k, g = captured[path]
                    stats = self.stats_for(path)
                    stats.update(k.to(stats.mean.device), g.to(stats.mean.device))
                    keys[path].append(k)
                    grads[path].append(g)
            captured_s = time.perf_counter() - start
            if not hp.fix_pairing and len(records) % hp.batch_size:
                for path in self.paths:  # reference bug §1.10a: the last partial batch's grads are lost
                    grads[path][-1] = torch.zeros_like(grads[path][-1])
            deltas = {}
            for path in self.paths:
                k, g = torch.cat(keys[path]), torch.cat(grads[path])
                if k.shape[0] != g.shape[0]:
                    raise LifelongError(f"ultraedit: {k.shape[0]} key rows but {g.shape[0]} gradient rows for {path}")
                deltas[path] = self.shift(path, k, g)
                if not torch.isfinite(deltas[path]).all():
                    raise LifelongError(f"ultraedit: the solve for {path} produced NaN/Inf (lr={hp.lr}, ridge={hp.ridge}); "
                                        "the model was left unchanged")
        except BaseException:
            self.stats = snapshot  # a failed turn leaves no trace
            raise
        self.apply(deltas)
        self.edits_done += len(records)
        rows = sum(k.shape[0] for k in keys[self.paths[0]])
        return {"loss": float(sum(losses) / len(losses)), "rows": float(rows), "minibatches": float(len(batches)),
                "capture_seconds": captured_s, "seconds": time.perf_counter() - start,
                "delta_norm": float(sum(d.norm() for d in deltas.values()) / len(deltas))}

    def minibatches(self, records: Sequence[EditRecord]) -> list[Batch]:
        """Pairs sorted by token length, longest first (stable), cut into mini-batches (spec §3.6)."""
        hp: UltraEditHparams = self.hparams
        encoded = [encode_pair(self.tokenizer, r.prompt, r.target, drop_lone_space=hp.drop_lone_space)
                   for r in records]
        encoded.sort(key=lambda e: len(e.input_ids), reverse=True)
        pid = pad_id(self.tokenizer)
        return [collate(encoded[i : i + hp.batch_size], pad_id=pid, max_length=hp.max_length).to(self.device)
                for i in range(0, len(encoded), hp.batch_size)]

    def capture(self, batch: Batch) -> tuple[float, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """One forward and backward pass; per module, fp32 (keys [rows, d_in], grads [rows, d_out])."""
        hp: UltraEditHparams = self.hparams
        answer = batch.labels != IGNORE
        mask = answer if hp.token == "ans" else batch.attention_mask.bool()
        was_training = self.model.training
        if was_training:  # toggling walks every submodule: only when needed
            self.model.eval()
        try:
            with capture({p: self.edited[p] for p in self.paths}, outputs_require_grad=True) as store, \
                    torch.enable_grad():
                logits = logits_at(self.model, batch.model_inputs(), answer)
                if not hp.faithful:
                    logits = logits.float()
                loss = F.cross_entropy(logits, batch.labels[answer])
                if not torch.isfinite(loss):
                    raise LifelongError(f"ultraedit: the edit loss is {float(loss.detach())} (NaN/Inf in the model?)")
                missing = [p for p in self.paths if p not in store]
                if missing:
                    raise LifelongError(f"ultraedit: module(s) not run by the forward pass: {', '.join(missing)}")
                outputs = [store[p][1] for p in self.paths]
                out_grads = torch.autograd.grad(loss, outputs, allow_unused=True)
        finally:
            if was_training:
                self.model.train()
        captured = {}
        for path, grad in zip(self.paths, out_grads):
            inputs, output = store[path]
            k = inputs[mask].float()
            g = grad[mask].float() if grad is not None else output.new_zeros((k.shape[0], output.shape[-1])).float()
            for what, tensor in (("keys", k), ("gradients", g)):
                if not torch.isfinite(tensor).all():
                    raise LifelongError(f"ultraedit: NaN/Inf in the captured {what} of {path}; the model was left unchanged")
            captured[path] = (k, g)
        return float(loss.detach()), captured

    def shift(self, path: str, keys: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """Δ [d_in, d_out] for one module from its (raw, fp32) keys and gradients, with the current statistics."""
        hp: UltraEditHparams = self.hparams
        stats = self.stats_for(path)   # shared by every module of this shape: on a sharded model, maybe another GPU
        keys, grads = keys.to(stats.mean.device), grads.to(stats.mean.device)
        values = pseudo_values(stats, keys, grads, hp.lr, hp.row_chunk)
        return ridge_solve(keys.float(), values, hp.ridge, hp.solve)

    @torch.no_grad()
    def apply(self, deltas: dict[str, torch.Tensor]) -> None:
        for path, delta in deltas.items():
            module = self.edited[path]
            delta = oriented(module, delta)
            if path in self.master:
                self.master[path].add_(delta.to(self.master[path].device))
                module.weight.copy_(self.master[path])
            else:  # the reference: cast Δ to the weight dtype and add in place
                module.weight.add_(delta.to(device=module.weight.device, dtype=module.weight.dtype))

    def stats_for(self, path: str) -> RunningStats:
        return self.stats[shape_key(*self.shapes[path])]

    # -- state -----------------------------------------------------------------------------------
    def extra_state(self) -> dict:
        return {"stats": {key: stats.state() for key, stats in self.stats.items()},
                "master": {path: t.detach().cpu().clone() for path, t in self.master.items()}}

    @torch.no_grad()
    def load_extra_state(self, state: dict) -> None:
        """Normalizer statistics (and master weights); `{}` resets them (called by `reset()`)."""
        saved = state.get("stats", {})
        keys = {shape_key(*shape): shape for shape in self.shapes.values()}
        unknown = sorted(set(saved) - set(keys))
        if unknown:
            raise LifelongError(f"ultraedit checkpoint has normalizers for shapes {unknown}, but the edited modules "
                                f"have shapes {sorted(keys)} (different module selection?)")
        self.stats = {}
        for key, (d_in, d_out) in keys.items():
            if key in saved:
                self.stats[key] = RunningStats.from_state(saved[key], dtype=self.stats_dtype, device=self.device)
            else:
                self.stats[key] = RunningStats(d_in, d_out, dtype=self.stats_dtype, device=self.device)
        self.master = {}
        if self.hparams.resolved_master_fp32:
            saved_master = state.get("master", {})
            for path, module in self.edited.items():
                if module.weight.dtype == torch.float32:
                    continue  # the weight is its own fp32 master
                source = saved_master.get(path, module.weight)
                self.master[path] = source.detach().to(device=module.weight.device, dtype=torch.float32).clone()
