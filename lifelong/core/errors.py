"""User-facing errors.

Anything a user can cause by bad input (an unknown name, a malformed row, a wrong params type)
raises `LifelongError`. The CLI and the notebook runner print its message alone and exit non-zero,
so the user sees one clear line instead of a traceback from deep inside torch.
"""
from __future__ import annotations

import difflib
from typing import Iterable


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
    return LifelongError(f"unknown {kind} {name!r}{close_match(name, known)}; "
                         f"known {kind}s: {', '.join(sorted(known)) or '(none)'}")


def close_match(name: str, known: Iterable[str]) -> str:
    """'; did you mean 'lr'?' when a known name is close to `name`, else ''."""
    match = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    return f"; did you mean {match[0]!r}?" if match else ""
