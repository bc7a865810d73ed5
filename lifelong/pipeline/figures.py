"""The comparison figures a paper needs, drawn from the runs of tables.py (`tables.grid_runs`):

* `plot_tradeoff`: the "impossible triangle", Rel / Gen / Loc per editor at one T (grouped bars);
* `plot_cost`: seconds per edit and peak memory per editor (log y), with the hardware named;
* `plot_generation_gap`: teacher-forced reliability beside generated exact match, per editor (the "Mirage of
  Model Editing" gap);
* `plot_profile`: each editor's full profile at every T, one panel per metric on its own scale: Rel, Gen, Loc,
  portability, the harder locality lists, fluency and the held-out perplexity ratio (issue 13).

Each takes the runs of one model and dataset, saves a PNG and returns the figure (the notebook shows it).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..core.machine import hardware
from .tables import UNEDITED_VALUE

TRADEOFF = {"reliability": "Rel", "generalization": "Gen", "locality_agreement": "Loc (agreement)"}


def _done(runs: pd.DataFrame, model: str, dataset: str) -> pd.DataFrame:
    return runs[(runs.model == model) & (runs.dataset == dataset) & ~runs.missing]


def _common_t(done: pd.DataFrame) -> int:
    """The largest T every editor reached."""
    return int(done.groupby("editor").n_edits.max().min())


def _save(fig, path: str | Path):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def _grouped_bars(long: pd.DataFrame, columns: dict[str, str], ylabel: str, title: str, path: str | Path):
    """Bars of `long` (editor, column, value; columns: field -> legend label), one group per editor, 0 to 1."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    long = long.assign(column=long.column.map(columns))
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * long.editor.nunique() + 2), 3.6))
    sns.barplot(data=long, x="editor", y="value", hue="column", ax=ax)
    ax.set(ylim=(0, 1.05), xlabel="", ylabel=ylabel, title=title)
    ax.legend(title="", ncols=len(columns), loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    return _save(fig, path)


def _at_t(done: pd.DataFrame, columns: dict[str, str], t: int) -> pd.DataFrame:
    return done[done.n_edits == t].melt(id_vars=["editor"], value_vars=list(columns), var_name="column")


def plot_tradeoff(runs: pd.DataFrame, model: str, dataset: str, path: str | Path, n_edits: int | None = None):
    """Grouped bars: each editor's Rel, Gen and Loc (agreement) at T = n_edits (default: the largest common T)."""
    done = _done(runs, model, dataset)
    t = n_edits or _common_t(done)
    return _grouped_bars(_at_t(done, TRADEOFF, t), TRADEOFF, "score (fraction)",
                         f"{model} on {dataset}, T = {t}: the three properties per editor", path)


def plot_cost(runs: pd.DataFrame, model: str, dataset: str, path: str | Path, machine: str | None = None):
    """Two panels at the largest common T: seconds per edit and peak memory (MB), per editor, log y."""
    import matplotlib
    import matplotlib.pyplot as plt
    import seaborn as sns

    done = _done(runs, model, dataset)
    t = _common_t(done)
    at = done[done.n_edits == t].rename(columns={"seconds_per_edit": "seconds per edit"})   # each run's summary
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, column, unit in ((axes[0], "seconds per edit", "s per edit (log)"), (axes[1], "peak_rss_mb", "peak RSS, MB (log)")):
        sns.barplot(data=at, x="editor", y=column, hue="editor", legend=False, ax=ax)
        ax.set(yscale="log", xlabel="", ylabel=unit)
        ax.tick_params(axis="x", rotation=30)
    axes[1].set_ylim(100, at.peak_rss_mb.max() * 2)   # from 100 MB, so the bars show the scale, not the differences
    for ax in axes:
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axes[0].set_title("editing time")
    axes[1].set_title("peak memory of the run")
    fig.suptitle(f"{model} on {dataset}, T = {t}: cost per editor ({machine or hardware()})", y=1.02)
    fig.tight_layout()
    return _save(fig, path)


def plot_generation_gap(runs: pd.DataFrame, model: str, dataset: str, path: str | Path):
    """Per editor at the largest common T: teacher-forced reliability beside generated exact match."""
    done = _done(runs, model, dataset)
    if "reliability_em" not in done or done.reliability_em.isna().all():
        return None
    t = _common_t(done)
    columns = {"reliability": "teacher-forced accuracy", "reliability_em": "generated exact match"}
    return _grouped_bars(_at_t(done, columns, t), columns, "reliability (fraction of edits)",
                         f"{model} on {dataset}, T = {t}: teacher forcing against generation", path)


PROFILE = {"reliability": "Rel", "generalization": "Gen", "locality_agreement": "Loc (agreement)",
           "portability": "Portability", "locality_lists": "Loc lists (agreement)", "fluency": "Fluency (bits)",
           "heldout_ppl_ratio": "Held-out PPL ratio", "knowledge_retained": "Known facts kept"}


def plot_profile(runs: pd.DataFrame, model: str, dataset: str, path: str | Path):
    """One panel per metric this model and dataset have (own y scale), bars per editor and T; the dashed line is
    the unedited model's value."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    done = _done(runs, model, dataset)
    shown = {f: label for f, label in PROFILE.items() if f in done and done[f].notna().any()}
    if not len(done) or not shown:
        return None
    long = done.melt(id_vars=["editor", "n_edits"], value_vars=list(shown), var_name="metric").assign(
        T=lambda d: d.n_edits.astype(int).astype(str))
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, len(shown), figsize=(2.6 * len(shown) + 1, 3.6), squeeze=False)
    for ax, (field, label) in zip(axes[0], shown.items()):
        sns.barplot(data=long[long.metric == field], x="editor", y="value", hue="T", ax=ax,
                    legend=ax is axes[0][-1])
        pre = UNEDITED_VALUE.get(field, done[f"pre_{field}"].mean() if f"pre_{field}" in done else None)
        if pre is not None and pd.notna(pre):
            ax.axhline(pre, color="black", linestyle="--", linewidth=1)
        ax.set(title=label, xlabel="", ylabel="")
        ax.tick_params(axis="x", rotation=60)
    axes[0][-1].legend(title="T", loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    fig.suptitle(f"{model} on {dataset}: the full profile per editor (dashed: the unedited model)", y=1.03)
    fig.tight_layout()
    return _save(fig, path)
