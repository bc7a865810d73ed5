"""Aggregate runs into one tidy table and the seaborn figures in reports/.

The list of expected runs comes from params.yaml's grid, never from a glob, so results left on disk
by an older, larger grid are not silently mixed in (a DVC gotcha). A missing run is an error.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..core import io
from ..core.errors import LifelongError
from ..eval import registry
from .cell import cell_name, expected_cells, protocol, run_paths

METRICS = registry.HEADLINE
CORE_FIELDS = ("model", "family", "dataset", "editor", "n_edits", "n_blocks", *registry.CORE,
               *(f"pre_{m}" for m in METRICS))
OPTIONAL_FIELDS = tuple(k for k in registry.summary_columns() if k not in CORE_FIELDS)   # a dataset's `metrics:`
SUMMARY_FIELDS = (*CORE_FIELDS, *OPTIONAL_FIELDS, "seconds_per_edit", "edit_seconds", "eval_seconds", "peak_rss_mb",
                  "generation_prompts")   # raw or chat_template (models.NAME.chat_template)


def collect(params: dict[str, Any], runs_dir: str | Path, grid: str = "grid",
            required: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(results, skipped): one row per grid run with the summary's headline fields (and the grid's name), and
    one row per cell skipped because its dataset file was not in the data directory. The expected runs come
    from params.yaml (each dataset's protocol), never from a glob. A missing run is an error when `required`
    (the default pipeline's grids); otherwise it is left out (a named target that has not been run)."""
    rows, skipped, missing = [], [], []
    for model, dataset, editor in expected_cells(params[grid]):
        cell = Path(runs_dir) / cell_name(model, dataset, editor)
        kept_off = protocol(params, dataset, grid, editor).datasets
        if kept_off is not None and dataset not in kept_off:
            skipped.append({"model": model, "dataset": dataset, "editor": editor,
                            "reason": f"not in editors.{editor}.grid.datasets"})
            continue
        if (cell / "skipped.json").exists():
            skipped.append(io.read_json(cell / "skipped.json"))
            continue
        for _, _, folder in run_paths(params, dataset, editor, grid):
            path = cell / folder / "summary.json"
            if not path.exists():
                missing.append(str(path))
                continue
            s = io.read_json(path)
            rows.append({"grid": grid, **{k: s.get(k) for k in SUMMARY_FIELDS}})
    if missing and required:
        raise LifelongError(f"{len(missing)} grid run(s) have no summary, e.g. {missing[0]}; run `dvc repro` first")
    results = pd.DataFrame(rows, columns=["grid", *SUMMARY_FIELDS])
    results = results.drop(columns=[c for c in OPTIONAL_FIELDS if results[c].isna().all()])  # metrics not asked for
    return results, pd.DataFrame(skipped, columns=["model", "dataset", "editor", "reason"])


def tidy(results: pd.DataFrame, metrics: tuple[str, ...] = METRICS) -> pd.DataFrame:
    """Long format: one row per (run, metric), with the unedited model as editor 'unedited' (whose locality
    agreement with itself is 1 by definition)."""
    keep = ["model", "dataset", "editor", "n_edits"]
    post = results.melt(id_vars=keep, value_vars=list(metrics), var_name="metric", value_name="value")
    # pre-edit scores do not depend on the editor: one "unedited" line per (model, dataset, T)
    pre = results[keep].assign(**{m: results[f"pre_{m}"] if f"pre_{m}" in results else 1.0 for m in metrics})
    pre = pre.drop_duplicates(["model", "dataset", "n_edits"]).assign(editor="unedited")
    pre = pre.melt(id_vars=keep, value_vars=list(metrics), var_name="metric", value_name="value")
    return pd.concat([post, pre], ignore_index=True)


def plot_metrics_vs_edits(results: pd.DataFrame, path: str | Path, dataset: str | None = None):
    """Reliability / generalization / locality against T: one line per editor, one panel per model."""
    import seaborn as sns

    data = tidy(results)
    if dataset is not None:
        data = data[data.dataset == dataset]
    sns.set_theme(style="whitegrid", context="notebook")
    grid = sns.relplot(data=data, x="n_edits", y="value", hue="editor", style="editor", col="model",
                       row="metric", kind="line", markers=True, dashes=False, height=2.6, aspect=1.25,
                       facet_kws={"margin_titles": True, "sharey": True})
    grid.set(xscale="log", ylim=(-0.03, 1.03))
    grid.set_axis_labels("edits before evaluation (T)", "token accuracy")
    grid.set_titles(row_template="{row_name}", col_template="{col_name}")
    title = f"Editing results: {dataset}" if dataset else "Editing results"
    grid.figure.suptitle(title, y=1.02)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    grid.savefig(path, dpi=110, bbox_inches="tight")
    return grid


def pre_edit_table(results: pd.DataFrame) -> pd.DataFrame:
    """What each unedited model knows of each dataset: pre-edit scores of the edited records, one
    row per (dataset, model). Pre-edit scores do not depend on the editor; the largest T's records
    are a superset of the others', so its rows are used."""
    cols = [c for c in ("pre_reliability", "pre_generalization", "pre_locality", "pre_reliability_em",
                        "pre_target_ppl_clip100") if c in results]
    top = results[results.n_edits == results.groupby(["model", "dataset"]).n_edits.transform("max")]
    return top.groupby(["dataset", "model"])[cols].mean()


def plot_datasets(results: pd.DataFrame, path: str | Path,
                  title: str = "Editing results per dataset (mean over the testbed models; band: min to max)",
                  metrics: tuple[str, ...] = METRICS):
    """One panel per (metric, dataset): each editor's score against T, mean and range over the models."""
    import seaborn as sns

    data = tidy(results, metrics)
    sns.set_theme(style="whitegrid", context="notebook")
    grid = sns.relplot(data=data, x="n_edits", y="value", hue="editor", style="editor", col="dataset",
                       row="metric", kind="line", markers=True, dashes=False, errorbar=("pi", 100), height=2.6,
                       aspect=1.25, facet_kws={"margin_titles": True, "sharey": True})
    grid.set(xscale="log", ylim=(-0.03, 1.03))
    grid.set_axis_labels("edits before evaluation (T)", "token accuracy")
    grid.set_titles(row_template="{row_name}", col_template="{col_name}")
    grid.figure.suptitle(title, y=1.02)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    grid.savefig(path, dpi=110, bbox_inches="tight")
    return grid


def beside_testbed(results: pd.DataFrame, real_models: list[str]) -> pd.DataFrame:
    """The real models' runs labelled `MODEL: dataset`, beside the testbed's labelled `testbed: dataset` (their
    mean over the tiny models), in that order: the frame the headline figure and table are drawn from."""
    real = results.model.isin(real_models)
    label = results.model.where(real, "testbed") + ": " + results.dataset
    order = sorted(set(label[real])) + sorted(set(label[~real]))
    return results.assign(dataset=pd.Categorical(label, categories=order, ordered=True))


def headline_table(results: pd.DataFrame, real_models: list[str]) -> pd.DataFrame:
    """Per (model or testbed, dataset) x editor x T: the unedited base rate, then Rel / Gen / Loc and locality
    agreement after editing, and the seconds per edit (testbed rows: the mean over the tiny models)."""
    data = beside_testbed(results, real_models)
    cols = ["pre_reliability", "reliability", "generalization", "locality", "locality_agreement", "seconds_per_edit"]
    return data.groupby(["dataset", "editor", "n_edits"], observed=True)[cols].mean().unstack("n_edits")


def plot_perplexity(results: pd.DataFrame, path: str | Path, dataset: str = "hallucination"):
    """WISE Hallucination: target perplexity (each edit clipped at 100, spec B13) against T."""
    import seaborn as sns

    data = results[results.dataset == dataset]
    post = data[["model", "editor", "n_edits", "target_ppl_clip100"]].rename(columns={"target_ppl_clip100": "ppl"})
    pre = (data.drop_duplicates(["model", "n_edits"])[["model", "n_edits", "pre_target_ppl_clip100"]]
           .rename(columns={"pre_target_ppl_clip100": "ppl"}).assign(editor="unedited"))
    sns.set_theme(style="whitegrid", context="notebook")
    grid = sns.relplot(data=pd.concat([post, pre]), x="n_edits", y="ppl", hue="editor", style="editor", col="model",
                       kind="line", markers=True, dashes=False, height=2.8, aspect=1.2)
    grid.set(xscale="log", ylim=(0.9, 105))
    grid.set_axis_labels("edits before evaluation (T)", "target perplexity (clip 100; lower is better)")
    grid.figure.suptitle(f"{dataset}: perplexity of the new text", y=1.03)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    grid.savefig(path, dpi=110, bbox_inches="tight")
    return grid


def collect_scaling(params: dict[str, Any], directory: str | Path) -> pd.DataFrame:
    """The long streams of params.yaml `scaling.editors`: one curve per editor (`curve-EDITOR.csv`), tidy."""
    section = params.get("scaling") or {}
    curves = []
    for editor in section.get("editors") or {}:
        path = Path(directory) / f"curve-{editor}.csv"
        if not path.exists():
            raise LifelongError(f"missing {path}; run `dvc repro scaling@{editor}` first")
        curves.append(pd.read_csv(path).assign(editor=editor, model=section["model"], dataset=section["dataset"]))
    return pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()


def plot_scaling(curves: pd.DataFrame, path: str | Path, title: str = "Scaling"):
    """Metrics of all edits made so far against the number of edits, one panel per metric and one line per editor
    (each editor's stream is one run scored at its evaluation checkpoints)."""
    import seaborn as sns

    metrics = [m for m in (*METRICS, "locality_agreement") if m in curves and m != "locality"]
    curves = curves.assign(editor=curves.get("editor", "stream"))
    line, exact = _estimator_and_exact(curves)
    long = line.melt(id_vars=["n_edits", "editor"], value_vars=metrics, var_name="metric", value_name="value")
    sns.set_theme(style="whitegrid", context="notebook")
    grid = sns.relplot(data=long, x="n_edits", y="value", hue="editor", style="editor", col="metric", kind="line",
                       markers=True, dashes=False, height=3.0, aspect=1.1, facet_kws={"sharey": True})
    for metric, ax in grid.axes_dict.items():   # a sampled stream's exact all-edits score at its last checkpoint
        if len(exact):
            ax.scatter(exact.n_edits, exact[metric], marker="*", s=140, color="black", zorder=5,
                       label="every edit scored")
    if len(exact):
        grid.axes.flat[0].legend(loc="lower left", fontsize="small")
    grid.set(xscale="log", ylim=(-0.03, 1.03))
    grid.set_axis_labels("edits made so far (log scale)", "token accuracy (all edits so far)")
    grid.set_titles("{col_name}")
    grid.figure.suptitle(title, y=1.04)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    grid.savefig(path, dpi=110, bbox_inches="tight")
    return grid


def _estimator_and_exact(curves: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A curve scored on a sample past some size (runner.eval_sample_indices) has two rows at its last checkpoint:
    the sample's (the line's estimator) and every edit's (drawn apart, as a star)."""
    if "scored" not in curves:
        return curves, curves.iloc[:0]
    keys = ["editor", "n_edits"]
    sampled = curves[curves.scored == "sample"].set_index(keys).index
    exact = curves.set_index(keys).index.isin(sampled) & (curves.scored == "all").to_numpy()
    return curves[~exact], curves[exact]


def plot_stream_cost(curve: pd.DataFrame, path: str | Path, title: str = "Cost along the stream"):
    """Two panels against the edits made: cumulative edit and evaluation seconds, and the process's memory (current
    and peak RSS) at each evaluation checkpoint. Flat memory is what a stream of any length needs."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    points = _estimator_and_exact(curve.assign(editor="stream"))[0]
    sns.set_theme(style="whitegrid", context="notebook")
    fig, (time_ax, memory_ax) = plt.subplots(1, 2, figsize=(10, 3.4))
    for column, label in (("edit_seconds", "editing"), ("eval_seconds", "evaluation")):
        if column in points:
            time_ax.plot(points.n_edits, points[column] / 60, marker="o", label=label)
    time_ax.set(xscale="log", xlabel="edits made so far (log scale)", ylabel="minutes (cumulative)")
    time_ax.legend()
    for column, label in (("rss_mb", "RSS now"), ("peak_rss_mb", "peak RSS")):
        if column in points:
            memory_ax.plot(points.n_edits, points[column] / 1024, marker="o", label=label)
    memory_ax.set(xscale="log", xlabel="edits made so far (log scale)", ylabel="GiB", ylim=(0, None))
    memory_ax.legend()
    fig.suptitle(title)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def dvc_plots_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per run (`model · dataset · editor · T=n`), the table `dvc plots diff` draws with one bar per revision:
    comparing two experiments (`dvc exp run -S ...`) shows every run each changed."""
    run = (results.model + " · " + results.dataset + " · " + results.editor + " · T=" + results.n_edits.astype(str))
    return pd.DataFrame({"run": run, **{m: results[m].round(4) for m in ("reliability", "generalization",
                                                                          "locality_agreement")}})


def headline(results: pd.DataFrame, real_models: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Small metrics file for `dvc metrics show`: per dataset (`MODEL: dataset` for a real model, `testbed: dataset`
    for the mean over the tiny models) and editor, the scores at that dataset's largest T."""
    out: dict[str, Any] = {}
    data = beside_testbed(results, list(real_models)).astype({"dataset": str})
    top = data[data.n_edits == data.groupby("dataset").n_edits.transform("max")]
    for (dataset, editor), group in top.groupby(["dataset", "editor"]):
        entry = {m: round(float(group[m].mean()), 4) for m in METRICS if group[m].notna().any()}
        if "target_ppl_clip100" in group and group.target_ppl_clip100.notna().any():
            entry["target_ppl_clip100"] = round(float(group.target_ppl_clip100.mean()), 3)
        entry["seconds_per_edit"] = round(float(group.seconds_per_edit.mean()), 4)
        entry["T"] = int(group.n_edits.iloc[0])
        out.setdefault(dataset, {})[editor] = entry
    return out


def collect_sequential(params: dict[str, Any], directory: str | Path) -> pd.DataFrame:
    """The WISE sequential runs (one per mode in params.yaml `wise_sequential.modes`)."""
    section = params.get("wise_sequential") or {}
    rows = []
    for mode in section.get("modes") or {}:
        path = Path(directory) / mode / f"T{int(section['n_edits'])}" / "summary.json"
        if not path.exists():
            raise LifelongError(f"missing {path}; run `dvc repro wise_sequential` first")
        s = io.read_json(path)
        rows.append({"mode": mode, "model": s["model"], "n_edits": s["n_edits"],
                     **{m: s[m] for m in (*METRICS, "locality_agreement", "seconds_per_edit")},
                     "memories": (s.get("editor_report") or {}).get("memories")})
    return pd.DataFrame(rows)


def plot_sequential(frame: pd.DataFrame, path: str | Path, title: str = "WISE-Merge vs WISE-Retrieve"):
    import matplotlib.pyplot as plt
    import seaborn as sns

    long = frame.melt(id_vars=["mode"], value_vars=list(METRICS), var_name="metric", value_name="value")
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(6, 3.4))
    sns.barplot(data=long, x="metric", y="value", hue="mode", ax=ax)
    ax.set(ylim=(0, 1.05), xlabel="", ylabel="token accuracy",
           title=f"{title} (T={int(frame.n_edits.iloc[0])})" if len(frame) else title)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig
