"""Scale (issue 15): sampled evaluation of long streams, memory along a stream, device and dtype checks, the
UltraEdit authors' bf16 cast, out-of-memory in a turn. The GPU tests are marked `gpu` and skip on a CPU."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from lifelong.core.errors import ConfigError, LifelongError
from lifelong.editors import editor_class
from lifelong.models.loading import check_dtype, load_model, placement, resolve_device
from lifelong.pipeline import report
from lifelong.pipeline.runner import RunSpec, eval_sample_indices, run

from resume_support import OVERRIDES


def _spec(params_file, out, **kw):
    base = dict(model="t-llama", dataset="world", editor="ultraedit", n_edits=8, out_dir=out,
                params_path=params_file, progress=False, overrides=dict(OVERRIDES["ultraedit"]), threads=1)
    return RunSpec(**(base | kw))


# -- the sample -----------------------------------------------------------------------------------------------

def test_the_sample_is_seeded_sized_and_nested():
    spec = RunSpec(model="m", dataset="d", editor="e", n_edits=100_000, out_dir=".", eval_sample=500, seed=3)
    assert eval_sample_indices(spec, 500) is None and eval_sample_indices(spec, 400) is None   # all scored
    at_10k, at_100k = eval_sample_indices(spec, 10_000), eval_sample_indices(spec, 100_000)
    assert len(at_10k) == len(at_100k) == 500 and len(set(at_10k)) == 500
    assert at_10k.max() < 10_000 and (np.diff(at_10k) > 0).all()
    # an edit sampled at the later checkpoint was sampled at the earlier one too
    assert set(at_100k[at_100k < 10_000]) <= set(at_10k)
    # about 5% of the 100K sample lies below 10K (uniform over the stream)
    assert 5 <= (at_100k < 10_000).sum() <= 50
    assert np.array_equal(at_10k, eval_sample_indices(spec, 10_000))
    other = RunSpec(**{**spec.__dict__, "seed": 4})
    assert not np.array_equal(at_10k, eval_sample_indices(other, 10_000))
    off = RunSpec(**{**spec.__dict__, "eval_sample": 0})
    assert eval_sample_indices(off, 100_000) is None


def test_a_sampled_stream_scores_the_sample_then_every_edit(params_file, tmp_path):
    summary = run(_spec(params_file, tmp_path, eval_at=(2, 4, 6), eval_sample=3))
    curve = pd.read_csv(tmp_path / "curve.csv")
    assert curve.n_edits.tolist() == [2, 4, 6, 8, 8]
    assert curve.scored.tolist() == ["all", "sample", "sample", "sample", "all"]
    assert curve.n_scored.tolist() == [2, 3, 3, 3, 8]
    assert (curve.rss_mb > 0).all() and (curve.peak_rss_mb >= curve.rss_mb).all()
    assert curve.eval_seconds.is_monotonic_increasing and curve.edit_seconds.is_monotonic_increasing
    # the last sample row is the mean of exactly the sampled edits' exact scores
    per_edit = pd.read_csv(tmp_path / "per_edit.csv")
    sample = eval_sample_indices(_spec(params_file, tmp_path, eval_sample=3), 8)
    for metric in ("reliability", "generalization", "locality_agreement"):
        assert curve[metric].iloc[3] == pytest.approx(per_edit[metric].iloc[sample].mean())
        assert curve[metric].iloc[4] == pytest.approx(per_edit[metric].mean()) == pytest.approx(summary[metric])
    assert summary["eval_sample"]["size"] == 3 and "seeded permutation" in summary["eval_sample"]["rule"]


def test_a_sample_scores_what_scoring_every_edit_gives_for_those_edits(params_file, tmp_path):
    """The sample's row at an intermediate checkpoint (6 of 8 edits) equals the mean, over the sampled edits, of the
    exact per-edit scores of a run that stops after the same 6 edits (editing is deterministic)."""
    run(_spec(params_file, tmp_path / "six", n_edits=6))
    sampled_spec = _spec(params_file, tmp_path / "sampled", eval_at=(6,), eval_sample=4)
    run(sampled_spec)
    six = pd.read_csv(tmp_path / "six" / "per_edit.csv")
    row = pd.read_csv(tmp_path / "sampled" / "curve.csv").iloc[0]
    sample = eval_sample_indices(sampled_spec, 6)
    assert row.scored == "sample" and row.n_scored == 4 and len(sample) == 4
    for metric in ("reliability", "generalization", "locality_agreement"):
        assert row[metric] == pytest.approx(six[metric].iloc[sample].mean())


def test_bad_sample_size_is_refused(params_file, tmp_path):
    with pytest.raises(LifelongError, match="eval-sample must be an integer >= 0"):
        run(_spec(params_file, tmp_path, eval_sample=-1))


def test_the_curve_figures_draw_the_exact_score_apart(tmp_path):
    curve = pd.DataFrame({"n_edits": [10, 100, 1000, 1000], "scored": ["all", "sample", "sample", "all"],
                          "n_scored": [10, 50, 50, 1000], "reliability": [0.9, 0.7, 0.5, 0.52],
                          "generalization": [0.8, 0.6, 0.4, 0.41], "locality_agreement": [1.0, 0.9, 0.8, 0.79],
                          "edit_seconds": [1.0, 10.0, 100.0, 100.0], "eval_seconds": [0.5, 1.0, 1.5, 30.0],
                          "rss_mb": [500.0, 510.0, 505.0, 520.0], "peak_rss_mb": [600.0] * 4})
    line, exact = report._estimator_and_exact(curve.assign(editor="x"))
    assert line.scored.tolist() == ["all", "sample", "sample"] and exact.n_scored.tolist() == [1000]
    grid = report.plot_scaling(curve.assign(editor="x"), tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0
    stars = [c for ax in grid.axes.flat for c in ax.collections if c.get_label() == "every edit scored"]
    assert len(stars) == 3   # one per metric panel
    report.plot_stream_cost(curve, tmp_path / "cost.png")
    assert (tmp_path / "cost.png").stat().st_size > 0


# -- device, dtype, placement ---------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusals of a machine without a GPU")
def test_a_gpu_asked_for_on_a_cpu_machine_is_one_clear_error():
    assert resolve_device("auto") == resolve_device(None) == "cpu"
    assert resolve_device("cpu") == "cpu"
    for asked in ("cuda", "cuda:1"):
        with pytest.raises(LifelongError, match=f"device '{asked}' was asked for, but torch .* sees no GPU"):
            resolve_device(asked)
    with pytest.raises(LifelongError, match="expected auto, cpu, cuda or cuda:K"):
        resolve_device("gpu please")
    with pytest.raises(LifelongError, match="runs on cpu or cuda"):
        resolve_device("meta")


def test_an_unsupported_dtype_is_refused_before_loading(params_file, tmp_path):
    with pytest.raises(ConfigError, match="float16 is not supported on the CPU"):
        check_dtype("float16", "cpu", where="x")
    check_dtype("bfloat16", "cpu", where="x")
    check_dtype("float32", "cpu", where="x")
    text = params_file.read_text().replace("t-llama:\n    path:", "t-llama:\n    dtype: float16\n    path:")
    assert "dtype: float16" in text
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"models.t-llama.dtype \(float16\) on cpu: float16 is not supported"):
        run(_spec(tmp_path / "params.yaml", tmp_path / "out", device="cpu"))
    assert not (tmp_path / "out" / "summary.json").exists()


def test_placement_keys_are_checked():
    assert placement("m", {"models": {"m": {"path": "x"}}}) == {"device_map": None, "cast_buffers": False}
    assert placement("m", {"models": {"m": {"device_map": "auto", "cast_buffers": True}}}) == \
        {"device_map": "auto", "cast_buffers": True}
    with pytest.raises(ConfigError, match="models.m.device_map: expected null or auto, got 'balanced'"):
        placement("m", {"models": {"m": {"device_map": "balanced"}}})
    with pytest.raises(ConfigError, match="models.m.cast_buffers: expected true or false"):
        placement("m", {"models": {"m": {"cast_buffers": "yes"}}})


def _inv_freq(model) -> torch.Tensor:
    return next(b for name, b in model.named_buffers() if name.endswith("inv_freq"))


def test_the_authors_bf16_cast_also_rounds_the_rotary_buffer(tiny_models, tiny_dir):
    tiny_models("llama")
    loaded, _ = load_model(str(tiny_dir / "llama"), dtype="bfloat16")
    cast, _ = load_model(str(tiny_dir / "llama"), dtype="bfloat16", cast_buffers=True)
    assert next(loaded.parameters()).dtype == next(cast.parameters()).dtype == torch.bfloat16
    assert _inv_freq(loaded).dtype == torch.float32          # dtype= at load: buffers stay fp32 (our default)
    assert _inv_freq(cast).dtype == torch.bfloat16           # model.bfloat16(): the reference's rounding
    assert not torch.equal(_inv_freq(loaded), _inv_freq(cast).float())


# -- out of memory in a turn ----------------------------------------------------------------------------------

def _oom_at(monkeypatch, editor: str, turn: int):
    cls = editor_class(editor)
    original, calls = cls.edit_turn, {"n": 0}

    def failing(self, records):
        calls["n"] += 1
        if calls["n"] == turn:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, records)

    monkeypatch.setattr(cls, "edit_turn", failing)


def test_out_of_memory_names_the_turn_and_keeps_every_completed_turn(params_file, tmp_path, monkeypatch):
    straight = _spec(params_file, tmp_path / "straight", n_edits=5, eval_at=(2,))
    run(straight)
    _oom_at(monkeypatch, "ultraedit", 4)
    spec = _spec(params_file, tmp_path / "oom", n_edits=5, eval_at=(2,), checkpoint_every=0)
    with pytest.raises(LifelongError, match=r"ultraedit, block 0, turn 4 of 5: out of memory \(CPU: RSS .* MB, "
                                            r"peak .* MB\).*holds the 3 completed turn\(s\)"):
        run(spec)
    assert (tmp_path / "oom" / "checkpoint.pt").exists() and not (tmp_path / "oom" / "summary.json").exists()
    monkeypatch.undo()
    run(RunSpec(**{**spec.__dict__, "resume": True}))
    a = pd.read_csv(tmp_path / "straight" / "per_edit.csv")
    b = pd.read_csv(tmp_path / "oom" / "per_edit.csv")
    pd.testing.assert_frame_equal(a, b)


def test_out_of_memory_in_an_editor_that_cannot_roll_back_keeps_the_last_checkpoint(params_file, tmp_path,
                                                                                   monkeypatch):
    _oom_at(monkeypatch, "ft", 3)
    spec = _spec(params_file, tmp_path, editor="ft", n_edits=4, overrides={}, checkpoint_every=0)
    with pytest.raises(LifelongError, match=r"ft, block 0, turn 3 of 4: out of memory") as info:
        run(spec)
    assert "completed turn" not in str(info.value) and not (tmp_path / "checkpoint.pt").exists()


# -- on a GPU ---------------------------------------------------------------------------------------------------

@pytest.mark.gpu
def test_ultraedit_runs_on_the_gpu_in_bf16(params_file, tmp_path):
    text = params_file.read_text().replace("t-llama:\n    path:", "t-llama:\n    dtype: bfloat16\n    path:")
    (tmp_path / "params.yaml").write_text(text)
    summary = run(_spec(tmp_path / "params.yaml", tmp_path / "out", device="cuda"))
    assert np.isfinite(summary["reliability"])
    stats = json.loads((tmp_path / "out" / "summary.json").read_text())["editor_report"]
    assert stats is not None


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="device_map: auto shards over two or more GPUs")
def test_every_editor_works_on_a_sharded_model(params_file, tmp_path):
    text = params_file.read_text().replace("t-llama:\n    path:", "t-llama:\n    device_map: auto\n    path:")
    (tmp_path / "params.yaml").write_text(text)
    for editor in ("ft", "ultraedit", "wise", "grace", "ft_l"):
        summary = run(_spec(tmp_path / "params.yaml", tmp_path / editor, editor=editor, n_edits=2,
                            overrides=dict(OVERRIDES.get(editor, {}))))
        assert np.isfinite(summary["reliability"]), editor
