"""WISE (Wang et al., NeurIPS 2024): a side memory at one FFN value projection, routed by activation.

Spec: shared/specs/wise.md. The editor (an `AdapterEditor`) installs a `WiseAdapter` (memory.py) in
place of one projection; the main memory (the original module) is never written. Each edit trains the current
shard `w_cur` with SGD under a per-shard random gradient mask on 11 template-augmented rows of
"prompt target" plus one irrelevant row from `context.locality_pool` (the paper's D_irr, row i of the
stream uses pool[i % len(pool)]). Loss = target CE + margin loss on the activation score Δ. Shards are
stored every `save_freq` edits and TIES-merged every `merge_freq` edits (common/merging.py); inference routes
per sequence (WISE-Retrieve: top-1 over per-memory thresholds; WISE-Merge: merged vs current shard).

Defaults reproduce the reference code (and so the paper's numbers) including its code-only
behaviours, each a named option; `CLEAN_VARIANT` lists the cleaned-up settings. Real bugs are fixed
unconditionally: B1 (the adapter persists across edits), B2 (routing never merges; `finalize()` does
Merge mode's final merge, explicitly), B4 (Conv1D memories), B6 (per-row routing, pads excluded),
B7 (any numeric norm_constraint applies), B8 (linear/slerp use every shard); B3 (no bias on the side
path of a biased Linear) is fixed by default (`side_bias`), false reproduces it.
"""
from __future__ import annotations

import math
import time
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ...core.errors import LifelongError
from ...core.records import EditRecord
from ...models.modules import activation, family_of
from ..base import AdapterEditor
from ..common.templates import greedy_templates
from .cache import UpperStack
from .data import TrainRows, build_rows, resolve_module
from .hparams import CLEAN_VARIANT, WiseHparams
from .memory import EarlyStopper, WiseAdapter, margin_loss, random_mask


class _NonFinite(Exception):
    pass


class WiseEditor(AdapterEditor):
    name = "wise"
    hparams_class = WiseHparams

    def __init__(self, model, tokenizer, hparams: WiseHparams, context):
        self.layer_index, path = resolve_module(model, hparams)
        super().__init__(model, tokenizer, hparams, context, path)
        self.family = family_of(model)
        self.act = activation(model)
        self.seed = hparams.mask_seed if hparams.mask_seed is not None else int(context.seed)
        self.templates: list[str] | None = None   # run state, generated once per editor from the model
        self.stream_index = 0                     # edits seen by this editor (survives reset): picks D_irr rows
        self.timing = {"edit": 0.0, "inner": 0.0, "record": 0.0, "templates": 0.0, "steps": 0}
        self.clear_run_state()
        self.install()

    # -- installation ---------------------------------------------------------------------------
    def make_adapter(self) -> WiseAdapter:
        hp: WiseHparams = self.hparams
        return WiseAdapter(self.original, self.act, retrieve=hp.retrieve, act_ratio=hp.act_ratio,
                           side_bias=hp.side_bias, max_pool_len=hp.max_pool_len,
                           best_from_current=hp.best_from_current, train_pool_pads=hp.train_pool_pads)

    def install(self) -> None:
        if self.adapter is None:
            super().install()
            self.upper = UpperStack(self.model, self.family, self.layer_index, self.path, self.adapter)

    def clear_run_state(self) -> None:
        super().clear_run_state()
        self.generator = torch.Generator().manual_seed(self.seed)
        self.edit_scores: list[float] = []
        self.pool_reuses = 0
        self.finalized = False

    # -- editing --------------------------------------------------------------------------------
    def edit_turn(self, records: Sequence[EditRecord]) -> dict[str, float]:
        self.install()
        start = time.perf_counter()
        stats = [self._edit_one(r) for r in records]
        out = {k: float(sum(s[k] for s in stats) / len(stats)) for k in stats[0]} if stats else {}
        out.update(seconds=time.perf_counter() - start, memories=float(len(self.adapter.memories)),
                   threshold=float(self.adapter.act_ratio * self.adapter.cur_min), pool_reuses=float(self.pool_reuses))
        return out

    def _irrelevant(self) -> tuple[tuple[str, str], bool]:
        pool = self.context.locality_pool
        i = self.stream_index
        if not pool:
            raise LifelongError("WISE needs context.locality_pool (irrelevant (prompt, answer) pairs, the paper's "
                                "D_irr), but it is empty; the runner must pass e.g. world.locality_pool()")
        if i >= len(pool) and self.hparams.pool_policy == "strict":
            raise LifelongError(f"WISE: locality_pool has {len(pool)} pairs but edit #{i + 1} needs its own "
                                "(pool_policy=strict); pass a larger pool or set pool_policy: cycle")
        return tuple(pool[i % len(pool)]), i >= len(pool)

    def _device(self) -> torch.device:
        return self.original.weight.device

    def _new_mask(self) -> torch.Tensor:
        ad = self.adapter
        return random_mask(ad.w_cur.shape, self.hparams.mask_ratio, self.generator).to(self._device())

    def _edit_one(self, record: EditRecord) -> dict[str, float]:
        hp: WiseHparams = self.hparams
        ad = self.adapter
        t0 = time.perf_counter()
        if self.templates is None:
            ad.mode = "infer"
            self.templates = greedy_templates(self.model, self.tokenizer, hp.template_seeds, hp.template_lengths)
            self.timing["templates"] += time.perf_counter() - t0
        irrelevant, reused = self._irrelevant()
        batch = build_rows(self.tokenizer, self.templates, record.prompt, record.target, irrelevant, hp.train_padding)
        undo = (ad.w_cur.detach().clone(), ad.mask, self.generator.get_state())
        if ad.edit_count % hp.save_freq == 0:
            ad.mask = self._new_mask()
        try:
            out = self._optimise(batch)
        except _NonFinite as exc:  # leave no trace: the edit is not recorded
            ad.w_cur, ad.mask = undo[0], undo[1]
            self.generator.set_state(undo[2])
            raise LifelongError(f"WISE edit {record.prompt!r} -> {record.target!r}: {exc}; the edit was not "
                                "recorded (lower edit_lr, check the inputs)") from None
        self._record(out.pop("score_tensor"))
        self.pool_reuses += int(reused)
        ad.edit_count += 1
        self.edits_done += 1
        self.stream_index += 1
        self.finalized = False
        if ad.edit_count % hp.save_freq == 0:
            self._save_shard()
        if ad.edit_count % hp.merge_freq == 0:
            self._merge()
        self.timing["edit"] += time.perf_counter() - t0
        self.timing["steps"] += out["steps"]
        return {**out, "score": self.edit_scores[-1], "pool_reused": float(reused)}

    def _optimise(self, batch: TrainRows) -> dict[str, Any]:
        """The inner loop of one edit (§1.6). Returns its statistics and the Δ of the recording forward."""
        hp: WiseHparams = self.hparams
        ad = self.adapter
        dev = self._device()
        inputs = {"input_ids": batch.input_ids.to(dev), "attention_mask": batch.attention_mask.to(dev)}
        if self.family.absolute_positions:
            # Each token at its unpadded position. Otherwise left padding shifts GPT-2's learned positions
            # by the pad count and the edit is learnt where it is never asked (a reference bug for such
            # models). Rotary models see the same relative offsets either way, so they keep the reference's call.
            inputs["position_ids"] = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        rows, cols, targets = batch.rows.to(dev), batch.cols.to(dev), batch.targets.to(dev)
        was_training = self.model.training
        self.model.eval()
        ad.mode = "train"
        w, w0 = ad.w_cur, ad.weight.detach()
        recorded = None
        try:
            with torch.enable_grad():
                t1 = time.perf_counter()
                cache = self.upper.record(inputs) if hp.prefix_cache else None
                t2 = time.perf_counter()
                self.timing["record"] += t2 - t1
                w.requires_grad_(True)
                opt = torch.optim.SGD([w], lr=hp.edit_lr, momentum=0.0,
                                      weight_decay=hp.weight_decay if hp.decay_masked_entries else 0.0)
                stopper = EarlyStopper(hp.early_stop_delta, hp.early_stop_loss)
                steps, stopped = 0, False
                self.last_losses: list[float] = []
                for i in range(hp.n_iter):
                    ft, act_l, scores = self._losses(inputs, rows, cols, targets, batch, cache)
                    loss = ft + act_l
                    value = float(loss.detach())
                    if not math.isfinite(value) or not bool(torch.isfinite(scores.detach()).all()):
                        raise _NonFinite(f"non-finite loss or activation score at step {i}")
                    self.last_losses.append(value)
                    if stopper.should_stop():   # this forward only records Δ; no update
                        recorded, stopped = scores.detach(), True
                        break
                    if i == hp.n_iter - 1:      # recorded before the last update, as in the code
                        recorded = scores.detach()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    with torch.no_grad():
                        if not hp.decay_masked_entries:   # clean: decay only what the mask trains
                            w.grad.add_(w, alpha=hp.weight_decay)
                        w.grad.mul_(ad.mask)
                    opt.step()
                    steps += 1
                    stopper.update(value)
                    if hp.norm_constraint is not None:
                        with torch.no_grad():
                            w.copy_(torch.maximum(torch.minimum(w, w0 + hp.norm_constraint), w0 - hp.norm_constraint))
                if not bool(torch.isfinite(w.detach()).all()):
                    raise _NonFinite("the side memory became non-finite")
                self.timing["inner"] += time.perf_counter() - t2
        finally:
            w.requires_grad_(False)
            w.grad = None
            ad.mode = "infer"
            ad.train_scores = None
            self.model.train(was_training)
        return {"loss": value, "ft_loss": float(ft.detach()), "act_loss": float(act_l.detach()), "steps": steps,
                "early_stopped": float(stopped), "score_tensor": recorded}

    def _losses(self, inputs, rows, cols, targets, batch: TrainRows, cache):
        hp: WiseHparams = self.hparams
        if cache is not None:
            logits, scores = self.upper.run(cache, self.adapter.w_cur, rows, cols,
                                            keep_rows=batch.input_ids.shape[0] - 1)
        else:
            logits = self.model(**inputs, use_cache=False).logits[rows, cols]
            scores = self.adapter.train_scores
        n_in = batch.input_ids.shape[0] - 1
        ce = F.cross_entropy(logits.float(), targets, reduction="none")
        per_row = torch.zeros(n_in, dtype=ce.dtype, device=ce.device).index_add(0, rows, ce)
        ft = (per_row / (batch.n_target + (1 if hp.ce_plus_one else 0))).mean()
        act_l = margin_loss(scores[:-1], scores[-1], hp.alpha, hp.beta, hp.gamma, hp.margin_reduction)
        return ft, act_l, scores

    def _record(self, scores: torch.Tensor) -> None:
        """The per-edit score: mean Δ of the in-scope rows on this forward; the shard keeps the min."""
        s = float(scores[:-1].detach().mean())
        if not math.isfinite(s):
            raise LifelongError(f"WISE: non-finite activation score {s}; refusing to record a NaN threshold")
        self.edit_scores.append(s)
        self.adapter.cur_min = min(self.adapter.cur_min, s)

    # -- sharding and merging -------------------------------------------------------------------
    def _save_shard(self) -> None:
        self.adapter.save_shard()

    def _merge(self) -> None:
        hp: WiseHparams = self.hparams
        self.adapter.merge(hp.merge_alg, hp.merge_freq // hp.save_freq, hp.merge_weights, hp.densities,
                           hp.remerge_weights, hp.retrim_merged, self.generator)

    @torch.no_grad()
    def finalize(self) -> None:
        """Merge mode's final merge (the reference did it lazily on the first forward after editing):
        if at least save_freq edits were made, the current shard (if trained) joins the memories and
        they are merged. Retrieve mode: nothing to do. Idempotent until the next edit."""
        ad = self.adapter
        if ad is None or self.finalized:
            return
        self.finalized = True
        if ad.retrieve or ad.edit_count < self.hparams.save_freq:
            return
        if not torch.equal(ad.w_cur, ad.weight):
            ad.memories.append(ad.w_cur.detach().clone())
            ad.w_cur = ad.weight.detach().clone()
        if ad.memories:
            self._merge()

    # -- checkpoints ----------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        ad = self.adapter
        cpu = lambda t: None if t is None else t.detach().to("cpu", copy=True)  # noqa: E731
        state = {"templates": self.templates, "stream_index": self.stream_index, "pool_reuses": self.pool_reuses,
                 "edit_scores": list(self.edit_scores), "finalized": self.finalized,
                 "generator": self.generator.get_state(), "installed": ad is not None}
        if ad is not None:
            state.update(w_cur=cpu(ad.w_cur), mask=cpu(ad.mask), memories=[cpu(m) for m in ad.memories],
                         mem_stats=list(ad.mem_stats), merged=cpu(ad.merged), cur_min=ad.cur_min,
                         edit_count=ad.edit_count, merge_count=ad.merge_count)
        return state

    @torch.no_grad()
    def load_extra_state(self, state: dict[str, Any]) -> None:
        stats = [float(x) for x in (state.get("cur_min", 0.0), *state.get("mem_stats", []),
                                    *state.get("edit_scores", []))]
        if not all(math.isfinite(x) for x in stats):
            raise LifelongError("WISE checkpoint holds non-finite thresholds/statistics; refusing to load it")
        shape = tuple(self.original.weight.shape)
        if state.get("w_cur") is not None and tuple(state["w_cur"].shape) != shape:
            raise LifelongError(f"checkpoint side memory has shape {tuple(state['w_cur'].shape)}, "
                                f"{self.path} has {shape}")
        self.uninstall()
        self.clear_run_state()
        if not state:
            return
        self.templates = state.get("templates", self.templates)
        self.stream_index = int(state.get("stream_index", self.stream_index))
        self.pool_reuses = int(state.get("pool_reuses", 0))
        self.edit_scores = [float(s) for s in state.get("edit_scores", [])]
        self.finalized = bool(state.get("finalized", False))
        self.generator.set_state(state["generator"])
        if not state.get("installed", True):
            return
        self.install()
        ad, dev = self.adapter, self._device()
        def to(t):
            return None if t is None else t.to(dev, t.dtype if t.dtype == torch.bool else ad.weight.dtype, copy=True)

        ad.w_cur, ad.mask, ad.merged = to(state["w_cur"]), to(state["mask"]), to(state["merged"])
        ad.memories = [to(m) for m in state["memories"]]
        ad.mem_stats = [float(s) for s in state["mem_stats"]]
        ad.cur_min = float(state["cur_min"])
        ad.edit_count, ad.merge_count = int(state["edit_count"]), int(state["merge_count"])

    def thresholds(self) -> dict[str, Any]:
        return self.adapter.thresholds() if self.adapter is not None else {}

    def report(self) -> dict[str, Any]:
        """Where the memory lives, fallbacks taken, state and speed (recorded in summary.json)."""
        hp: WiseHparams = self.hparams
        ad = self.adapter
        return super().report() | {
            "module": self.path, "layer": self.layer_index, "mode": "retrieve" if hp.retrieve else "merge",
            "pool_size": len(self.context.locality_pool), "pool_reuses": self.pool_reuses,
            "pool_fallback": "cycle: pool[i % len(pool)] reused" if self.pool_reuses else "none",
            "code_only": {k: getattr(hp, k) for k in CLEAN_VARIANT}, "templates": self.templates,
            "memories": len(ad.memories) if ad else 0, "merges": ad.merge_count if ad else 0,
            "thresholds": self.thresholds(), "timing": dict(self.timing)}
