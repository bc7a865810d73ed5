"""The edited-model artefact of WISE: a directory holding everything the edit added, never base weights.

    wise.json       format, editor, module path, hparams, thresholds, the base model's fingerprint
                    (`fingerprint(model)`) and its config (to say what differs on a mismatch)
    wise_state.pt   the editor's state_dict(): side memories, current shard, mask, statistics,
                    templates, mask RNG state

`load_wise(model, tokenizer, dir)` re-installs the adapter on a (fresh) base model so it routes
exactly as the saved editor did; a model whose config fingerprint differs is refused, naming the
config keys that differ.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config import fill
from ..errors import LifelongError
from ..io import read_json, write_json, write_torch
from ..modeling import family_of
from .base import EditContext, fingerprint

FORMAT = "lifelong-wise/1"
_VOLATILE = ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "architectures")


def _config_dict(model) -> dict[str, Any]:
    cfg = model.config.to_dict()
    for key in _VOLATILE:
        cfg.pop(key, None)
    return cfg


def save_wise(editor, directory: str | Path) -> Path:
    """Write the editor's side memories and routing state to `directory` (created if needed)."""
    directory = Path(directory)
    state = editor.state_dict()
    meta = {
        "format": FORMAT,
        "editor": editor.name,
        "module": editor.path,
        "family": editor.family.name,
        "fingerprint": fingerprint(editor.model),
        "base_config": _config_dict(editor.model),
        "hparams": state["hparams"],
        "edits_done": editor.edits_done,
        "finalized": editor.finalized,
        "thresholds": editor.thresholds(),
        "memories": len(editor.adapter.memories) if editor.adapter is not None else 0,
    }
    write_torch(directory / "wise_state.pt", state)
    write_json(directory / "wise.json", meta)
    return directory


def load_wise(model, tokenizer, directory: str | Path, context: EditContext | None = None):
    """A WiseEditor on `model` restored from `directory`; refuses a different base model."""
    from .wise import WiseEditor, WiseHparams

    directory = Path(directory)
    if not (directory / "wise.json").exists():
        raise LifelongError(f"{directory}: not a WISE artefact (no wise.json)")
    meta = read_json(directory / "wise.json")
    if meta.get("format") != FORMAT:
        raise LifelongError(f"{directory}: unsupported WISE artefact format {meta.get('format')!r}; expected {FORMAT}")
    fp = fingerprint(model)
    if meta["fingerprint"] != fp:
        raise LifelongError(f"{directory} was saved on base model {meta['fingerprint']}, this model is {fp}; "
                            f"config differences: {config_diff(meta.get('base_config', {}), _config_dict(model))}")
    hparams = fill(WiseHparams, meta["hparams"], where=f"{directory}/wise.json hparams")
    device = next(model.parameters()).device
    context = context or EditContext(family=family_of(model), device=device, model_fingerprint=fp)
    editor = WiseEditor(model, tokenizer, hparams, context)
    state = torch.load(directory / "wise_state.pt", map_location=device, weights_only=True)
    editor.load_state_dict(state)
    return editor


def config_diff(saved: dict[str, Any], current: dict[str, Any], limit: int = 12) -> str:
    keys = sorted(k for k in set(saved) | set(current) if saved.get(k, "<absent>") != current.get(k, "<absent>"))
    parts = [f"{k}: saved {saved.get(k, '<absent>')!r}, this model {current.get(k, '<absent>')!r}"
             for k in keys[:limit]]
    if len(keys) > limit:
        parts.append(f"... {len(keys) - limit} more")
    return "; ".join(parts) or "(none in the config dict; fingerprints differ)"
