"""What the dataset tests share: the fixture files and a one-entry loader call (test_datasets.py,
test_data_cache.py; their fixtures `no_data_env`, `cache` and `conversions` are in conftest.py)."""
from __future__ import annotations

import json
from pathlib import Path

from lifelong.data import load_dataset

FIXTURES = Path(__file__).parent / "fixtures"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def load(loader: str, data_dir: Path = FIXTURES, name: str = "ds", **options):
    params = {"data_dir": str(data_dir), "datasets": {name: {"loader": loader, **options}}}
    return load_dataset(name, params)


def write_rows(path: Path, rows) -> Path:
    path.write_text(json.dumps(rows))
    return path


def fixture_rows(name: str) -> list[dict]:
    return json.loads((FIXTURES / name).read_text())
