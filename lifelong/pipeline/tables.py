"""The papers' tables with the published numbers beside ours (reports/tables/, CSV + Markdown).

* `wise_table`: the WISE paper's Table 2 layout. One table per (model, dataset); rows are editors, then the
  unedited model; columns are Rel / Gen / Loc / Loc-agreement at each T. Published rows (reports/published.yaml)
  for the same dataset follow, labelled with their model and source. An expected run that is absent is the
  string "missing", never a silently shorter table; a T the grid does not run is left empty.
* `ultra_table`: the UltraEdit paper's Table 2 layout. Per dataset, rows are editors at the largest T that every
  editor reached: ES / GS / LS (reliability / generalization / gold locality), generation exact match, edit
  seconds, edits per second and peak memory.
* `load_published`: reads and checks reports/published.yaml. An entry naming a model, dataset, editor, source
  or metric the suite does not know is an error that names the entry.

Every number traces to a run: the `run` column of our rows is the run directory the number was read from.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd
import yaml

from ..core import io
from ..core.errors import ConfigError
from ..eval import registry
from .cell import cell_name, expected_cells, protocol, run_paths, variants

# column label -> summary field, in the WISE paper's order (its Loc is our agreement with the unedited model)
WISE_COLUMNS = {"Rel": "reliability", "Gen": "generalization", "Loc": "locality_agreement", "Loc (gold)": "locality"}
ULTRA_COLUMNS = {"ES": "reliability", "GS": "generalization", "LS": "locality", "EM": "reliability_em",
                 "edit s": "edit_seconds", "edits/s": "edits_per_second", "peak MB": "peak_rss_mb"}
PUBLISHED_KEYS = {"source", "model", "dataset", "editor", "n_edits"}
UNEDITED = "unedited"


# -- published numbers -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Published:
    entries: pd.DataFrame              # one row per entry: source, model, dataset, editor, n_edits, metric columns
    sources: dict[str, dict[str, str]]

    def rows(self, dataset: str, layout: str) -> pd.DataFrame:
        """The entries for `dataset` whose source uses `layout` (wise | ultraedit)."""
        if self.entries.empty:
            return self.entries
        mine = [k for k, v in self.sources.items() if v.get("layout") == layout]
        return self.entries[(self.entries.dataset == dataset) & self.entries.source.isin(mine)]


def load_published(path: str | Path, params: Mapping[str, Any], editors: Iterable[str]) -> Published:
    """reports/published.yaml, checked against the suite's models, datasets, editors and metrics."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    sources = data.get("sources") or {}
    for name, source in sources.items():
        if not isinstance(source, Mapping) or source.get("layout") not in ("wise", "ultraedit") or not source.get("citation"):
            raise ConfigError(f"{path} sources.{name}: needs a `citation` and a `layout` (wise or ultraedit)")
    known_editors = {*editors, UNEDITED, *(data.get("methods_not_in_suite") or [])}
    known_editors |= {f"{e}-{v}" for e in editors for v in variants(params, e)}
    metrics = set(registry.summary_columns()) | set(registry.METRICS)
    rows = []
    for i, entry in enumerate(data.get("entries") or []):
        where = f"{path} entries[{i}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {entry!r}")
        missing = sorted(PUBLISHED_KEYS - set(entry))
        if missing:
            raise ConfigError(f"{where}: missing {missing}")
        where += f" ({entry['source']} {entry['model']} {entry['dataset']} {entry['editor']} T={entry['n_edits']})"
        checks = (("source", sources), ("model", params.get("models") or {}), ("dataset", params.get("datasets") or {}),
                  ("editor", known_editors))
        for key, known in checks:
            if entry[key] not in known:
                raise ConfigError(f"{where}: {key} {entry[key]!r} is not one the report knows; known: "
                                  f"{', '.join(sorted(map(str, known)))}")
        values = {k: v for k, v in entry.items() if k not in PUBLISHED_KEYS}
        unknown = sorted(set(values) - metrics)
        if unknown:
            raise ConfigError(f"{where}: {unknown} are not metrics the report knows; known: {', '.join(sorted(metrics))}")
        if not values:
            raise ConfigError(f"{where}: no metric value")
        rows.append(dict(entry))
    return Published(pd.DataFrame(rows), {k: dict(v) for k, v in sources.items()})


def published_label(row: Mapping[str, Any], params: Mapping[str, Any]) -> str:
    """'published: EDITOR (the model's hub name, SOURCE)': one row per (method, model, source)."""
    hub = ((params.get("models") or {}).get(row["model"]) or {}).get("hub", row["model"])
    return f"published: {row['editor']} ({hub.split('/')[-1]}, {row['source']})"


# -- our runs, with every expected one accounted for -------------------------------------------------

def expected_runs(params: Mapping[str, Any], grid: str, runs_dir: str | Path) -> pd.DataFrame:
    """One row per run the grid section expects: model, dataset, editor label, T and its run directory."""
    rows = []
    for model, dataset, editor in expected_cells(params[grid]):
        kept = protocol(params, dataset, grid, editor).datasets
        if kept is not None and dataset not in kept:
            continue
        for variant, n, folder in run_paths(params, dataset, editor, grid):
            rows.append({"model": model, "dataset": dataset, "editor": f"{editor}-{variant}" if variant else editor,
                         "n_edits": n, "run": str(Path(runs_dir) / cell_name(model, dataset, editor) / folder)})
    return pd.DataFrame(rows, columns=["model", "dataset", "editor", "n_edits", "run"])


def with_runs(expected: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """The expected runs joined with their results (a run without one keeps NaN metrics and missing=True)."""
    keys = ["model", "dataset", "editor", "n_edits"]
    merged = expected.merge(results.drop(columns=["grid"], errors="ignore").drop_duplicates(keys), on=keys, how="left",
                            indicator=True)
    merged["missing"] = merged.pop("_merge") == "left_only"
    return merged


def _cell(value: Any, missing: bool) -> Any:
    return "missing" if missing else (round(float(value), 2) if pd.notna(value) else "")


def wise_table(runs: pd.DataFrame, model: str, dataset: str, published: Published | None = None,
               params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Rows: our editors, the unedited model, then the published rows for the dataset; columns (T, metric)."""
    ours = runs[(runs.model == model) & (runs.dataset == dataset)]
    pub = published.rows(dataset, "wise") if published is not None else pd.DataFrame()
    ts = sorted({int(t) for t in ours.n_edits} | ({int(t) for t in pub.n_edits} if len(pub) else set()))
    shown = dict(WISE_COLUMNS)
    if any("target_ppl" in f and f["target_ppl"].notna().any() for f in (ours, pub) if len(f)):
        shown["PPL"] = "target_ppl"   # the hallucination set's Rel in the WISE paper (lower is better)
    columns = pd.MultiIndex.from_tuples([(f"T={t}", label) for t in ts for label in shown])
    rows, index = [], []
    for editor, group in ours.groupby("editor", sort=False):
        by_t = {int(r.n_edits): r for r in group.itertuples()}
        rows.append([_cell(getattr(by_t[t], field, None), by_t[t].missing) if t in by_t else ""
                     for t in ts for field in shown.values()])
        index.append(f"{editor} ({model})")
    pre = ours[~ours.missing]
    if len(pre):   # the unedited model: the pre-edit scores of the same records (agreement with itself is 1)
        first = pre.sort_values("n_edits").groupby("n_edits").first()
        values = {"reliability": "pre_reliability", "generalization": "pre_generalization", "locality": "pre_locality",
                  "target_ppl": "pre_target_ppl"}
        rows.append([(_cell(first.loc[t, values[f]] if values[f] in first else None, False) if f in values else 1.0)
                     if t in first.index else "" for t in ts for f in shown.values()])
        index.append(f"{UNEDITED} ({model})")
    for _, entry in (pub.iterrows() if len(pub) else []):
        row = [""] * len(columns)
        for j, (t, label) in enumerate(columns):
            field = shown[label]
            if t == f"T={int(entry.n_edits)}" and field in entry and pd.notna(entry[field]):
                row[j] = round(float(entry[field]), 2)
        label = published_label(entry, params or {})
        if label in index:   # one row per (method, model, source): fill in this T
            k = index.index(label)
            rows[k] = [b if b != "" else a for a, b in zip(rows[k], row)]
        else:
            rows.append(row)
            index.append(label)
    return pd.DataFrame(rows, index=pd.Index(index, name="editor"), columns=columns)


def ultra_table(runs: pd.DataFrame, dataset: str, models: Iterable[str] | None = None,
                published: Published | None = None, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Per editor, at the largest T that every editor of the dataset reached (UltraEdit Table 2's columns),
    then the published rows of the dataset (at their own T)."""
    done = runs[(runs.dataset == dataset) & ~runs.missing]
    if models is not None:
        done = done[done.model.isin(list(models))]
    columns = ["editor", "T", *ULTRA_COLUMNS]
    rows = []
    if not done.empty:
        common = done.groupby(["model", "editor"]).n_edits.max().min()
        at = done[done.n_edits == common].copy()
        at["edits_per_second"] = at.n_edits * at.n_blocks / at.edit_seconds.where(at.edit_seconds > 0)
        for r in at.to_dict("records"):
            rows.append({"editor": f"{r['editor']} ({r['model']})", "T": int(r["n_edits"]),
                         **{label: r.get(f) for label, f in ULTRA_COLUMNS.items()}})
    pub = published.rows(dataset, "ultraedit") if published is not None else pd.DataFrame()
    for _, entry in (pub.iterrows() if len(pub) else []):
        rows.append({"editor": published_label(entry, params or {}), "T": int(entry.n_edits),
                     **{label: entry.get(f) for label, f in ULTRA_COLUMNS.items() if f in entry and pd.notna(entry.get(f))}})
    table = pd.DataFrame(rows, columns=columns).set_index("editor").astype({"T": int})
    return table.astype({c: float for c in ULTRA_COLUMNS}).round(
        {"ES": 2, "GS": 2, "LS": 2, "EM": 2, "edit s": 1, "edits/s": 2, "peak MB": 0})


# -- writing -------------------------------------------------------------------------------------------

def flat(table: pd.DataFrame) -> pd.DataFrame:
    """Column MultiIndex (T, metric) -> "T=1 Rel" strings, for CSV and Markdown."""
    out = table.copy()
    if isinstance(out.columns, pd.MultiIndex):
        out.columns = [" ".join(map(str, c)) for c in out.columns]
    return out


def grid_runs(params: Mapping[str, Any], runs_dirs: Mapping[str, str], results: pd.DataFrame) -> pd.DataFrame:
    """Every expected run of the grids {grid section: its runs folder}, joined with `results` (report.collect's
    rows, with their `grid`). A (model, dataset, editor, T) that two grids share is taken from the first."""
    parts = [with_runs(expected_runs(params, grid, folder), results[results.grid == grid]).assign(grid=grid)
             for grid, folder in runs_dirs.items()]
    runs = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return runs.drop_duplicates(["model", "dataset", "editor", "n_edits"]) if len(runs) else runs


# Beyond Rel/Gen/Loc (issue 13): label (how it is measured) -> summary field, and the unedited model's value
BEYOND_COLUMNS = {"Port (teacher-forced)": "portability", "Port (generated)": "portability_em",
                  "Loc lists (agreement)": "locality_lists", "Fluency (generated, bits)": "fluency",
                  "Held-out PPL ratio": "heldout_ppl_ratio", "Known facts kept": "knowledge_retained"}
# the unedited model where no pre_ value is recorded: agreement with itself, ratio to itself
UNEDITED_VALUE = {"locality_agreement": 1.0, "locality_lists": 1.0, "heldout_ppl_ratio": 1.0}


def beyond_table(runs: pd.DataFrame, model: str, dataset: str) -> pd.DataFrame | None:
    """Rows: our editors, then the unedited model; columns (T, metric) for each metric beyond Rel/Gen/Loc that
    this model and dataset have (None when it has none)."""
    ours = runs[(runs.model == model) & (runs.dataset == dataset)]
    shown = {label: f for label, f in BEYOND_COLUMNS.items() if f in ours and ours[f].notna().any()}
    if not shown or not len(ours):
        return None
    ts = sorted({int(t) for t in ours.n_edits})
    columns = pd.MultiIndex.from_tuples([(f"T={t}", label) for t in ts for label in shown])
    rows, index = [], []
    for editor, group in ours.groupby("editor", sort=False):
        by_t = {int(r.n_edits): r for r in group.itertuples()}
        rows.append([_cell(getattr(by_t[t], f), by_t[t].missing) if t in by_t else "" for t in ts
                     for f in shown.values()])
        index.append(editor)
    pre = ours[~ours.missing]
    rows.append([_cell(UNEDITED_VALUE.get(f, pre[pre.n_edits == t].get(f"pre_{f}", pd.Series(dtype=float)).mean()), False)
                 for t in ts for f in shown.values()])
    index.append(UNEDITED)
    return pd.DataFrame(rows, index=pd.Index(index, name="editor"), columns=columns)


def wise_caption(runs: pd.DataFrame, model: str, dataset: str, params: Mapping[str, Any],
                 published: Published | None) -> str:
    """What the table shows, and how our setting differs from the papers'."""
    ours = runs[(runs.model == model) & (runs.dataset == dataset) & ~runs.missing]
    kind = "a tiny testbed model" if model in (params.get("testbed") or {}) else "a real pretrained model"
    points = "; ".join(f"T={int(t)}: {int(g.n_blocks.max())} block(s) of {int(t)}" for t, g in ours.groupby("n_edits"))
    lines = [f"**{model} on {dataset}** ({kind}). Rel / Gen: teacher-forced token accuracy of the new target for the "
             "edit prompt / its rephrase; Loc: agreement with the unedited model's tokens on unrelated prompts (the "
             "WISE paper's Loc); Loc (gold): accuracy on the locality answers. Each block starts from the unedited "
             f"model and edits the dataset's next records in order ({points or 'no run yet'}); 'missing' marks an "
             "expected run without results."]
    pub = published.rows(dataset, "wise") if published is not None else pd.DataFrame()
    for source in (sorted(set(pub.source)) if len(pub) else []):
        meta = published.sources[source]
        lines.append(f"Published ({source}): {meta['citation']}; {meta['setting']}."
                     + (f" Status: {meta['status']}." if meta.get("status") else ""))
    if len(pub):
        lines.append(f"Differences: our model is {model}, not a 7-8B model; we edit the first records of the data "
                     f"directory's {dataset} file; our largest T here is {int(ours.n_edits.max()) if len(ours) else 0}, "
                     f"the papers' {int(pub.n_edits.max())}.")
    return "\n\n".join(lines)


FLOATS = {"T": "{:.0f}", "edit s": "{:.1f}", "peak MB": "{:.0f}"}   # every other number: two decimals


def _as_text(table: pd.DataFrame) -> pd.DataFrame:
    """Every cell as the text the Markdown table shows: numbers formatted per column, NaN empty."""
    def show(value, column):
        if isinstance(value, str) or value is None:
            return value or ""
        if pd.isna(value):
            return ""
        return FLOATS.get(column, "{:.2f}").format(float(value))
    return pd.DataFrame({c: [show(v, c) for v in table[c]] for c in table.columns}, index=table.index)


def write_table(table: pd.DataFrame, stem: str | Path, caption: str) -> tuple[Path, Path]:
    """stem.csv and stem.md (the caption above a Markdown table), each written atomically."""
    stem = Path(stem)
    table = flat(table)
    csv, md = stem.with_suffix(".csv"), stem.with_suffix(".md")
    io.write_csv(csv, table.reset_index() if table.index.name else table)
    align = (("left",) if table.index.name else ()) + ("right",) * len(table.columns)
    body = _as_text(table).to_markdown(index=bool(table.index.name), disable_numparse=True, colalign=align)
    io.atomic_write(md, lambda p: Path(p).write_text(f"{caption}\n\n{body}\n", encoding="utf-8"))
    return csv, md


# -- the figure: ours against T, the published points as hollow markers ---------------------------------

def plot_beside_published(runs: pd.DataFrame, published: Published, model: str, dataset: str, path: str | Path,
                          metrics: Mapping[str, str] = WISE_COLUMNS):
    """One panel per metric: our editors on `model` against T (lines, filled markers), and the published WISE-layout
    points of the same dataset and editor (hollow markers, one marker shape per published model)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    titles = {"reliability": "Rel (reliability)", "generalization": "Gen (generalization)",
              "locality_agreement": "Loc (agreement with the unedited model)"}
    shown = {titles.get(field, label): field for label, field in metrics.items() if field in titles}   # no gold Loc
    ours = runs[(runs.model == model) & (runs.dataset == dataset) & ~runs.missing]
    pub = published.rows(dataset, "wise")
    pub = pub[pub.editor.isin(set(ours.editor))] if len(pub) else pub
    editors = list(dict.fromkeys(ours.editor))
    colours = dict(zip(editors, sns.color_palette("tab10", len(editors))))
    shapes = dict(zip(sorted(set(pub.model)) if len(pub) else [], ["o", "s", "^", "D"]))
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 3.6), sharey=True, squeeze=False)
    for ax, (label, field) in zip(axes[0], shown.items()):
        for editor in editors:
            line = ours[ours.editor == editor].sort_values("n_edits")
            ax.plot(line.n_edits, line[field], marker="o", color=colours[editor], label=f"{editor} (ours)")
            if len(pub) and field in pub:
                for name, points in pub[(pub.editor == editor) & pub[field].notna()].groupby("model"):
                    ax.scatter(points.n_edits, points[field], s=60, facecolors="none", edgecolors=[colours[editor]],
                               marker=shapes[name], linewidths=1.5, label=f"{editor} ({name}, published)")
        ticks = sorted({int(t) for t in ours.n_edits} | ({int(t) for t in pub.n_edits} if len(pub) else set()))
        ax.set(xscale="log", ylim=(-0.03, 1.03), title=label, xlabel="edits before evaluation (T, log scale)")
        ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
        ax.minorticks_off()
    axes[0][0].set_ylabel("score (fraction)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    fig.legend(unique.values(), unique.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.suptitle(f"{model} on {dataset}: ours (lines) beside the published 7B numbers (hollow markers)", y=1.02)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig
