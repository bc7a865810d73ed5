"""Where things live. Paths are resolved from the repository root, never from the cwd,
so notebooks behave the same under JupyterLab (cwd = notebooks/) and under DVC (cwd = root)."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PARAMS = ROOT / "params.yaml"
ARTIFACTS = ROOT / "artifacts"       # DVC-cached outputs: tokenizer, tiny models, runs
REPORTS = ROOT / "reports"


def data_dir(configured: str | os.PathLike | None = None) -> Path:
    """The directory that holds real public datasets (ZsRE, CounterFact, ...).

    Order: the LIFELONG_DATA_DIR environment variable, then the value configured in params.yaml
    (relative paths are taken from the repo root), then ../shared/data next to the repository.
    """
    env = os.environ.get("LIFELONG_DATA_DIR")
    if env:
        return Path(env).expanduser().resolve()
    if configured:
        p = Path(configured).expanduser()
        return (p if p.is_absolute() else ROOT / p).resolve()
    return (ROOT.parent / "shared" / "data").resolve()


def cache_dir(kind: str) -> Path:
    """A folder for derived, re-creatable files (`arrow` dataset conversions, `test-models`, `stats`):
    $LIFELONG_CACHE_DIR/KIND if set, else .cache/lifelong/KIND in the repository (git- and DVC-ignored)."""
    root = os.environ.get("LIFELONG_CACHE_DIR")
    path = (Path(root).expanduser() if root else ROOT / ".cache" / "lifelong") / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve(path: str | os.PathLike) -> Path:
    """A params.yaml path, relative to the repo root unless absolute."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else ROOT / p
