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

from ..core.config import check_keys, deep_merge, fill
from ..core.errors import ConfigError, close_match, unknown_name
from ..models.families import FAMILIES
from .base import AdapterEditor, EditContext, Editor, EditorHparams, WeightEditor
from .registry import EDITORS


def editor_class(name: str) -> type[Editor]:
    if name not in EDITORS:
        raise unknown_name("editor", name, list(EDITORS))
    module, _, cls = EDITORS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def build_hparams(name: str, params: Mapping[str, Any], family: str,
                  overrides: Mapping[str, Any] | None = None, model: str | None = None,
                  overrides_from: str = "--set") -> EditorHparams:
    """Hyperparameters, later sources winning:
    class defaults <- editors.NAME.default <- editors.NAME.FAMILY <- models.MODEL.hparams.NAME <- overrides.

    The per-model layer lets a tiny testbed model and a 7B model of the same family differ
    (absolute margins such as WISE's alpha/beta/gamma are scale-dependent). Every layer is checked on its
    own, so a bad value that a later layer hides is still an error, named where it is written."""
    cls = editor_class(name)
    check_editor_sections(params)
    section = (params.get("editors") or {}).get(name) or {}
    per_model = (((params.get("models") or {}).get(model) or {}).get("hparams") or {}).get(name) if model else None
    layers = [(f"params.yaml editors.{name}.default", section.get("default")),
              (f"params.yaml editors.{name}.{family}", section.get(family)),
              (f"params.yaml models.{model}.hparams.{name}", per_model), (overrides_from, overrides)]
    for where, layer in layers:
        check_keys(cls.hparams_class, layer, where)
    merged = deep_merge(*(layer or {} for _, layer in layers))
    where = f"params.yaml editors.{name} ({family}{', models.' + model + '.hparams' if per_model else ''})"
    return fill(cls.hparams_class, merged, where=where)


# What an editor's section may hold besides family layers: its grid protocol and named variants (pipeline/cell.py).
SECTION_KEYS = ("default", "grid", "variants")


def check_editor_sections(params: Mapping[str, Any]) -> None:
    """`editors:` names registered editors only, each with known sub-sections, and so does every
    `models.NAME.hparams:`; a typo is an error naming the close match, never a section silently ignored."""
    families = sorted({f.name for f in FAMILIES.values()})
    for editor, section in (params.get("editors") or {}).items():
        if editor not in EDITORS:
            raise ConfigError(f"params.yaml editors.{editor}: unknown editor{close_match(editor, EDITORS)} "
                              f"(registered: {', '.join(sorted(EDITORS))})")
        for key in section or {}:
            if key not in SECTION_KEYS and key not in families:
                raise ConfigError(f"params.yaml editors.{editor}.{key}: neither a model family ({', '.join(families)}) "
                                  f"nor one of {', '.join(SECTION_KEYS)}{close_match(key, [*families, *SECTION_KEYS])}")
    for model, entry in (params.get("models") or {}).items():
        for editor in (entry or {}).get("hparams") or {}:
            if editor not in EDITORS:
                raise ConfigError(f"params.yaml models.{model}.hparams.{editor}: unknown editor"
                                  f"{close_match(editor, EDITORS)} (registered: {', '.join(sorted(EDITORS))})")


__all__ = ["EDITORS", "AdapterEditor", "EditContext", "Editor", "EditorHparams", "WeightEditor", "build_hparams",
           "check_editor_sections", "editor_class"]
