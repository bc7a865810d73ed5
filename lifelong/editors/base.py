"""The one Editor interface every method implements.

An editor receives edits in *turns* (`edit_turn(records)`, `hparams.turn_size` records at a time),
owns whatever state it needs (side memories, normalizer statistics, ...), and can
  * `finalize()` after the last edit (e.g. WISE's final merge; never triggered by evaluation),
  * `reset()` back to the unedited model (the WISE protocol rolls back between blocks),
  * `state_dict()` / `load_state_dict()` for checkpoints: everything needed to continue editing.

The base class covers editors that change weights in place: list the edited modules in
`self.edited` (path -> module) and reset/state_dict come for free. Editors with extra state add it
through `extra_state()` / `load_extra_state()`.
"""
from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Sequence

import torch
from torch import nn

from ..modeling import Family
from ..records import EditRecord


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


class Editor(ABC):
    name: ClassVar[str]
    hparams_class: ClassVar[type[EditorHparams]] = EditorHparams

    def __init__(self, model: nn.Module, tokenizer, hparams: EditorHparams, context: EditContext):
        self.model = model
        self.tokenizer = tokenizer
        self.hparams = hparams
        self.context = context
        self.edits_done = 0
        self.edited: dict[str, nn.Module] = {}
        self._originals: dict[str, torch.Tensor] = {}

    # -- what subclasses implement -------------------------------------------------------------
    @abstractmethod
    def edit_turn(self, records: Sequence[EditRecord]) -> dict[str, float]:
        """Apply one turn of edits. Returns per-turn statistics (losses, seconds, ...) for logging."""

    def finalize(self) -> None:
        """Called once after the last edit, before the final evaluation."""

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    # -- shared machinery ----------------------------------------------------------------------
    def track(self, path: str, module: nn.Module) -> None:
        """Register a module whose weight this editor changes in place (for reset and checkpoints)."""
        self.edited[path] = module
        self._originals[path] = module.weight.detach().to("cpu", copy=True)

    @torch.no_grad()
    def reset(self) -> None:
        for path, module in self.edited.items():
            module.weight.copy_(self._originals[path])
        self.edits_done = 0
        self.load_extra_state({})

    def state_dict(self) -> dict[str, Any]:
        return {
            "editor": self.name,
            "hparams": asdict(self.hparams),
            "edits_done": self.edits_done,
            "weights": {p: m.weight.detach().to("cpu", copy=True) for p, m in self.edited.items()},
            "extra": self.extra_state(),
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        for path, tensor in state["weights"].items():
            self.edited[path].weight.copy_(tensor)
        self.edits_done = int(state["edits_done"])
        self.load_extra_state(state.get("extra", {}))


def fingerprint(model: nn.Module) -> str:
    """A short hash of the model's config: saved artefacts and checkpoints refuse other base models."""
    cfg = model.config.to_dict()
    for volatile in ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "architectures"):
        cfg.pop(volatile, None)
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]
