"""GRACE (Hartvigsen et al., NeurIPS 2023): a codebook adapter at one projection; the weights never change.

Spec: shared/specs/baselines.md §2. Each edit (one record at a time, G4) is:
  1. the query: the wrapped module's input at the prompt's last token (one forward that stops at the module);
  2. the codebook step (codebook.py): add / split / expand / keep, which names the entry to train;
  3. `n_iter` steps of Adam(lr `edit_lr`) on that entry's value alone (the reference rebuilds its optimiser for
     every edit, and the other values get no gradient), loss = cross-entropy on the target tokens of
     prompt + target, everything else frozen.
A new value starts `cold` (U[0,1) from a generator seeded with the run's seed) or `warm` (the wrapped module's
output at the key token).

Fixed: G1 (labels appended, aligned with keys), G2 (the key position is supplied per input row: the scorer
calls `set_prompt_ends` before each forward; the editor sets it for its own training passes), G4 (turns of
several records are edited one record after another). Reproduced, named: G3 (`faithful_split`), the label
comparison by the mean of label ids (`label_match: mean`).
"""
from __future__ import annotations

import math
import time
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ...core.errors import LifelongError
from ...core.records import EditRecord
from ...models.modules import logits_at, shape_in_out
from ...models.tokenization import IGNORE, answer_ids, encode_pair
from ..base import AdapterEditor
from ..common import hooks
from .adapter import GraceAdapter
from .codebook import COUNTERS, Codebook
from .hparams import GraceHparams, resolve_module


class GraceEditor(AdapterEditor):
    name = "grace"
    hparams_class = GraceHparams

    def __init__(self, model, tokenizer, hparams: GraceHparams, context):
        self.layer_index, path = resolve_module(model, hparams)
        super().__init__(model, tokenizer, hparams, context, path)
        self.d_in, self.d_out = shape_in_out(self.original)
        self.seed = hparams.value_seed if hparams.value_seed is not None else int(context.seed)
        self.clear_run_state()
        self.install()

    # -- installation ---------------------------------------------------------------------------
    def make_adapter(self) -> GraceAdapter:
        hp: GraceHparams = self.hparams
        codebook = Codebook(hp.eps, self.d_in, self.d_out, expand=hp.eps_expand, faithful_split=hp.faithful_split,
                            label_match=hp.label_match, device=self._device())
        return GraceAdapter(self.original, codebook, hp.replacement)

    def clear_run_state(self) -> None:
        super().clear_run_state()
        self.generator = torch.Generator().manual_seed(self.seed)
        self.last_losses: list[float] = []
        self.seconds = 0.0

    def set_prompt_ends(self, ends: torch.Tensor | None) -> None:
        if self.adapter is not None:
            self.adapter.prompt_ends = ends

    def _device(self) -> torch.device:
        return self.original.weight.device

    @property
    def codebook(self) -> Codebook | None:
        return self.adapter.codebook if self.adapter is not None else None

    # -- editing --------------------------------------------------------------------------------
    def edit_turn(self, records: Sequence[EditRecord]) -> dict[str, float]:
        self.install()
        start = time.perf_counter()
        before = dict(self.codebook.counts)
        losses = [self._edit_one(r) for r in records]
        self.seconds += time.perf_counter() - start
        counts = self.codebook.counts
        return {"loss": float(sum(losses) / len(losses)) if losses else float("nan"),
                "codebook_size": float(len(self.codebook)),
                **{name: float(counts[name] - before[name]) for name in COUNTERS.values()},
                "seconds": time.perf_counter() - start}

    def _inputs(self, record: EditRecord):
        """The training row (prompt + target, labels pre-shifted), its key column and its reference label row."""
        prompt_ids = self.tokenizer(record.prompt)["input_ids"]
        enc = encode_pair(self.tokenizer, record.prompt, record.target)
        label = [IGNORE] * len(prompt_ids) + answer_ids(self.tokenizer, record.target)
        dev = self._device()
        ids = torch.tensor([enc.input_ids], device=dev)
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        return inputs, torch.tensor([enc.labels], device=dev), len(prompt_ids) - 1, label

    @torch.no_grad()
    def _query(self, inputs: dict[str, torch.Tensor], key: int) -> torch.Tensor:
        """The wrapped module's input at the key token: a forward pass that stops at the module."""
        seen: dict[str, torch.Tensor] = {}
        handle = self.adapter.register_forward_pre_hook(lambda module, args: seen.__setitem__("x", args[0]))
        try:
            with hooks.stop_before(self.adapter):
                self.model(**inputs, use_cache=False)
        finally:
            handle.remove()
        if "x" not in seen:
            raise LifelongError(f"GRACE: the forward pass never reached {self.path}")
        return seen["x"][0, key].detach()

    @torch.no_grad()
    def _new_value(self, query: torch.Tensor) -> torch.Tensor:
        if self.hparams.val_init == "warm":   # the wrapped module's own output at the key token
            return self.original(query[None].to(self.original.weight.dtype))[0].float()
        return torch.rand(self.d_out, generator=self.generator)

    def _edit_one(self, record: EditRecord) -> float:
        hp: GraceHparams = self.hparams
        ad, book = self.adapter, self.codebook
        inputs, labels, key, label = self._inputs(record)
        target_pos = labels != IGNORE
        targets = labels[target_pos]
        was_training = self.model.training
        self.model.eval()
        rng = self.generator.get_state()
        ad.prompt_ends = torch.tensor([key], device=self._device())
        undo = None
        try:
            query = self._query(inputs, key)
            index, action, undo = book.update(query, label, lambda: self._new_value(query))
            value = book.values[index].detach().clone().requires_grad_(True)
            ad.train_index, ad.train_value = index, value
            opt = torch.optim.Adam([value], lr=hp.edit_lr)
            self.last_losses = []
            with torch.enable_grad():
                for _ in range(hp.n_iter):
                    logits = logits_at(self.model, inputs, target_pos)
                    loss = F.cross_entropy(logits.float(), targets)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    self.last_losses.append(float(loss.detach()))
            if not all(math.isfinite(v) for v in self.last_losses) or not bool(torch.isfinite(value).all()):
                raise LifelongError(f"GRACE edit {record.prompt!r} -> {record.target!r}: non-finite loss or value; "
                                    "the edit was not recorded (lower edit_lr, check the inputs)")
            book.set_value(index, value)
            undo = None
        finally:
            if undo is not None:   # leave no trace of a failed edit
                book.restore(undo)
                self.generator.set_state(rng)
            ad.train_index = ad.train_value = None
            ad.prompt_ends = None
            self.model.train(was_training)
        self.edits_done += 1
        return self.last_losses[-1]

    # -- checkpoints ----------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {"installed": self.adapter is not None, "generator": self.generator.get_state(),
                "seconds": self.seconds, "codebook": self.codebook.state() if self.adapter is not None else None}

    @torch.no_grad()
    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.uninstall()
        self.clear_run_state()
        if not state:   # freshly reset, as reset() leaves it; the next edit installs a new adapter
            return
        self.generator.set_state(state["generator"])
        self.seconds = float(state.get("seconds", 0.0))
        if state.get("installed", True):
            self.install()
            self.codebook.load(state.get("codebook") or {})

    def report(self) -> dict[str, Any]:
        """Where the codebook lives, its size and history, and the choices that shape it (summary.json)."""
        hp: GraceHparams = self.hparams
        book = self.codebook
        radii = book.radii.float().cpu() if book is not None and len(book) else None
        return super().report() | {
            "module": self.path, "layer": self.layer_index, "codebook_size": len(book) if book is not None else 0,
            **(dict(book.counts) if book is not None else {name: 0 for name in COUNTERS.values()}),
            "eps0": hp.eps, "replacement": hp.replacement, "val_init": hp.val_init, "eps_expand": hp.eps_expand,
            "label_match": hp.label_match, "faithful_split": hp.faithful_split,
            "key_position": "each input row's last prompt token, supplied by the scorer (G2 fixed); without it, "
                            "the last real token of a full pass and none for a cached step",
            "radius_min": float(radii.min()) if radii is not None else None,
            "radius_max": float(radii.max()) if radii is not None else None,
            "seconds": round(self.seconds, 3)}
