"""One turn of MEMIT's algorithm with a pluggable per-layer solve (spec baselines.md §3, §4): the shared base of
MEMIT (`editors/memit/`) and AlphaEdit (`editors/alphaedit/`).

A turn of n records:
  1. context templates: "{}" plus one top-k sampled generation per seed word (`templates.sampled_templates`),
     made once per editor from the unedited model with the context seed (M4) and kept in its state;
  2. z_j = h_j + δ_j per record at the last edited layer L (`mass_vectors.compute_z`);
  3. for each edited layer i from the bottom: K from the current weights (`mass_vectors.read_keys`),
     cur_z = layer L's output at the bare prompt's subject token, R = (Z − cur_z)/(L − i), Δ_i = `solve(...)`,
     added in place (higher layers see the lower layers' edits; each weight ends bitwise W + Δ_i);
  4. `after_turn` (AlphaEdit: the new keys into its cache).
Everything works in the spec's orientation (K: d_in × n, R: d_out × n, Δ: d_out × d_in) and is written back with
the module's own layout (GPT-2's Conv1D stores Wᵀ; `models.modules.oriented`).

Safety: a non-finite z or Δ, or a solve that fails, rolls back every weight the turn changed (the model is left
exactly as it was) and raises `LifelongError` naming the layer and the cause. A numerically singular system
(Cholesky fails, or its pivots say the reciprocal condition number is below d·ε of the solve dtype; for a general
system, LU fails or gives NaN/Inf) is solved again with a ridge ε·mean(diag A)·I, ε = √(machine ε) of the solve
dtype, ×100 per retry, three retries; each retry is counted (`ridge_retries`, in the turn stats and the report).
"""
from __future__ import annotations

import math
import time
from abc import abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Sequence

import torch

from ...core.errors import LifelongError
from ...core.records import EditRecord
from ...models.modules import family_of, layer_index, layer_path, num_layers, oriented
from ..base import EditorHparams, WeightEditor
from .covariance import load_layer_stats
from .mass_vectors import KeyRows, compute_z, key_rows, read_keys
from .templates import sampled_templates

RIDGE_RETRIES = 3


@dataclass
class MassEditHparams(EditorHparams):
    """The z side and layer settings MEMIT and AlphaEdit share (the reference's names)."""

    layers: list[int] = field(default_factory=lambda: [4, 5, 6, 7, 8])  # edited down projections (negative: from the top)
    v_lr: float = 0.5                   # Adam lr of δ
    v_num_grad_steps: int = 25          # compute_z iterations (the last takes no step)
    v_loss_layer: int | None = None     # layer whose output feeds the NLL (None: the last layer); at least L
    clamp_norm_factor: float = 0.75     # ‖δ‖ ≤ clamp·‖h_init‖
    v_weight_decay: float = 0.5         # ·‖δ‖/‖h_init‖² (M3)
    kl_factor: float = 0.0625
    template_seeds: tuple[str, ...] = ("The", "Therefore", "Because", "I", "You")
    template_length: int = 10           # tokens per sampled template, seed (and BOS) included (max_out_len)
    template_top_k: int = 5
    template_seed: int | None = None    # None: the run's seed (EditContext.seed)
    missing_subject: Literal["fallback", "error"] = "fallback"   # no subject in the prompt: last token, or an error
    faithful_weight_decay: bool = True  # M3: v_wd·‖δ‖/‖h_init‖² (the code); false: v_wd·‖δ‖²/‖h_init‖²

    def validate(self) -> None:
        super().validate()
        if not self.layers:
            raise ValueError("layers must name at least one layer")
        if self.v_num_grad_steps < 1 or self.template_length < 1 or self.template_top_k < 1:
            raise ValueError("v_num_grad_steps, template_length and template_top_k must be >= 1")
        for name in ("v_lr", "clamp_norm_factor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("v_weight_decay", "kl_factor"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


@contextmanager
def frozen(model):
    """No parameter requires grad inside the block (δ is the only leaf), eval mode; both restored after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    training = model.training
    for p, _ in flags:
        p.requires_grad_(False)
    model.eval()
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(training)


def safe_solve(a: torch.Tensor, b: torch.Tensor, *, symmetric: bool) -> tuple[torch.Tensor, int]:
    """x with a·x = b, and the number of ridge retries it took (module docstring). Raises LifelongError."""
    eps = math.sqrt(torch.finfo(a.dtype).eps)
    scale = float(a.diagonal().mean().abs()) or 1.0
    eye = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    for retry in range(RIDGE_RETRIES + 1):
        system = a if retry == 0 else a + (eps * 100 ** (retry - 1) * scale) * eye
        if symmetric:
            chol, info = torch.linalg.cholesky_ex(system)
            pivots = chol.diagonal()
            rcond = float((pivots.min() / pivots.max()) ** 2) if int(info) == 0 else 0.0
            if int(info) == 0 and rcond >= a.shape[0] * torch.finfo(a.dtype).eps:
                x = torch.cholesky_solve(b, chol)
                if torch.isfinite(x).all():
                    return x, retry
        else:
            x, info = torch.linalg.solve_ex(system, b)
            if int(info) == 0 and torch.isfinite(x).all():
                return x, retry
    raise LifelongError(f"the {tuple(a.shape)} system stays singular after {RIDGE_RETRIES} ridge retries "
                        f"(up to {eps * 100 ** (RIDGE_RETRIES - 1):.1e}·mean diag)")


class MassEditor(WeightEditor):
    """MEMIT's turn with `solve` left to the subclass (module docstring)."""

    hparams_class: ClassVar[type[EditorHparams]] = MassEditHparams
    atomic_turns = True   # a failed turn restores every layer it wrote

    def __init__(self, model, tokenizer, hparams: MassEditHparams, context):
        super().__init__(model, tokenizer, hparams, context)
        self.family = family_of(model)
        self.layer_ids = [layer_index(model, layer) for layer in hparams.layers]
        if self.layer_ids != sorted(set(self.layer_ids)):
            raise LifelongError(f"{self.name}: layers {hparams.layers} must be distinct and increasing "
                                f"(as indices {self.layer_ids})")
        self.paths = [layer_path(model, layer) for layer in self.layer_ids]
        for path in self.paths:
            self.track(path)
        self.z_layer = self.layer_ids[-1]
        top = num_layers(model) - 1 if hparams.v_loss_layer is None else layer_index(model, hparams.v_loss_layer)
        self.loss_layer = max(top, self.z_layer)        # the reference: max(v_loss_layer, L)
        self.templates: list[list[str]] | None = None   # [["{}"], sampled], from the unedited model
        self.stats_meta: dict[str, dict] = {}
        self.last_deltas: dict[str, torch.Tensor] = {}  # the latest turn's Δ per module (d_out × d_in), on CPU
        self._prepared = False
        self.load_extra_state({})

    # -- what a subclass provides ------------------------------------------------------------------
    @abstractmethod
    def solve(self, index: int, path: str, keys: torch.Tensor, resid: torch.Tensor) -> torch.Tensor:
        """Δ (d_out × d_in) for the turn's `index`-th layer, from K (d_in × n) and R (d_out × n), both fp32."""

    def prepare(self) -> None:
        """Called once before the first turn (load statistics, build projectors)."""

    def after_turn(self, rows: KeyRows) -> None:
        """Called after every layer is written; an exception here still rolls the turn back."""

    def layer_stats(self, path: str) -> torch.Tensor:
        """E[k kᵀ] of `path`'s input from the run's stats folder (fp32, on the weight's device)."""
        moment, meta = load_layer_stats(self.context.stats_dir, path, self.model,
                                        device=self.edited[path].weight.device)
        self.stats_meta[path] = {k: meta.get(k) for k in ("corpus", "texts", "tokens", "dtype")}
        return moment.float()

    # -- the turn ------------------------------------------------------------------------------------
    def edit_turn(self, records: Sequence[EditRecord]) -> dict[str, float]:
        if not records:
            return {"edits": 0.0}
        hp: MassEditHparams = self.hparams
        start = time.perf_counter()
        self._ready()
        before = {path: self.edited[path].weight.detach().clone() for path in self.paths}
        retries_before = self.ridge_retries
        stats: dict[str, float] = {}
        try:
            with frozen(self.model):
                rows = key_rows(self.tokenizer, records, self.templates, hp.missing_subject)
                flat = [t for group in self.templates for t in group]
                results = [compute_z(self.model, self.tokenizer, self.family, r, flat, hp, self.z_layer,
                                     self.loss_layer, hp.missing_subject) for r in records]
                zs = torch.stack([r.z for r in results])                          # [n, d_model]
                bad = [i for i, r in enumerate(results) if not torch.isfinite(r.z).all()]
                if bad:
                    raise LifelongError(f"{self.name}: z of record {bad[0]} ({records[bad[0]].prompt!r}) at layer "
                                        f"{self.z_layer} is not finite")
                z_seconds = time.perf_counter() - start
                deltas = {}
                for i, (layer, path) in enumerate(zip(self.layer_ids, self.paths)):
                    keys, cur = read_keys(self.model, self.tokenizer, self.family, rows, [path], self.z_layer)
                    resid = (zs - cur).T / (len(self.paths) - i)                 # d_out × n
                    delta = self._solve_layer(i, layer, path, keys[path].T, resid)
                    self._write(path, delta)
                    deltas[path] = delta
                    stats[f"delta_norm_L{layer}"] = float(delta.norm())
                    stats[f"z_error_L{layer}"] = float((zs - cur).norm(dim=1).mean())
                self.after_turn(rows)
        except BaseException:
            with torch.no_grad():
                for path, weight in before.items():
                    self.edited[path].weight.copy_(weight)
            self.ridge_retries = retries_before
            raise
        self.last_deltas = {p: d.detach().cpu() for p, d in deltas.items()}
        self.fallbacks += rows.fallbacks
        self.edits_done += len(records)
        return {"loss": sum(r.loss for r in results) / len(results),
                "z_iterations": sum(r.iterations for r in results) / len(results),
                "delta_ratio": sum(r.delta_ratio for r in results) / len(results),
                "clamp_hits": float(sum(r.clamp_hits for r in results)),
                "subject_fallbacks": float(rows.fallbacks), "ridge_retries": float(self.ridge_retries - retries_before),
                **stats, "z_seconds": z_seconds, "seconds": time.perf_counter() - start}

    def _solve_layer(self, i: int, layer: int, path: str, keys: torch.Tensor, resid: torch.Tensor) -> torch.Tensor:
        where = f"{self.name}: layer {layer} ({path})"
        try:
            delta = self.solve(i, path, keys, resid)
        except LifelongError as exc:
            raise LifelongError(f"{where}: the solve failed: {exc}; the turn was rolled back") from exc
        except RuntimeError as exc:     # torch.linalg errors, out of memory
            raise LifelongError(f"{where}: the solve failed ({type(exc).__name__}: {exc}); the turn was rolled back") from exc
        if not torch.isfinite(delta).all():
            raise LifelongError(f"{where}: the update Δ has NaN/Inf entries; the turn was rolled back")
        return delta

    @torch.no_grad()
    def _write(self, path: str, delta: torch.Tensor) -> None:
        """W += Δ in the module's own layout, cast to the weight's dtype (bitwise W + Δ)."""
        weight = self.edited[path].weight
        weight.add_(oriented(self.edited[path], delta.T).to(device=weight.device, dtype=weight.dtype))

    def _ready(self) -> None:
        hp: MassEditHparams = self.hparams
        if self.templates is None:
            seed = self.context.seed if hp.template_seed is None else hp.template_seed
            with frozen(self.model), torch.no_grad():
                sampled = sampled_templates(self.model, self.tokenizer, hp.template_seeds,
                                            max_length=hp.template_length, top_k=hp.template_top_k, seed=seed)
            self.templates = [["{}"], sampled]
        if not self._prepared:
            self.prepare()
            self._prepared = True

    def solve_system(self, a: torch.Tensor, b: torch.Tensor, *, symmetric: bool) -> torch.Tensor:
        """`safe_solve`, counting its ridge retries."""
        x, retries = safe_solve(a, b, symmetric=symmetric)
        self.ridge_retries += retries
        return x

    # -- state ---------------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {"templates": self.templates, "subject_fallbacks": self.fallbacks, "ridge_retries": self.ridge_retries}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """`{}` (reset) zeroes the counters and keeps the templates (a function of the unedited model)."""
        templates = state.get("templates")
        if templates is not None:
            self.templates = [list(group) for group in templates]
        self.fallbacks = int(state.get("subject_fallbacks", 0))
        self.ridge_retries = int(state.get("ridge_retries", 0))

    def report(self) -> dict[str, Any]:
        return {**super().report(), "layers": self.layer_ids, "z_layer": self.z_layer, "loss_layer": self.loss_layer,
                "templates": self.templates, "subject_fallbacks": self.fallbacks,
                "ridge_retries": self.ridge_retries, "layer_stats": self.stats_meta,
                "faithful_weight_decay": self.hparams.faithful_weight_decay}
