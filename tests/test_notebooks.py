"""Smoke test: every pipeline notebook runs end to end through the papermill wrapper, with tiny parameters."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import papermill as pm
import pytest
import yaml

from lifelong.pipeline.nbrun import main as nbrun
from lifelong.core.paths import ROOT

pytestmark = pytest.mark.notebooks
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_source_notebooks_are_clean():
    assert {p.stem for p in NOTEBOOKS} >= {"prepare", "pretrain", "stats", "edit", "scaling", "report", "sweep", "convert",
                                             "knowledge", "extended", "tables", "tutorial"}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert not any(c.get("outputs") for c in nb.cells), f"{path.name} stores outputs"
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, path.name
        assert "params_path" in pm.inspect_notebook(str(path))


@pytest.fixture(scope="module")
def tiny_params(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    world = {"seed": 0, "edit_subjects": 6, "locality_subjects": 3, "pool_subjects": 2, "relations": 2, "templates": 2}
    params = {
        "world": world,
        "tokenizer": {"vocab_size": 400},
        "testbed": {"t-llama": {"family": "llama", "d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64}},
        "pretrain": {"epochs": 2, "batch_size": 16, "lr": 3e-3, "warmup_steps": 2, "seed": 0},
        "models": {"t-llama": {"path": str(root / "models" / "t-llama"),   # the testbed's settings (tutorial)
                               "hparams": {"ultraedit": {"preset": None, "layers": [-2], "lr": 2.0e-3},
                                           "wise": {"alpha": 1.0, "beta": 4.0, "gamma": 2.0, "n_iter": 30}}}},
        "datasets": {"world": {"loader": "synthetic", **world}},
        "editors": {"ft": {"default": {"n_iter": 2}}},
        "grid": {"models": ["t-llama"], "datasets": ["world"], "editors": ["ft"], "n_edits": [1, 2],
                 "edits_per_point": 2, "seed": 0},
        "scaling": {"model": "t-llama", "dataset": "world", "checkpoint_every": 1,
                    "editors": {"ft": {"n_edits": 4, "eval_at": "2"}}},
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _run(name: str, out: Path, **parameters) -> Path:
    executed = out / f"{name}.ipynb"
    args = [str(ROOT / "notebooks" / f"{name}.ipynb"), str(executed)]
    for key, value in parameters.items():
        args += ["-p", key, str(value)]
    assert nbrun(args) == 0, f"{name}.ipynb failed; see {executed}"
    nb = nbformat.read(executed, as_version=4)
    nbformat.validate(nb)
    assert "start_time" not in nb.metadata.get("papermill", {})  # normalised
    header = nb.cells[0]   # opens with what ran, with which parameters, where, and how long
    assert header.cell_type == "markdown" and header.id == "run-header", name
    assert f"`{ROOT / 'notebooks' / name}.ipynb`" in header.source and "**Hardware:** " in header.source
    assert all(f"`{key} = " in header.source for key in parameters) and "wall clock" in header.source
    return executed


def test_pipeline_notebooks_end_to_end(tiny_params, tmp_path):
    root = tiny_params.parent
    p = str(tiny_params)
    _run("prepare", tmp_path, params_path=p, out_tokenizer=root / "tok", out_metrics=tmp_path / "metrics" / "world.json")
    _run("pretrain", tmp_path, params_path=p, model="t-llama", tokenizer_dir=root / "tok",
         out_model=root / "models" / "t-llama", out_metrics=tmp_path / "metrics" / "pretrain-t-llama.json")
    assert json.loads((tmp_path / "metrics" / "pretrain-t-llama.json").read_text())["known_facts"] == 22
    _run("stats", tmp_path, params_path=p, model="t-llama", out_dir=root / "stats" / "t-llama",
         out_metrics=tmp_path / "metrics" / "stats-t-llama.json")
    stats = json.loads((tmp_path / "metrics" / "stats-t-llama.json").read_text())
    assert stats["tokens"] > 0 and len(stats["null_dims_at_threshold"]) == 2   # one entry per layer
    _run("edit", tmp_path, params_path=p, model="t-llama", dataset="world", editor="ft",
         out_dir=tmp_path / "runs" / "t-llama__world__ft")  # every T of the grid, in one notebook
    assert sorted(d.name for d in (tmp_path / "runs" / "t-llama__world__ft").iterdir()) == ["T1", "T2"]
    _run("knowledge", tmp_path, params_path=p, model="t-llama", datasets='["world"]', records=5,
         out_metrics=tmp_path / "metrics" / "knowledge-t-llama.json")
    base = json.loads((tmp_path / "metrics" / "knowledge-t-llama.json").read_text())["base_rates"]
    assert [b["dataset"] for b in base] == ["world"] and base[0]["records"] == 5
    assert {"reliability", "generalization", "locality"} <= set(base[0])
    assert 0 <= base[0]["reliability"] < 0.5   # the world's edit targets are counterfactual: not known before editing
    _run("scaling", tmp_path, params_path=p, model="t-llama", dataset="world", editor="ft", n_edits=4, eval_at="2",
         checkpoint_every=1, out_dir=tmp_path / "scaling", out_curve=tmp_path / "scaling" / "curve-ft.csv",
         out_figure=tmp_path / "figures" / "scaling.png")
    _run("report", tmp_path, params_path=p, runs_dir=tmp_path / "runs", metrics_dir=tmp_path / "metrics",
         scaling_dir=tmp_path / "scaling", sequential_dir=tmp_path / "sequential",
         out_results=tmp_path / "results.csv", out_metrics=tmp_path / "metrics.json", out_figures=tmp_path / "figures",
         out_plots=tmp_path / "plots" / "runs.csv")
    plotted = pd.read_csv(tmp_path / "plots" / "runs.csv")   # what `dvc plots diff` draws: one bar per run and revision
    assert list(plotted.run) == ["t-llama · world · ft · T=1", "t-llama · world · ft · T=2"]
    _run("extended", tmp_path, params_path=p, grid="grid", runs_dir=tmp_path / "runs",
         out_results=tmp_path / "extended.csv", out_figure=tmp_path / "extended.png")   # a named target's table
    assert len(open(tmp_path / "extended.csv").readlines()) == 3 and (tmp_path / "extended.png").stat().st_size > 5_000
    published = tmp_path / "published.yaml"
    published.write_text(yaml.safe_dump({
        "sources": {"paper": {"citation": "A paper, Table 1", "setting": "the world", "layout": "wise"}},
        "entries": [{"source": "paper", "model": "t-llama", "dataset": "world", "editor": "ft", "n_edits": 2,
                     "reliability": 0.5}]}))
    _run("tables", tmp_path, params_path=p, runs_dirs="{grid: %s}" % (tmp_path / "runs"), published_path=published,
         out_dir=tmp_path / "tables")
    table = (tmp_path / "tables" / "wise-t-llama-world.md").read_text()
    assert table.startswith("**t-llama on world**") and "Published (paper): A paper, Table 1" in table
    assert "| ft (t-llama) " in table and "| published: ft (t-llama, paper) " in table and "missing |" not in table
    assert (tmp_path / "figures" / "metrics_vs_edits-world.png").stat().st_size > 10_000
    assert (tmp_path / "figures" / "scaling.png").exists()  # drawn by scaling.ipynb, redrawn by report.ipynb
    assert json.loads((tmp_path / "metrics.json").read_text())["testbed: world"]["ft"]["T"] == 2
    # the tutorial (README's first stop) on the tiny model: it edits, compares, saves and reloads (its own asserts)
    _run("tutorial", tmp_path, params_path=p, model="t-llama", out_dir=tmp_path / "tutorial-model")
    assert (tmp_path / "tutorial-model" / "editor.json").exists()
    # the executed notebooks show their figures inline (library code picks no matplotlib backend), small
    for name, n_figures in (("stats", 1), ("edit", 1), ("scaling", 1), ("report", 3), ("tutorial", 1)):
        nb = nbformat.read(tmp_path / f"{name}.ipynb", as_version=4)
        images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        assert len(images) >= n_figures, name
        assert max(len(o["data"]["image/png"]) for o in images) < 400_000, name


def test_user_error_in_a_notebook_is_one_line(tiny_params, tmp_path, capsys):
    code = nbrun([str(ROOT / "notebooks" / "edit.ipynb"), str(tmp_path / "bad.ipynb"), "-p", "params_path",
                  str(tiny_params), "-p", "dataset", "nope", "-p", "model", "t-llama", "-p", "out_dir", str(tmp_path / "x")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown dataset 'nope'") and "Traceback" not in err
    assert "then it **failed**" in nbformat.read(tmp_path / "bad.ipynb", as_version=4).cells[0].source

