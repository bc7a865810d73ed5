"""Grid cells: the protocol's layers (grid < dataset < editor), an editor kept off a dataset, an editor's
variants (MEMIT-MASS), and the sweep's choice rule."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from lifelong.core.config import load_params
from lifelong.core.errors import ConfigError
from lifelong.pipeline.cell import protocol, run_cell, run_paths, variants
from lifelong.pipeline.report import collect
from lifelong.pipeline.sweep import choose


def test_protocol_layers_and_variants():
    params = {"grid": {"n_edits": [1, 10, 100], "edits_per_point": 20, "seed": 3, "datasets": ["a", "b"]},
              "datasets": {"b": {"grid": {"edits_per_point": 10}}},
              "editors": {"m": {"grid": {"n_edits": [1, 10], "datasets": ["a"]},
                                "variants": {"mass": {"turn_size": "block"}}}}}
    assert protocol(params, "a") == protocol(params, "a", editor="x")
    assert protocol(params, "b").edits_per_point == 10 and protocol(params, "b").n_edits == (1, 10, 100)
    by_editor = protocol(params, "b", editor="m")
    assert (by_editor.n_edits, by_editor.edits_per_point, by_editor.seed, by_editor.datasets) == ((1, 10), 10, 3, ("a",))
    assert run_paths(params, "a", "m") == [(None, 1, "T1"), (None, 10, "T10"), ("mass", 1, "mass/T1"),
                                           ("mass", 10, "mass/T10")]
    with pytest.raises(ConfigError, match="editors.m.variants"):
        variants({"editors": {"m": {"variants": ["mass"]}}}, "m")


def test_a_cell_runs_variants_skips_datasets_and_the_report_collects_both(params_file, tmp_path):
    params = load_params(params_file)
    params["editors"]["ft"].update(grid={"n_edits": [1, 2], "edits_per_point": 2, "datasets": ["world"]},
                                   variants={"block": {"turn_size": "block", "n_iter": 3}})
    params["datasets"]["other"] = dict(params["datasets"]["world"])
    params["grid"] = {"models": ["t-llama"], "datasets": ["world", "other"], "editors": ["ft"]}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    runs = tmp_path / "runs"
    table = run_cell(model="t-llama", dataset="world", editor="ft", out_dir=runs / "t-llama__world__ft", params_path=path)
    assert table.editor.tolist() == ["ft", "ft", "ft-block", "ft-block"] and table.n_edits.tolist() == [1, 2, 1, 2]
    summary = json.loads((runs / "t-llama__world__ft" / "block" / "T2" / "summary.json").read_text())
    assert summary["hparams"]["turn_size"] == 2 and summary["hparams"]["n_iter"] == 3 and summary["n_blocks"] == 1
    skipped = run_cell(model="t-llama", dataset="other", editor="ft", out_dir=runs / "t-llama__other__ft",
                       params_path=path)
    assert skipped.empty and "editors.ft.grid.datasets" in json.loads(
        (runs / "t-llama__other__ft" / "skipped.json").read_text())["reason"]
    results, left_out = collect(load_params(path), runs)
    assert sorted(zip(results.editor, results.n_edits)) == [("ft", 1), ("ft", 2), ("ft-block", 1), ("ft-block", 2)]
    assert left_out.to_dict("records") == [{"model": "t-llama", "dataset": "other", "editor": "ft",
                                            "reason": "not in editors.ft.grid.datasets"}]


def test_the_sweep_rule_prefers_the_best_setting_that_keeps_locality():
    rows = []
    for setting, rel, agree in (("a", 0.9, 0.5), ("b", 0.6, 0.95), ("c", 0.4, 1.0)):
        for dataset in ("x", "y"):
            rows += [{"setting": setting, "dataset": dataset, "n_edits": 10, "reliability": rel, "generalization": rel,
                      "locality_agreement": agree},
                     {"setting": setting, "dataset": dataset, "n_edits": 1, "reliability": 1.0, "generalization": 1.0,
                      "locality_agreement": 1.0}]
    frame = pd.DataFrame(rows)
    assert choose(frame)[0] == "b"                          # "a" scores higher but breaks locality
    frame.loc[(frame.setting == "b") & (frame.dataset == "y") & (frame.n_edits == 10), "locality_agreement"] = 0.8
    assert choose(frame)[0] == "c"                          # the agreement must hold on every dataset
    frame.loc[frame.n_edits == 10, "locality_agreement"] = 0.5
    setting, why = choose(frame)
    assert "no setting keeps locality agreement" in why
