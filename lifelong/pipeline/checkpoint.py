"""Checkpoints of a run: everything needed to continue it exactly, as tensors plus JSON (core/state.py).

A checkpoint holds the run's identity (what must match to resume), the editor's state, the position
(block, turn), the timers, the pre-edit scores, the per-edit rows and curve points so far, and every
RNG state (Python, NumPy, torch CPU and CUDA). It loads with `torch.load(weights_only=True)`: a
checkpoint file can never run code.
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..core import state as tree
from ..core.errors import LifelongError
from ..eval.evaluate import Predictions, Scores


@dataclass
class RunState:
    """Where a run stands; what a checkpoint saves besides the editor."""

    block: int = 0
    turn: int = 0
    edit_seconds: float = 0.0
    eval_seconds: float = 0.0
    pre: Scores | None = None
    heldout: dict[str, Any] | None = None   # the run's held-out set (eval/retention.HeldoutSet, as a dict)
    rows: list[pd.DataFrame] = field(default_factory=list)
    curve: list[dict[str, Any]] = field(default_factory=list)


def save(path: Path, identity: dict[str, Any], editor, state: RunState) -> None:
    tree.save_tree(path, {
        "identity": identity, "editor_state": editor.state_dict(), "block": state.block, "turn": state.turn,
        "edit_seconds": state.edit_seconds, "eval_seconds": state.eval_seconds,
        "pre": None if state.pre is None else _scores_tree(state.pre), "heldout": state.heldout,
        "rows": [frame.to_dict("list") for frame in state.rows], "curve": state.curve, "rng": rng_state()})


def load(path: Path, identity: dict[str, Any], editor) -> RunState:
    """Restore the editor and the RNGs from `path`; refuse a checkpoint of another run, naming what differs."""
    ckpt = tree.load_tree(path)
    have = ckpt.get("identity") or {}
    diff = {k: (have.get(k), identity[k]) for k in identity if have.get(k) != identity[k]}
    if diff:
        details = "; ".join(f"{k}: checkpoint has {a!r}, this run has {b!r}" for k, (a, b) in diff.items())
        raise LifelongError(f"{path} belongs to a different run and cannot be resumed ({details}). "
                            "Remove it or choose another --out.")
    editor.load_state_dict(ckpt["editor_state"])
    set_rng_state(ckpt["rng"])
    return RunState(block=ckpt["block"], turn=ckpt["turn"], edit_seconds=ckpt["edit_seconds"],
                    eval_seconds=ckpt["eval_seconds"], pre=None if ckpt["pre"] is None else _scores(ckpt["pre"]),
                    heldout=ckpt.get("heldout"),
                    rows=[pd.DataFrame(rows) for rows in ckpt["rows"]], curve=ckpt["curve"])


def _scores_tree(scores: Scores) -> dict[str, Any]:
    fields = {f.name: getattr(scores, f.name) for f in dataclasses.fields(scores)}
    return fields | {k: {"flat": fields[k].flat, "offsets": fields[k].offsets} for k in _PREDICTIONS}


def _scores(saved: dict[str, Any]) -> Scores:
    return Scores(**{**saved, **{k: Predictions(saved[k]["flat"], saved[k]["offsets"]) for k in _PREDICTIONS
                                 if saved.get(k) is not None}})


_PREDICTIONS = ("locality_predictions", "lists_predictions")


# -- random number generators -------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)   # seeds every CUDA device too


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
