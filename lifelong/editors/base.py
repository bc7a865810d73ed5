"""The one Editor interface every method implements, and the two bases that implement most of it.

An editor receives edits in *turns* (`edit_turn(records)`, `hparams.turn_size` records at a time),
owns whatever state it needs, and can
  * `finalize()` after the last edit (e.g. WISE's final merge; never triggered by evaluation),
  * `reset()` back to the unedited model (the WISE protocol rolls back between blocks),
  * `state_dict()` / `load_state_dict()`: everything needed to continue editing (checkpoints, saved
    editors); a tree of dicts, lists, numbers, strings and tensors (`core/state.py` saves it),
  * `report()`: what the run's summary records about the editor,
  * `set_prompt_ends(ends)`: where each input row's prompt ends, told by the scorer before a forward
    pass (a no-op unless the method reads the prompt's last token at inference, as GRACE does).

Two bases cover the two ways of editing:
  * `WeightEditor`: deltas written into weights in place. Call `self.track(path)` for each module
    changed; reset, checkpoints and saving come for free. Extra state goes through
    `extra_state()` / `load_extra_state()`.
  * `AdapterEditor`: a side module installed in place of one module; the base weights are never
    written. Implement `make_adapter()`; install, remove, the attention-mask hook, reset and
    checkpoints come for free. Run state goes through `extra_state()` / `load_extra_state()`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
from torch import nn

from ..core.errors import LifelongError
from ..core.records import EditRecord
from ..models.families import Family
from ..models.loading import fingerprint
from ..models.modules import check_projection, get_module
from .common import adapters, hooks


@dataclass
class EditorHparams:
    """Base hyperparameters. Subclasses add theirs; unknown keys in params.yaml are errors."""

    turn_size: int = 1  # edits per turn

    def validate(self) -> None:
        if self.turn_size < 1:
            raise ValueError(f"turn_size must be >= 1, got {self.turn_size}")


@dataclass
class EditContext:
    """What an editor may know about the run besides the model: no process-global state anywhere."""

    family: Family
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    # (prompt, answer) pairs an editor may train against as "irrelevant" text (WISE's D_irr).
    locality_pool: Sequence[tuple[str, str]] = ()
    model_fingerprint: str = ""
    # where layer statistics (second moments of keys, common/covariance.py) are cached, if anywhere
    stats_dir: Path | None = None


class Editor(ABC):
    name: ClassVar[str]
    hparams_class: ClassVar[type[EditorHparams]] = EditorHparams
    # True where a turn that raises (even out of memory) leaves the model and the editor exactly as before it, so
    # the runner can checkpoint the completed turns at once (UltraEdit, MEMIT, AlphaEdit roll back).
    atomic_turns: ClassVar[bool] = False

    def __init__(self, model: nn.Module, tokenizer, hparams: EditorHparams, context: EditContext):
        fp = fingerprint(model)
        if context.model_fingerprint and context.model_fingerprint != fp:
            raise LifelongError(f"{self.name}: the model's fingerprint {fp} differs from the run's "
                                f"{context.model_fingerprint}")
        self.model = model
        self.tokenizer = tokenizer
        self.hparams = hparams
        self.context = context
        self.edits_done = 0

    @abstractmethod
    def edit_turn(self, records: Sequence[EditRecord]) -> dict[str, float]:
        """Apply one turn of edits. Returns per-turn statistics (losses, seconds, ...) for logging."""

    def finalize(self) -> None:
        """Called once after the last edit, before the final evaluation."""

    @abstractmethod
    def reset(self) -> None:
        """Back to the unedited model."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue editing, as a tree of plain values and tensors."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        ...

    @abstractmethod
    def modules(self) -> list[str]:
        """Paths of the modules this editor changes or wraps."""

    def set_prompt_ends(self, ends: torch.Tensor | None) -> None:
        """Index of each input row's last prompt token for the next forward pass(es); None: unknown.

        Scorers call it before each model forward (`eval/` functions take it as `prompt_ends=`), so an
        editor that reads the prompt's last token at inference (GRACE's query) knows where it is in every
        row of every batch. The default does nothing: most editors never need it."""

    def report(self) -> dict[str, Any]:
        """What summary.json records about the editor; subclasses add theirs to `super().report()`."""
        return {"editor": self.name, "modules": self.modules(), "edits_done": self.edits_done}

    def artifact_state(self) -> dict[str, Any]:
        """The state saved with an edited model (`editors/artifact.py`); by default the checkpoint state."""
        return self.state_dict()

    def load_artifact_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state)

    def _header(self) -> dict[str, Any]:
        return {"editor": self.name, "hparams": asdict(self.hparams), "edits_done": self.edits_done}

    def _check_header(self, state: dict[str, Any]) -> None:
        if state.get("editor", self.name) != self.name:
            raise LifelongError(f"the saved state is for editor {state.get('editor')!r}, not {self.name!r}")


class WeightEditor(Editor):
    """Edits that change weights in place; `track(path)` each module before changing it."""

    def __init__(self, model: nn.Module, tokenizer, hparams: EditorHparams, context: EditContext):
        super().__init__(model, tokenizer, hparams, context)
        self.edited: dict[str, nn.Module] = {}              # module path -> module
        self.tracked: dict[str, nn.Parameter] = {}          # parameter name ("<path>.weight") -> parameter
        self._originals: dict[str, torch.Tensor] = {}       # parameter name -> its value before any edit

    def track(self, path: str, *, bias: bool = False) -> nn.Module:
        """Register the projection at `path` as edited in place (its weight, and its bias if asked and
        present), for reset and checkpoints."""
        module = check_projection(self.model, path)
        self.edited[path] = module
        for kind in ("weight", "bias") if bias else ("weight",):
            param = getattr(module, kind, None)
            if param is not None:
                self.tracked[f"{path}.{kind}"] = param
                self._originals[f"{path}.{kind}"] = param.detach().to("cpu", copy=True)
        return module

    def modules(self) -> list[str]:
        return list(self.edited)

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the editor's own state; `{}` resets it (called by `reset()`)."""

    @torch.no_grad()
    def reset(self) -> None:
        for name, param in self.tracked.items():
            param.copy_(self._originals[name])
        self.edits_done = 0
        self.load_extra_state({})

    def state_dict(self) -> dict[str, Any]:
        return {**self._header(),
                "weights": {n: p.detach().to("cpu", copy=True) for n, p in self.tracked.items()},
                "extra": self.extra_state()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_header(state)
        unknown = sorted(set(state["weights"]) - set(self.tracked))
        if unknown:
            raise LifelongError(f"the saved state edits {unknown}, but this {self.name} editor edits "
                                f"{sorted(self.tracked)} (different module selection?)")
        for name, tensor in state["weights"].items():
            self.tracked[name].copy_(tensor)
        self.edits_done = int(state["edits_done"])
        self.load_extra_state(state.get("extra", {}))

    def artifact_state(self) -> dict[str, Any]:
        # A saved model holds the edited weights; the originals let `reset()` work after loading it.
        return {**self.state_dict(), "originals": dict(self._originals)}

    def load_artifact_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state)
        for name, tensor in (state.get("originals") or {}).items():
            if name in self._originals:
                self._originals[name] = tensor.detach().to("cpu", copy=True)


class AdapterEditor(Editor):
    """Edits held by a side module installed in place of the module at `self.path`."""

    def __init__(self, model: nn.Module, tokenizer, hparams: EditorHparams, context: EditContext, path: str):
        super().__init__(model, tokenizer, hparams, context)
        if isinstance(get_module(model, path), adapters.Adapter):
            raise LifelongError(f"{path} already holds an adapter; reset() the previous editor first")
        self.path = path
        self.original = check_projection(model, path)
        self.adapter: adapters.Adapter | None = None
        self._hooks: list = []

    @abstractmethod
    def make_adapter(self) -> adapters.Adapter:
        """A fresh side module wrapping `self.original`."""

    def clear_run_state(self) -> None:
        """Forget everything learnt since the last reset (called by `reset()` and before loading state)."""
        self.edits_done = 0

    def modules(self) -> list[str]:
        return [self.path]

    def install(self) -> None:
        if self.adapter is not None:
            return
        self.adapter = self.make_adapter()
        adapters.install(self.model, self.path, self.adapter)
        self._hooks.append(hooks.share_attention_mask(self.model, self.adapter))

    def uninstall(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        if self.adapter is not None:
            adapters.uninstall(self.model, self.path, self.original)
            self.adapter = None

    @torch.no_grad()
    def reset(self) -> None:
        self.uninstall()
        self.clear_run_state()

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the run state (adapter contents); `{}` leaves the editor freshly reset."""

    def state_dict(self) -> dict[str, Any]:
        return {**self._header(), "module": self.path, "fingerprint": fingerprint(self.model),
                "extra": self.extra_state()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_header(state)
        if state.get("module", self.path) != self.path:
            raise LifelongError(f"the saved state edits {state['module']!r}; this editor edits {self.path!r}")
        fp = fingerprint(self.model)
        if state.get("fingerprint", fp) != fp:
            raise LifelongError(f"the saved state was made on model {state['fingerprint']}, this model is {fp}")
        self.load_extra_state(state.get("extra", {}))
        self.edits_done = int(state.get("edits_done", 0))
