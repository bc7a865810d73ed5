"""Profiles: named sets of params.yaml overrides (params-gpu.yaml: the papers' grid on GPUs).

A profile file maps dotted keys to values (`grid.models: [gpt-j-6b, ...]`). Nothing here merges configuration:
the overrides are handed to DVC's own machinery, the `-S key=value` of `dvc exp run` (Hydra's override syntax),
either as a printed command or applied to params.yaml in place with the same function DVC uses
(`dvc.utils.hydra.apply_overrides`, which keeps the file's comments and anchors). A key that params.yaml lacks
becomes Hydra's `+key=value` (an addition), so a typo in an existing key is still caught: the result is checked
against the registries before anything runs.
"""
from __future__ import annotations

import re
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..core.errors import ConfigError, LifelongError

_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-./]*")        # a string Hydra reads as itself without quotes
_RESERVED = {"true", "false", "null", "nan", "inf", "none", "yes", "no", "on", "off"}


def load_profile(path: str | Path) -> dict[str, Any]:
    """The profile's overrides, checked: a mapping of dotted keys (`section.key...`) to values."""
    path = Path(path)
    if not path.exists():
        raise LifelongError(f"profile {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"profile {path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(f"profile {path}: expected a mapping of dotted params.yaml keys to values")
    bad = [k for k in data if not isinstance(k, str) or not re.fullmatch(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*", k)]
    if bad:
        raise ConfigError(f"profile {path}: keys must be dotted params.yaml paths like grid.models; got {bad[:3]}")
    return dict(data)


def hydra_value(value: Any) -> str:
    """`value` in Hydra's override grammar (what `dvc exp run -S key=VALUE` parses)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if _BARE.fullmatch(value) and value.lower() not in _RESERVED:
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"profile value {value!r}: expected a scalar, list or mapping")


def overrides(profile: Mapping[str, Any], params: Mapping[str, Any]) -> list[str]:
    """One Hydra override per profile key: `key=value`, or `+key=value` where params.yaml has no such key."""
    out = []
    for key, value in profile.items():
        out.append(f"{'' if _has(params, key) else '+'}{key}={hydra_value(value)}")
    return out


def command(profile_path: str | Path, params: Mapping[str, Any], name: str) -> str:
    """The `dvc exp run` line that runs the profile as an experiment named `name`."""
    args = [f"-S {shlex.quote(o)}" for o in overrides(load_profile(profile_path), params)]
    return " \\\n    ".join([f"dvc exp run -n {shlex.quote(name)}", *args])


def apply(profile_path: str | Path, params_path: str | Path) -> list[str]:
    """Write the profile into `params_path` with DVC's override function, after checking the result on a copy
    (the registries must accept it); returns the overrides applied."""
    from dvc.utils.hydra import apply_overrides

    from ..core.config import load_params
    from ..editors import check_editor_sections

    params_path = Path(params_path)
    todo = overrides(load_profile(profile_path), load_params(params_path))
    with tempfile.TemporaryDirectory() as tmp:
        trial = Path(tmp) / "params.yaml"
        shutil.copyfile(params_path, trial)
        try:
            apply_overrides(trial, todo)
        except Exception as exc:   # Hydra's parse and composition errors: one line naming the profile
            raise ConfigError(f"profile {profile_path}: DVC could not apply it: {str(exc).splitlines()[0]}") from None
        merged = load_params(trial)
        check_editor_sections(merged)
        check_grid_names(merged)
        shutil.copyfile(trial, params_path)
    return todo


def check_grid_names(params: Mapping[str, Any]) -> None:
    """Every model and dataset a grid section names is registered in params.yaml, every editor in the registry."""
    from ..editors import EDITORS

    for section in ("grid", "real_grid"):
        grid = params.get(section) or {}
        for kind, known in (("models", params.get("models") or {}), ("datasets", params.get("datasets") or {}),
                            ("editors", EDITORS)):
            unknown = [n for n in grid.get(kind) or [] if n not in known]
            if unknown:
                raise ConfigError(f"params.yaml {section}.{kind}: {unknown} not registered (known: {sorted(known)})")


def _has(params: Mapping[str, Any], dotted: str) -> bool:
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True
