"""Editors: look one up by name (`editor_class`) and build its hyperparameters from params.yaml.

    registry.py  EDITORS: name -> "module:Class" (a new editor is one package here plus one line there)
    base.py      the Editor interface and its two bases (WeightEditor, AdapterEditor)
    artifact.py  saving an edited model (save_pretrained + the editor's state) and loading it back
    common/      what several editors share: hooks, adapters, templates, subject positions,
                 layer statistics (covariance), merging
"""
from __future__ import annotations

import importlib
from typing import Any, Mapping

from ..core.config import deep_merge, fill
from ..core.errors import unknown_name
from .base import AdapterEditor, EditContext, Editor, EditorHparams, WeightEditor
from .registry import EDITORS


def editor_class(name: str) -> type[Editor]:
    if name not in EDITORS:
        raise unknown_name("editor", name, list(EDITORS))
    module, _, cls = EDITORS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def build_hparams(name: str, params: Mapping[str, Any], family: str,
                  overrides: Mapping[str, Any] | None = None, model: str | None = None) -> EditorHparams:
    """Hyperparameters, later sources winning:
    class defaults <- editors.NAME.default <- editors.NAME.FAMILY <- models.MODEL.hparams.NAME <- overrides.

    The per-model layer lets a tiny testbed model and a 7B model of the same family differ
    (absolute margins such as WISE's alpha/beta/gamma are scale-dependent)."""
    cls = editor_class(name)
    section = (params.get("editors") or {}).get(name) or {}
    per_model = (((params.get("models") or {}).get(model) or {}).get("hparams") or {}).get(name) if model else None
    merged = deep_merge(section.get("default") or {}, section.get(family) or {}, per_model or {}, overrides or {})
    where = f"params.yaml editors.{name} ({family}{', models.' + model + '.hparams' if per_model else ''})"
    return fill(cls.hparams_class, merged, where=where)


__all__ = ["EDITORS", "AdapterEditor", "EditContext", "Editor", "EditorHparams", "WeightEditor", "build_hparams",
           "editor_class"]
