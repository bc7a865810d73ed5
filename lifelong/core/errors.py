"""User-facing errors.

Anything a user can cause by bad input (an unknown name, a malformed row, a wrong params type)
raises `LifelongError`. The CLI and the notebook runner print its message alone and exit non-zero,
so the user sees one clear line instead of a traceback from deep inside torch.
"""
from __future__ import annotations


class LifelongError(Exception):
    """A problem with the user's input or configuration; the message says what and where."""


class ConfigError(LifelongError):
    """params.yaml or a --set override is wrong (unknown key, wrong type, bad value)."""


class DataError(LifelongError):
    """A dataset file is missing or malformed (message names file, row and field)."""


class MissingDataError(DataError):
    """A dataset file is not in the data directory (the message says where it comes from)."""


def unknown_name(kind: str, name: str, known: list[str] | tuple[str, ...]) -> LifelongError:
    """The standard message for an unknown registry name."""
    return LifelongError(f"unknown {kind} {name!r}; known {kind}s: {', '.join(sorted(known)) or '(none)'}")
