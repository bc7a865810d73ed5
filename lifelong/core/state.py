"""Saved state as tensors plus JSON: loading never runs code from a file.

Run checkpoints and saved editors hold nested trees of dicts, lists, tuples, strings, numbers, None,
torch tensors and numpy arrays. `split` turns such a tree into a JSON skeleton and a flat dict of
tensors; `join` puts it back together. Two containers use it:

* `save_tree` / `load_tree`: one file, written atomically with `torch.save` and read back with
  `torch.load(weights_only=True)` (checkpoints of long runs);
* safetensors plus a JSON file (a saved editor, `editors/artifact.py`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import LifelongError
from .io import atomic_write

FORMAT = "lifelong-state/1"
_TENSOR, _ARRAY, _TUPLE = "__tensor__", "__ndarray__", "__tuple__"


def split(tree: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """(JSON-able skeleton, {key: tensor}); tensors are replaced by references in the skeleton."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any, where: str) -> Any:
        if isinstance(node, torch.Tensor):
            key = f"t{len(tensors)}"
            tensors[key] = node.detach().to("cpu").contiguous().clone()
            return {_TENSOR: key}
        if isinstance(node, np.ndarray):
            key = f"t{len(tensors)}"
            wide = node.astype(np.int64) if node.dtype.kind == "u" else node   # torch lacks most unsigned types
            tensors[key] = torch.from_numpy(np.ascontiguousarray(wide)).clone()
            return {_ARRAY: key, "dtype": node.dtype.str}
        if isinstance(node, np.generic):
            return node.item()
        if isinstance(node, dict):
            bad = [k for k in node if not isinstance(k, str)]
            if bad:
                raise LifelongError(f"state at {where or '<root>'}: keys must be strings, got {bad[:3]!r}")
            return {k: walk(v, f"{where}.{k}") for k, v in node.items()}
        if isinstance(node, tuple):
            return {_TUPLE: [walk(v, f"{where}[{i}]") for i, v in enumerate(node)]}
        if isinstance(node, list):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(node)]
        if node is None or isinstance(node, (str, bool, int, float)):
            return node
        if isinstance(node, Path):
            return str(node)
        raise LifelongError(f"state at {where or '<root>'}: cannot save a {type(node).__name__}")

    return walk(tree, ""), tensors


def join(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of `split`."""
    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if _TENSOR in node:
                return tensors[node[_TENSOR]]
            if _ARRAY in node:
                return tensors[node[_ARRAY]].numpy().astype(np.dtype(node["dtype"]))
            if _TUPLE in node:
                return tuple(walk(v) for v in node[_TUPLE])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(skeleton)


def save_tree(path: str | os.PathLike, tree: Any) -> Path:
    """Write `tree` to one file, atomically."""
    skeleton, tensors = split(tree)
    payload = {"format": FORMAT, "skeleton": json.dumps(skeleton), "tensors": tensors}
    return atomic_write(path, lambda p: torch.save(payload, p))


def load_tree(path: str | os.PathLike) -> Any:
    """Read a file written by `save_tree`; tensors only, no pickled objects (weights_only=True)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated file, a foreign pickle, ...: one message, never its code
        raise LifelongError(f"{path}: not a readable lifelong state file ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise LifelongError(f"{path}: not a lifelong state file (expected format {FORMAT!r})")
    return join(json.loads(payload["skeleton"]), payload["tensors"])
