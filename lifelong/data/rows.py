"""Row validation helpers shared by the dataset loaders.

A loader's `convert(row, index, opts)` reads a parsed JSON row with these helpers; they raise
`RowError(field, problem)`, which the source (`source.py`) turns into a `DataError` that names the
file, the row index and the field (strict mode) or counts in its report (lenient mode).
"""
from __future__ import annotations

from typing import Any, Mapping


class RowError(Exception):
    """A row does not match the schema: `field` is the offending key, `problem` says how."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"field {field!r}: {problem}")
        self.field = field
        self.problem = problem


def req_str(row: Mapping[str, Any], field: str, *, empty_ok: bool = False) -> str:
    """A required string field (non-empty after stripping unless empty_ok)."""
    if field not in row:
        raise RowError(field, "missing")
    value = row[field]
    if not isinstance(value, str):
        raise RowError(field, f"expected a string, got {type(value).__name__} {_short(value)}")
    if not empty_ok and not value.strip():
        raise RowError(field, f"empty string {value!r}")
    return value


def opt_str(row: Mapping[str, Any], field: str) -> str | None:
    """An optional string field: absent or null gives None; anything else must be a non-empty string."""
    value = row.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RowError(field, f"expected a string or null, got {type(value).__name__} {_short(value)}")
    if not value.strip():
        raise RowError(field, f"empty string {value!r}")
    return value


def str_list(row: Mapping[str, Any], field: str, *, min_len: int = 1) -> list[str]:
    """A required list of non-empty strings with at least `min_len` items."""
    if field not in row:
        raise RowError(field, "missing")
    value = row[field]
    if not isinstance(value, list):
        raise RowError(field, f"expected a list of strings, got {type(value).__name__} {_short(value)}")
    if len(value) < min_len:
        raise RowError(field, f"expected at least {min_len} item(s), got {len(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise RowError(f"{field}[{i}]", f"expected a string, got {type(item).__name__} {_short(item)}")
        if not item.strip():
            raise RowError(f"{field}[{i}]", f"empty string {item!r}")
    return value


def req_map(row: Mapping[str, Any], field: str) -> Mapping[str, Any]:
    if field not in row:
        raise RowError(field, "missing")
    value = row[field]
    if not isinstance(value, Mapping):
        raise RowError(field, f"expected an object, got {type(value).__name__} {_short(value)}")
    return value


def nested(row: Mapping[str, Any], path: str, check=req_str):
    """`nested(row, "requested_rewrite.target_new.str")`: walk objects, report the full dotted path."""
    parts = path.split(".")
    node: Any = row
    for depth, part in enumerate(parts[:-1]):
        try:
            node = req_map(node, part)
        except RowError as exc:
            raise RowError(".".join(parts[: depth + 1]), exc.problem) from None
    try:
        return check(node, parts[-1])
    except RowError as exc:
        raise RowError(".".join(parts[:-1] + [exc.field]), exc.problem) from None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
