"""Report aggregation: the tidy table behind the figures."""
import pandas as pd

from lifelong.pipeline.report import tidy


def test_tidy_unedited_rows_are_the_pre_edit_scores():
    results = pd.DataFrame([{"model": "m", "dataset": "d", "editor": e, "n_edits": 1, "reliability": 0.9,
                             "generalization": 0.8, "locality": 0.7, "pre_reliability": 0.1,
                             "pre_generalization": 0.2, "pre_locality": 1.0} for e in ("ft", "wise")])
    long = tidy(results)
    unedited = long[long.editor == "unedited"].set_index("metric").value
    assert unedited.to_dict() == {"reliability": 0.1, "generalization": 0.2, "locality": 1.0}
    assert len(long) == 3 * 3


def _summary(model, dataset, editor, n, rel):
    return {"model": model, "family": "llama", "dataset": dataset, "editor": editor, "n_edits": n, "n_blocks": 1,
            "reliability": rel, "generalization": rel, "locality": 1.0, "pre_reliability": 0.1,
            "pre_generalization": 0.1, "pre_locality": 0.9, "seconds_per_edit": 0.5}


def test_collect_reads_expected_runs_lists_skipped_cells_and_refuses_missing(tmp_path):
    import pytest

    from lifelong.core import io
    from lifelong.core.errors import LifelongError
    from lifelong.pipeline.report import collect, headline, pre_edit_table

    grid = {"models": ["m"], "datasets": ["world", "zsre"], "editors": ["ft"], "n_edits": [1, 10]}
    for n, rel in ((1, 1.0), (10, 0.5)):
        io.write_json(tmp_path / "m__world__ft" / f"T{n}" / "summary.json", _summary("m", "world", "ft", n, rel))
    io.write_json(tmp_path / "m__world__ft" / "T99" / "summary.json", _summary("m", "world", "ft", 99, 0.0))  # stale
    io.write_json(tmp_path / "m__zsre__ft" / "skipped.json",
                  {"model": "m", "dataset": "zsre", "editor": "ft", "reason": "dataset file not found: x"})
    results, skipped = collect({"grid": grid}, tmp_path)
    assert results.n_edits.tolist() == [1, 10]                      # the stale T99 is not globbed in
    assert skipped.to_dict("records") == [{"model": "m", "dataset": "zsre", "editor": "ft",
                                           "reason": "dataset file not found: x"}]
    assert headline(results) == {"testbed: world": {"ft": {"reliability": 0.5, "generalization": 0.5, "locality": 1.0,
                                                           "seconds_per_edit": 0.5, "T": 10}}}
    assert pre_edit_table(results).loc[("world", "m"), "pre_locality"] == 0.9
    (tmp_path / "m__world__ft" / "T10" / "summary.json").unlink()
    with pytest.raises(LifelongError, match="1 grid run"):
        collect({"grid": grid}, tmp_path)
    assert collect({"grid": grid}, tmp_path, required=False)[0].n_edits.tolist() == [1]   # a named target not run


def test_dataset_panels_and_perplexity_figures_are_drawn(tmp_path):
    from lifelong.pipeline.report import plot_datasets, plot_perplexity

    rows = [_summary(m, d, e, n, 0.5) for m in ("a", "b") for d in ("world", "zsre") for e in ("ft", "wise")
            for n in (1, 10)]
    grid = plot_datasets(pd.DataFrame(rows), tmp_path / "by_dataset.png")
    assert grid.axes.shape == (3, 2)                         # metric rows x dataset columns
    assert [ax.get_title() for ax in grid.axes[0]] == ["world", "zsre"]
    assert (tmp_path / "by_dataset.png").stat().st_size > 10_000
    halluc = pd.DataFrame([_summary(m, "hallucination", e, n, 0.2) | {"target_ppl_clip100": 5.0 / n,
                                                                      "pre_target_ppl_clip100": 100.0}
                           for m in ("a", "b") for e in ("ft", "wise") for n in (1, 10)])
    grid = plot_perplexity(halluc, tmp_path / "ppl.png")
    assert grid.axes.shape == (1, 2)
    labels = {t.get_text() for t in grid.legend.texts}
    assert {"ft", "wise", "unedited"} <= labels


def test_scaling_curves_are_the_configured_streams_and_a_missing_one_names_its_stage(tmp_path):
    import pytest

    from lifelong.core.errors import LifelongError
    from lifelong.pipeline.report import collect_scaling, plot_scaling

    params = {"scaling": {"model": "m", "dataset": "world", "editors": {"ultraedit": {}, "ft": {}}}}
    curve = pd.DataFrame({"n_edits": [10, 100], "reliability": [0.9, 0.5], "generalization": [0.8, 0.4],
                          "locality": [1.0, 0.9], "locality_agreement": [1.0, 0.9], "edit_seconds": [1.0, 9.0]})
    curve.to_csv(tmp_path / "curve-ultraedit.csv", index=False)
    (tmp_path / "curve-stale.csv").write_text("left over from an older configuration")
    with pytest.raises(LifelongError, match="curve-ft.csv; run `dvc repro scaling@ft` first"):
        collect_scaling(params, tmp_path)
    curve.assign(reliability=[0.7, 0.2]).to_csv(tmp_path / "curve-ft.csv", index=False)
    curves = collect_scaling(params, tmp_path)
    assert list(curves.editor) == ["ultraedit", "ultraedit", "ft", "ft"] and set(curves.model) == {"m"}
    grid = plot_scaling(curves, tmp_path / "scaling.png", title="t")
    assert len(grid.axes.flat) == 3 and (tmp_path / "scaling.png").stat().st_size > 10_000
    assert collect_scaling({}, tmp_path).empty
