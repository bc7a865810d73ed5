"""params.yaml is the single source of truth; this module turns its sections into typed dataclasses.

`fill(cls, mapping, where=...)` builds a dataclass from a mapping and refuses unknown keys and values
of the wrong type, naming the exact key (e.g. ``params.yaml: editors.ultraedit.llama.lr``).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from .errors import ConfigError, close_match
from .paths import PARAMS

T = TypeVar("T")


def load_params(path: str | Path = PARAMS) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: params file not found")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({yaml_problem(exc)})") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return params


def yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's several-line report as one clause: 'line 2, column 1: did not find expected ...'."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def check_keys(cls: type, values: Mapping[str, Any] | None, where: str) -> None:
    """Check one layer of a merge on its own: known keys, values of the right type. A later layer may
    override a value; the bad one is still named where it is written (`params.yaml editors.ft.default.lr`)."""
    values = values or {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {values!r}")
    fields = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}{close_match(unknown[0], fields)}; "
                          f"valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    for name, value in values.items():   # "--set lr" reads as a flag; "params.yaml editors.ft.default.lr" as a path
        coerce(value, hints[name], f"{where} {name}" if where.startswith("--") else f"{where}.{name}")


def fill(cls: type[T], values: Mapping[str, Any] | None, where: str) -> T:
    """Instantiate dataclass `cls` from `values`; unknown keys, wrong types and missing required keys
    are ConfigErrors."""
    values = dict(values or {})
    check_keys(cls, values, where)
    required = [f.name for f in dataclasses.fields(cls) if f.init and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in values]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(map(repr, missing))}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: coerce(value, hints[name], f"{where}.{name}") for name, value in values.items()}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except (ValueError, AssertionError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return obj


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Check (and gently convert) a YAML value against a type hint."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: expected {_name(hint)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e-6" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return fill(hint, value, where)
    return value


def parse_overrides(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`["lr=1e-5", "layers=[3,4]"]` -> {"lr": 1e-05, "layers": [3, 4]} (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected key=value")
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"--set {pair!r}: value is not valid YAML") from None
    return out


def deep_merge(base: Mapping[str, Any], *updates: Mapping[str, Any] | None) -> dict[str, Any]:
    out = dict(base)
    for update in updates:
        for key, value in (update or {}).items():
            if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
                out[key] = deep_merge(out[key], value)
            else:
                out[key] = value
    return out


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))
