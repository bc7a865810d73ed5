import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lifelong.core.errors import LifelongError
from lifelong.pipeline.runner import RunSpec, run

from resume_support import OVERRIDES

SUMMARY_KEYS = {"model", "dataset", "editor", "n_edits", "reliability", "generalization", "locality", "edit_seconds",
                "eval_seconds", "peak_rss_mb", "pre_reliability", "pre_generalization", "pre_locality"}


def _spec(params_file, out, **kw):
    base = dict(model="t-llama", dataset="world", editor="ft", n_edits=3, out_dir=out, params_path=params_file,
                progress=False)
    return RunSpec(**(base | kw))


def test_run_writes_summary_and_per_edit(params_file, tmp_path):
    summary = run(_spec(params_file, tmp_path, n_blocks=2, eval_at=(2,)))
    assert SUMMARY_KEYS <= set(summary)
    # two blocks of three sequential FT edits: most edits hold (how many of the three survive the later ones
    # depends on the CPU's float rounding in pretraining: .83 on AMD EPYC, 1.0 on Intel Xeon)
    assert summary["pre_reliability"] < 0.6 and summary["reliability"] > summary["pre_reliability"] + 0.4
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
    # edits never accumulate across blocks: most locality probes are untouched (one FT edit may hit its probe)
    assert per_edit.locality_agreement.median() == 1.0 and summary["locality_agreement"] >= 0.6


@pytest.mark.parametrize("kw, message", [
    (dict(n_edits=0), "must be >= 1"),
    (dict(n_edits=10_000_000, n_blocks=100), "holds .* edits; the run needs"),
    (dict(model="nope"), "unknown model 'nope'"),
    (dict(dataset="nope"), "unknown dataset 'nope'"),
    (dict(editor="nope"), "unknown editor 'nope'"),
    (dict(eval_at=(99,)), "eval-at values must lie in 1..3"),
    (dict(overrides={"lr": "fast"}), r"--set lr: expected a number"),
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


# The same run as _cli, in a subprocess whose test-injected checkpoint callback SIGKILLs it right after the
# checkpoint at (block, turn) is written, exactly like an external `kill -9`.
_KILLED_RUN = """
import os, signal, sys
from pathlib import Path
from lifelong.pipeline.runner import RunSpec, run
params, out, block, turn, overrides = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:]
spec = RunSpec(model="t-gpt2", dataset="world", editor="ft", n_edits=4, n_blocks=2, out_dir=Path(out),
               params_path=Path(params), checkpoint_every=1, progress=False,
               overrides=dict(o.split("=") for o in overrides))
def kill_at(b, t):
    if (b, t) == (block, turn):
        os.kill(os.getpid(), signal.SIGKILL)
run(spec, on_checkpoint=kill_at)
"""


def _killed(params_file, out, block, turn):
    return subprocess.run([sys.executable, "-c", _KILLED_RUN, str(params_file), str(out), str(block), str(turn)],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_resume_after_kill_9_is_identical(params_file, tmp_path):
    straight = _cli(params_file, tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr
    killed = _killed(params_file, tmp_path / "resumed", 1, 2)
    assert killed.returncode == -9
    assert (tmp_path / "resumed" / "checkpoint.pt").exists() and not (tmp_path / "resumed" / "summary.json").exists()
    resumed = _cli(params_file, tmp_path / "resumed", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout
    a = pd.read_csv(tmp_path / "straight" / "per_edit.csv")
    b = pd.read_csv(tmp_path / "resumed" / "per_edit.csv")
    pd.testing.assert_frame_equal(a, b)
    # a checkpoint from another run is refused, naming what differs
    _killed(params_file, tmp_path / "other", 0, 1)
    refused = _cli(params_file, tmp_path / "other", "--resume", "--set", "lr=0.5")
    assert refused.returncode == 2
    assert "belongs to a different run" in refused.stderr and "overrides" in refused.stderr
    assert "Traceback" not in refused.stderr


def _main(*args) -> int:
    """The CLI in-process (what `python -m lifelong` runs), without a subprocess's interpreter start."""
    from lifelong.cli import main

    return main([str(a) for a in args])


@pytest.mark.parametrize("args, message", [
    (["--editor", "nope"], "error: unknown editor 'nope'"),
    (["--n-edits", "0"], "error: --n-edits and --blocks must be >= 1"),
    (["--set", "n_iter=abc"], "n_iter: expected an integer"),
])
def test_cli_errors_exit_2_without_traceback(params_file, tmp_path, capsys, args, message):
    base = ["run", "--model", "t-gpt2", "--dataset", "world", "--editor", "ft", "--n-edits", "2",
            "--params", params_file, "--out", tmp_path, "--no-progress"]
    # later flags win in argparse, so appending overrides the defaults above
    assert _main(*base, *args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# -- real datasets, optional metrics and grid cells ------------------------------------------------

def _params_with(params_file, tmp_path, datasets: dict, data_dir) -> Path:
    import yaml

    params = yaml.safe_load(params_file.read_text())
    params["datasets"].update(datasets)
    params["data_dir"] = str(data_dir)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_optional_metrics_are_computed_recorded_and_defined(params_file, tmp_path):
    from lifelong.eval.registry import METRICS

    import yaml
    world = yaml.safe_load(params_file.read_text())["datasets"]["world"]
    p = _params_with(params_file, tmp_path, {"w2": {**world, "metrics": ["exact_match", "perplexity"]}}, tmp_path)
    summary = run(_spec(p, tmp_path / "out", dataset="w2", n_edits=2, n_blocks=2))
    per_edit = pd.read_csv(tmp_path / "out" / "per_edit.csv")
    for col in ("reliability_em", "generalization_em", "target_ppl", "pre_reliability_em", "pre_target_ppl"):
        assert per_edit[col].notna().all(), col
    # FT-M drives the targets' loss down: greedy decoding now produces them, their perplexity falls
    assert summary["reliability_em"] > summary["pre_reliability_em"]
    assert summary["target_ppl"] < summary["pre_target_ppl"]
    assert summary["target_ppl_clip100"] <= min(summary["target_ppl"], 100.0)
    assert set(summary["metric_definitions"]) >= {"reliability_em", "generalization_em", "target_ppl"}
    assert summary["metric_definitions"]["target_ppl"] == METRICS["target_ppl"].definition
    bad = _params_with(params_file, tmp_path, {"w3": {**world, "metrics": ["bleu"]}}, tmp_path)
    with pytest.raises(LifelongError, match=r"datasets.w3.metrics: unknown metric\(s\) \['bleu'\]"):
        run(_spec(bad, tmp_path / "bad", dataset="w3"))


def test_grid_cell_runs_every_T_and_skips_a_missing_dataset(params_file, tmp_path, monkeypatch, capsys):
    from lifelong.pipeline.cell import run_cell

    zsre = {"loader": "zsre_mend", "path": "zsre/zsre_mend_edit.json", "target": "alt", "loc_question_mark": False}
    p = _params_with(params_file, tmp_path, {"zsre": zsre}, tmp_path / "empty-data-dir")
    table = run_cell(model="t-gpt2", dataset="world", editor="ft", n_edits=[1, 2], edits_per_point=2,
                     out_dir=tmp_path / "cell", params_path=p)
    assert table.n_edits.tolist() == [1, 2] and table.n_blocks.tolist() == [2, 1]
    assert (tmp_path / "cell" / "T1" / "summary.json").exists() and (tmp_path / "cell" / "T2" / "per_edit.csv").exists()

    skipped = run_cell(model="t-gpt2", dataset="zsre", editor="ft", n_edits=[1], edits_per_point=1,
                       out_dir=tmp_path / "skipped", params_path=p)
    assert skipped.empty
    reason = json.loads((tmp_path / "skipped" / "skipped.json").read_text())["reason"]
    assert "dataset file not found" in reason and "zsre_mend_edit.json" in reason
    # one explicit run (the CLI) fails with the message instead
    monkeypatch.delenv("LIFELONG_DATA_DIR", raising=False)
    code = _main("run", "--model", "t-gpt2", "--dataset", "zsre", "--editor", "ft", "--n-edits", "1", "--params", p,
                 "--out", tmp_path / "x", "--no-progress")
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "dataset file not found" in err and "The official file" in err


REAL_ZSRE = Path(__file__).resolve().parents[2] / "shared" / "data" / "zsre" / "zsre_mend_edit.json"


@pytest.mark.skipif(not REAL_ZSRE.is_file(), reason=f"real ZsRE file {REAL_ZSRE} not present (see ../shared/data)")
def test_cli_runs_real_zsre_with_generation_metrics(params_file, tmp_path, monkeypatch, capsys):
    zsre = {"loader": "zsre_mend", "path": "zsre/zsre_mend_edit.json", "target": "alt", "loc_question_mark": False,
            "metrics": ["exact_match"], "locality_pool": "zsre_train"}
    train = {"loader": "zsre_mend", "path": "zsre/zsre_mend_train-1k.json", "target": "answers",
             "loc_question_mark": False}
    p = _params_with(params_file, tmp_path, {"zsre": zsre, "zsre_train": train}, REAL_ZSRE.parents[1])
    monkeypatch.delenv("LIFELONG_DATA_DIR", raising=False)
    code = _main("run", "--model", "t-gpt2", "--dataset", "zsre", "--editor", "ft", "--n-edits", "2", "--params", p,
                 "--out", tmp_path / "z", "--no-progress")
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "z" / "summary.json").read_text())
    per_edit = pd.read_csv(tmp_path / "z" / "per_edit.csv")
    assert summary["dataset"] == "zsre" and per_edit.uid.tolist() == [0, 1]
    assert summary["reliability"] > summary["pre_reliability"]
    assert summary["reliability_em"] is not None and "reliability_em" in summary["metric_definitions"]


def test_an_edit_longer_than_the_context_is_refused_before_any_edit(params_file, tmp_path, monkeypatch):
    from lifelong.pipeline import runner

    monkeypatch.setattr(runner, "context_length", lambda model: 4)  # world edits are longer than 4 tokens
    with pytest.raises(LifelongError, match=r"dataset 'world': \d+ edit\(s\) have prompt \+ target longer than "
                                            r"the context of model 't-gpt2' \(4 tokens\), e.g. record 0"):
        run(_spec(params_file, tmp_path, model="t-gpt2", n_edits=2))
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / "per_edit.csv").exists()


def test_evaluation_inputs_over_the_context_are_cut_and_counted_in_the_summary(params_file, tmp_path):
    """The prompt-length policy: edits must fit the context; longer evaluation inputs are cut from the left
    (keeping the answer), and the summary says how many were."""
    import yaml

    row = {"subject": "Harbour Lantern Society", "src": "When was Harbour Lantern Society founded?", "pred": "1921",
           "rephrase": "In which year was the Harbour Lantern Society established?", "alt": "1934", "answers": ["1908"],
           "loc": "nq question: who painted the ceiling of the glass museum", "loc_ans": "Ada Penhallow"}
    rows = [row, {**row, "rephrase": "why " * 100 + row["rephrase"]}, row, {**row, "loc": "who " * 100}]
    (tmp_path / "long.json").write_text(json.dumps(rows))
    params = yaml.safe_load(Path(params_file).read_text())
    params["data_dir"] = str(tmp_path)
    params["datasets"]["long"] = {"loader": "zsre_mend", "path": "long.json", "target": "alt",
                                  "loc_question_mark": False, "max_prompt_chars": 300}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    summary = run(_spec(tmp_path / "params.yaml", tmp_path / "out", model="t-gpt2", dataset="long", n_edits=2,
                        n_blocks=2))
    lengths = summary["prompt_lengths"]
    assert lengths["context_tokens"] == 64 and lengths["eval_inputs_cut"] == 2      # the long rephrase and probe
    assert lengths["over_max_prompt_chars"] == 2 and lengths["long_prompts"] == "keep"
    assert "cut from the left" in lengths["policy"]


def test_eval_at_must_fall_between_turns(params_file, tmp_path):
    """An evaluation checkpoint scores exactly the edits made so far, so it must be a turn boundary."""
    with pytest.raises(LifelongError, match=r"multiples of the editor's turn_size \(2\); got \[3\]"):
        run(_spec(params_file, tmp_path, n_edits=4, eval_at=(3,), overrides={"turn_size": 2}))
    run(_spec(params_file, tmp_path, n_edits=5, eval_at=(2, 4), overrides={"turn_size": 2}))
    curve = pd.read_csv(tmp_path / "curve.csv")
    assert curve.n_edits.tolist() == [2, 4, 5]     # the last turn holds one edit: the final evaluation


def test_a_failed_turn_names_the_turn_and_writes_no_results(params_file, tmp_path):
    overrides = {"edit_lr": 1e38, "norm_constraint": None, "early_stop_loss": -1.0, "n_iter": 6, "layer": 2,
                 "template_lengths": [2]}
    with pytest.raises(LifelongError, match=r"wise, block 0, turn 1 of 2: WISE edit .* non-finite"):
        run(_spec(params_file, tmp_path, editor="wise", n_edits=2, overrides=overrides))
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / "per_edit.csv").exists()


@pytest.mark.parametrize("editor", ["ft", "ft_l", "ultraedit", "wise", "grace", "memit", "alphaedit"])
def test_every_editor_resumes_a_crashed_run_to_identical_results(params_file, tmp_path, stats, editor, monkeypatch):
    """A crash right after the second checkpoint (the injected callback raises), then --resume, gives the
    uninterrupted run's per-edit results exactly, for every registered editor."""
    from lifelong.editors import EDITORS

    assert editor in EDITORS
    overrides = OVERRIDES.get(editor, {})
    spec = dict(editor=editor, model="t-llama", n_edits=4, n_blocks=1, checkpoint_every=1, overrides=overrides)
    if editor in ("memit", "alphaedit"):      # their layer statistics, where the runner looks (artifacts/stats/MODEL)
        import shutil

        from lifelong.pipeline import runner

        monkeypatch.setattr(runner, "ARTIFACTS", tmp_path / "artifacts")
        shutil.copytree(stats("llama"), tmp_path / "artifacts" / "stats" / "t-llama")

    class Crash(Exception):
        pass

    def crash_at_two(block, turn):
        if turn == 2:
            raise Crash

    run(_spec(params_file, tmp_path / "straight", **spec))
    with pytest.raises(Crash):
        run(_spec(params_file, tmp_path / "resumed", **spec), on_checkpoint=crash_at_two)
    assert (tmp_path / "resumed" / "checkpoint.pt").exists()
    run(_spec(params_file, tmp_path / "resumed", resume=True, **spec))
    a = pd.read_csv(tmp_path / "straight" / "per_edit.csv")
    b = pd.read_csv(tmp_path / "resumed" / "per_edit.csv")
    pd.testing.assert_frame_equal(a, b)
