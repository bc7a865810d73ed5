"""One grid cell: an editor on a model and a dataset, at every T of the grid (one DVC stage, one notebook).

The grid (params.yaml `grid`) gives the T values (`n_edits`), about how many edits each T averages
over (`edits_per_point`) and the seed. A dataset entry may override them for itself under its own
`grid:` key (the hallucination set's long targets make it costlier per edit), and an editor section too
(`editors.NAME.grid`, a costly baseline run at fewer T), so each stage depends on exactly its own params.

An editor section may also name *variants* (`editors.NAME.variants: {mass: {turn_size: block}}`): settings
every cell of that editor also runs, reported as editor `NAME-VARIANT` (MEMIT-MASS is MEMIT with each
block of T edits in one turn; `block` stands for T). They live in `out_dir/VARIANT/T{n}/`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import pandas as pd

from ..core import io
from ..core.config import fill, load_params
from ..core.errors import ConfigError, MissingDataError
from ..core.paths import PARAMS
from ..data import load_dataset
from ..eval import registry
from .runner import RunSpec, run


@dataclass(frozen=True)
class Protocol:
    """How a cell runs: the T values, about how many edits each T averages over, the seed."""

    n_edits: tuple[int, ...] = (1, 10, 100)
    edits_per_point: int = 20
    seed: int = 0
    datasets: tuple[str, ...] | None = None   # an editor's `grid:` may run on these datasets only (others: skipped)

    def validate(self) -> None:
        if not self.n_edits or min(self.n_edits) < 1:
            raise ValueError(f"n_edits must be a non-empty list of T >= 1, got {list(self.n_edits)}")
        if self.edits_per_point < 1:
            raise ValueError(f"edits_per_point must be >= 1, got {self.edits_per_point}")


def protocol(params: Mapping[str, Any], dataset: str, grid: str = "grid", editor: str | None = None) -> Protocol:
    """The grid's protocol, with the dataset entry's own `grid:` overrides on top, then the editor's."""
    section = params.get(grid) or {}
    base = {k: section[k] for k in ("n_edits", "edits_per_point", "seed") if k in section}   # not grid.datasets
    own = ((params.get("datasets") or {}).get(dataset) or {}).get("grid") or {}
    by_editor = ((params.get("editors") or {}).get(editor) or {}).get("grid") or {} if editor else {}
    return fill(Protocol, {**base, **own, **by_editor},
                where=f"params.yaml {grid} (with datasets.{dataset}.grid{f', editors.{editor}.grid' if editor else ''})")


def variants(params: Mapping[str, Any], editor: str) -> dict[str, dict[str, Any]]:
    """`editors.NAME.variants`: variant name -> hyperparameter overrides (`block` = the run's T)."""
    found = ((params.get("editors") or {}).get(editor) or {}).get("variants") or {}
    if not isinstance(found, Mapping) or not all(isinstance(v, Mapping) for v in found.values()):
        raise ConfigError(f"params.yaml editors.{editor}.variants: expected a mapping of name -> overrides")
    return {str(name): dict(values) for name, values in found.items()}


def run_paths(params: Mapping[str, Any], dataset: str, editor: str, grid: str = "grid") -> list[tuple[str | None, int, str]]:
    """(variant, T, folder inside the cell) of every run a cell makes, in order."""
    ts = protocol(params, dataset, grid, editor).n_edits
    return [(v, int(n), f"{v}/T{n}" if v else f"T{n}") for v in (None, *variants(params, editor)) for n in ts]


def n_blocks(n_edits: int, edits_per_point: int, available: int | None = None) -> int:
    """How many rolled-back blocks of T edits make one grid point (about edits_per_point edits)."""
    blocks = max(1, math.ceil(edits_per_point / n_edits))
    if available is not None:
        blocks = max(1, min(blocks, available // n_edits))
    return blocks


def cell_name(model: str, dataset: str, editor: str) -> str:
    return f"{model}__{dataset}__{editor}"


def expected_cells(grid: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """Every (model, dataset, editor) of a grid section, in the order of the DVC matrix."""
    for model in grid["models"]:
        for dataset in grid["datasets"]:
            for editor in grid["editors"]:
                yield model, dataset, editor


def run_cell(*, model: str, dataset: str, editor: str, out_dir: str | Path, params_path: str | Path = PARAMS,
             grid: str = "grid", n_edits: list[int] | tuple[int, ...] | None = None, edits_per_point: int | None = None,
             seed: int | None = None, overrides: dict[str, Any] | None = None, skip_missing_data: bool = True,
             progress: bool = False) -> pd.DataFrame:
    """Run one editor on one model and dataset at every T, each into `out_dir/T{n}/`.

    The T values, `edits_per_point` and the seed come from the dataset's protocol unless given. With
    skip_missing_data, a dataset whose file is not in the data directory is not an error: the cell
    writes `out_dir/skipped.json` with the reason, and the report lists it as skipped. (The CLI, which
    runs one explicit experiment, always fails with the message instead.)
    Returns one row per T with every scalar field of its summary.json.
    """
    out = Path(out_dir)
    params = load_params(params_path)
    proto = protocol(params, dataset, grid, editor)
    if proto.datasets is not None and dataset not in proto.datasets:   # a costly baseline kept off this dataset
        reason = f"params.yaml editors.{editor}.grid.datasets is {list(proto.datasets)}: {dataset!r} is not run"
        io.write_json(out / "skipped.json", {"model": model, "dataset": dataset, "editor": editor, "reason": reason})
        print(f"skipped: {reason}")
        return pd.DataFrame()
    try:
        available = len(load_dataset(dataset, params))
    except MissingDataError as exc:
        if not skip_missing_data:
            raise
        io.write_json(out / "skipped.json", {"model": model, "dataset": dataset, "editor": editor,
                                             "reason": str(exc)})
        print(f"skipped: {exc}")
        return pd.DataFrame()
    rows = []
    per_point = proto.edits_per_point if edits_per_point is None else edits_per_point
    for variant, extra in [(None, {}), *variants(params, editor).items()]:
        for n in n_edits or proto.n_edits:
            settings = {**{k: (int(n) if v == "block" else v) for k, v in extra.items()}, **(overrides or {})}
            spec = RunSpec(model=model, dataset=dataset, editor=editor, n_edits=int(n), variant=variant,
                           seed=proto.seed if seed is None else seed, n_blocks=n_blocks(int(n), per_point, available),
                           overrides=settings, out_dir=out / (f"{variant}/T{n}" if variant else f"T{n}"),
                           params_path=Path(params_path), progress=progress)
            summary = run(spec)
            rows.append({k: v for k, v in summary.items() if not isinstance(v, (dict, list))})
    return pd.DataFrame(rows)


def cell_summaries(table: pd.DataFrame) -> pd.DataFrame:
    """The columns of a cell's table a reader wants: per T, before -> after of each metric, then cost."""
    if table.empty:
        return table
    metrics = [m for m in registry.METRICS if m in table and table[m].notna().any()]
    metrics += [f"{m}_clip100" for m in metrics if f"{m}_clip100" in table]
    pairs = [c for m in metrics for c in (f"pre_{m}", m) if c in table]
    cost = ["seconds_per_edit", "edit_seconds", "eval_seconds", "peak_rss_mb"]
    return table[["editor", "n_edits", "n_blocks", *pairs, *cost]].set_index(["editor", "n_edits"]).round(4)


def plot_cell(table: pd.DataFrame, title: str = ""):
    """Reliability, generalization and locality against T for one cell: after editing (filled markers,
    lines) and before (the unedited model, hollow markers). Returns the figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    metrics = [m for m in registry.HEADLINE if m in table and table[m].notna().any()]
    long = table.melt(id_vars=["editor", "n_edits"], value_vars=metrics, var_name="metric", value_name="after")
    pre = table.melt(id_vars=["n_edits"], value_vars=[f"pre_{m}" for m in metrics], var_name="metric",
                     value_name="before").assign(metric=lambda d: d.metric.str.removeprefix("pre_"))
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    style = "editor" if long.editor.nunique() > 1 else None   # an editor's variants (MEMIT-MASS): dashed lines
    sns.lineplot(data=long, x="n_edits", y="after", hue="metric", style=style, marker="o", ax=ax)
    palette = dict(zip(metrics, sns.color_palette(n_colors=len(metrics))))
    for metric, group in pre.groupby("metric"):
        ax.scatter(group.n_edits, group.before, facecolors="none", edgecolors=palette[metric], s=40, zorder=3)
    ax.set(xscale="log", ylim=(-0.03, 1.03), xlabel="edits before evaluation (T)", ylabel="token accuracy",
           title=title + "\n(hollow: before editing)")
    ax.legend(title="after editing", fontsize="small")
    return fig
