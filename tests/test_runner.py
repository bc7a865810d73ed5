import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from lifelong.errors import LifelongError
from lifelong.runner import RunSpec, run

SUMMARY_KEYS = {"model", "dataset", "editor", "n_edits", "reliability", "generalization", "locality", "edit_seconds",
                "eval_seconds", "peak_rss_mb", "pre_reliability", "pre_generalization", "pre_locality"}


def _spec(params_file, out, **kw):
    base = dict(model="t-llama", dataset="world", editor="ft", n_edits=3, out_dir=out, params_path=params_file,
                progress=False)
    return RunSpec(**(base | kw))


def test_run_writes_summary_and_per_edit(params_file, tmp_path):
    summary = run(_spec(params_file, tmp_path, n_blocks=2, eval_at=(2,)))
    assert SUMMARY_KEYS <= set(summary)
    assert summary["pre_reliability"] < 0.6 and summary["reliability"] > 0.9
    assert summary["pre_locality"] > 0.9
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["reliability"] == summary["reliability"]
    per_edit = pd.read_csv(tmp_path / "per_edit.csv")
    assert len(per_edit) == 6 and per_edit.block.tolist() == [0, 0, 0, 1, 1, 1]
    curve = pd.read_csv(tmp_path / "curve.csv")
    assert curve.n_edits.tolist() == [2, 3, 2, 3]
    assert not (tmp_path / "checkpoint.pt").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_blocks_are_rolled_back(params_file, tmp_path):
    """Block 2 starts from the unedited model: its pre-edit locality agreement basis is the base model."""
    summary = run(_spec(params_file, tmp_path, n_edits=1, n_blocks=3))
    per_edit = pd.read_csv(tmp_path / "per_edit.csv")
    assert (per_edit.reliability > per_edit.pre_reliability).all()
    assert summary["locality_agreement"] > 0.9


@pytest.mark.parametrize("kw, message", [
    (dict(n_edits=0), "must be >= 1"),
    (dict(n_edits=10_000_000, n_blocks=100), "holds .* edits; the run needs"),
    (dict(model="nope"), "unknown model 'nope'"),
    (dict(dataset="nope"), "unknown dataset 'nope'"),
    (dict(editor="nope"), "unknown editor 'nope'"),
    (dict(eval_at=(99,)), "eval-at values must lie in 1..3"),
    (dict(overrides={"lr": "fast"}), r"editors.ft \(llama\).lr: expected a number"),
    (dict(overrides={"layer": 40}), "layer 40 does not exist"),
])
def test_bad_input_is_one_clear_error(params_file, tmp_path, kw, message):
    with pytest.raises(LifelongError, match=message):
        run(_spec(params_file, tmp_path, **kw))


def _cli(params_file, out, *extra, env=None):
    cmd = [sys.executable, "-m", "lifelong", "run", "--model", "t-gpt2", "--dataset", "world", "--editor", "ft",
           "--n-edits", "4", "--blocks", "2", "--params", str(params_file), "--out", str(out), "--no-progress",
           "--checkpoint-every", "1", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)


def test_resume_after_kill_9_is_identical(params_file, tmp_path):
    straight = _cli(params_file, tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr
    killed = _cli(params_file, tmp_path / "resumed", env={"LIFELONG_TEST_KILL_AT": "1:2"})
    assert killed.returncode == -9
    assert (tmp_path / "resumed" / "checkpoint.pt").exists() and not (tmp_path / "resumed" / "summary.json").exists()
    resumed = _cli(params_file, tmp_path / "resumed", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout
    a = pd.read_csv(tmp_path / "straight" / "per_edit.csv")
    b = pd.read_csv(tmp_path / "resumed" / "per_edit.csv")
    pd.testing.assert_frame_equal(a, b)
    # a checkpoint from another run is refused, naming what differs
    _cli(params_file, tmp_path / "other", env={"LIFELONG_TEST_KILL_AT": "0:1"})
    refused = _cli(params_file, tmp_path / "other", "--resume", "--set", "lr=0.5")
    assert refused.returncode == 2
    assert "belongs to a different run" in refused.stderr and "overrides" in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.mark.parametrize("args, message", [
    (["--editor", "nope"], "error: unknown editor 'nope'"),
    (["--n-edits", "0"], "error: --n-edits and --blocks must be >= 1"),
    (["--set", "n_iter=abc"], "n_iter: expected an integer"),
])
def test_cli_errors_exit_2_without_traceback(params_file, tmp_path, args, message):
    cmd = [sys.executable, "-m", "lifelong", "run", "--model", "t-gpt2", "--dataset", "world", "--editor", "ft",
           "--n-edits", "2", "--params", str(params_file), "--out", str(tmp_path), "--no-progress"]
    # later flags win in argparse, so appending overrides the defaults above
    proc = subprocess.run(cmd + args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
