"""The papers' tables (lifelong/pipeline/tables.py): the published numbers file and its refusals, expected runs
shown as 'missing' when absent, published rows merged per T, the UltraEdit layout and the Markdown writer."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from lifelong.core.config import load_params
from lifelong.core.errors import ConfigError
from lifelong.core.paths import ROOT
from lifelong.editors.registry import EDITORS
from lifelong.pipeline import tables


@pytest.fixture(scope="module")
def params():
    return load_params(ROOT / "params.yaml")


def test_the_repository_published_file_loads_and_every_source_is_cited(params):
    published = tables.load_published(ROOT / "reports" / "published.yaml", params, EDITORS)
    assert len(published.entries) >= 40
    assert set(published.entries.source) == set(published.sources)
    wise = published.rows("zsre", "wise")
    row = wise[(wise.model == "llama-2-7b") & (wise.editor == "wise") & (wise.n_edits == 1000)].iloc[0]
    assert (row.reliability, row.generalization, row.locality_agreement) == (0.77, 0.72, 1.00)
    assert "to be checked" in published.sources["ultraedit-table2"]["status"]


def _published(tmp_path, entry: dict, source: dict | None = None):
    path = tmp_path / "published.yaml"
    path.write_text(yaml.safe_dump({
        "sources": {"paper": source or {"citation": "A paper, Table 2", "setting": "s", "layout": "wise"}},
        "methods_not_in_suite": ["RLEdit"],
        "entries": [{"source": "paper", "model": "llama-2-7b", "dataset": "zsre", "editor": "wise", "n_edits": 10,
                     "reliability": 0.9, **entry}]}))
    return path


@pytest.mark.parametrize("entry, message", [
    ({"model": "llama-9b"}, r"entries\[0\] \(paper llama-9b zsre wise T=10\): model 'llama-9b' is not one the report knows"),
    ({"dataset": "zsrE"}, r"dataset 'zsrE' is not one the report knows; known: .*zsre"),
    ({"editor": "ROME"}, r"editor 'ROME' is not one the report knows; known: .*RLEdit"),
    ({"reliabilty": 0.5}, r"\['reliabilty'\] are not metrics the report knows"),
    ({"source": "other"}, r"source 'other' is not one the report knows; known: paper"),
])
def test_a_published_entry_the_report_cannot_place_is_an_error_that_names_it(tmp_path, params, entry, message):
    with pytest.raises(ConfigError, match=message):
        tables.load_published(_published(tmp_path, entry), params, EDITORS)


def test_a_published_source_needs_a_citation_and_a_layout(tmp_path, params):
    with pytest.raises(ConfigError, match=r"sources.paper: needs a `citation` and a `layout`"):
        tables.load_published(_published(tmp_path, {}, {"citation": "x", "layout": "table"}), params, EDITORS)
    known = tables.load_published(_published(tmp_path, {"editor": "RLEdit"}), params, EDITORS)   # listed as not ours
    assert known.entries.editor.tolist() == ["RLEdit"]


def _runs(missing_wise_t10: bool = True) -> pd.DataFrame:
    """Expected runs of one model and dataset, the WISE T = 10 run absent, joined as tables.with_runs does."""
    expected = pd.DataFrame([{"model": "m", "dataset": "zsre", "editor": e, "n_edits": t, "run": f"runs/{e}/T{t}"}
                             for e in ("ft", "wise") for t in (1, 10)])
    results = pd.DataFrame([{"model": "m", "dataset": "zsre", "editor": e, "n_edits": t, "n_blocks": 10 // t,
                             "reliability": r, "generalization": r - 0.1, "locality": 0.3, "locality_agreement": 0.95,
                             "pre_reliability": 0.1, "pre_generalization": 0.12, "pre_locality": 0.3,
                             "edit_seconds": 5.0 * t, "seconds_per_edit": 5.0 * t / (t * (10 // t)),
                             "peak_rss_mb": 1000.0, "grid": "g"}
                            for e, t, r in (("ft", 1, 0.8), ("ft", 10, 0.6), ("wise", 1, 0.9), ("wise", 10, 0.7))
                            if not (missing_wise_t10 and e == "wise" and t == 10)])
    return tables.with_runs(expected, results)


def test_the_wise_table_marks_an_absent_expected_run_and_merges_published_rows_per_t(tmp_path, params):
    published = tables.load_published(_published(tmp_path, {}), params, EDITORS)
    table = tables.flat(tables.wise_table(_runs(), "m", "zsre", published, params))
    assert table.loc["ft (m)", "T=10 Rel"] == 0.6 and table.loc["wise (m)", "T=1 Rel"] == 0.9
    assert table.loc["wise (m)", "T=10 Rel"] == "missing" == table.loc["wise (m)", "T=10 Loc"]
    assert table.loc["unedited (m)", "T=1 Rel"] == 0.1 and table.loc["unedited (m)", "T=1 Loc"] == 1.0
    label = "published: wise (Llama-2-7b-hf, paper)"
    assert table.loc[label, "T=10 Rel"] == 0.9 and table.loc[label, "T=1 Rel"] == ""
    assert list(table.index) == ["ft (m)", "wise (m)", "unedited (m)", label]


def test_the_ultraedit_table_takes_the_largest_t_every_editor_reached():
    table = tables.ultra_table(_runs(), "zsre")
    assert table["T"].tolist() == [1, 1]   # WISE has no T = 10 run, so T = 1 is the common one
    complete = tables.ultra_table(_runs(missing_wise_t10=False), "zsre")
    assert complete["T"].tolist() == [10, 10] and complete.loc["ft (m)", "ES"] == 0.6
    assert complete.loc["ft (m)", "edits/s"] == pytest.approx(10 / 50.0)


def test_tables_are_written_as_csv_and_markdown_with_the_caption_first(tmp_path):
    frame = pd.DataFrame({"T": [1, 20000], "ES": [0.456, np.nan], "edit s": [12.34, np.nan]},
                         index=pd.Index(["ours", "published: x"], name="editor"))
    csv, md = tables.write_table(frame, tmp_path / "t", "**A caption.**")
    text = md.read_text()
    assert text.startswith("**A caption.**\n\n| editor")
    assert "| ours         |     1 | 0.46 |     12.3 |" in text          # per-column formats, right-aligned
    assert "| published: x | 20000 |      |          |" in text          # NaN shows as an empty cell
    assert pd.read_csv(csv).columns.tolist() == ["editor", "T", "ES", "edit s"]


# -- the README's results section is generated from the tables ------------------------------------------

def test_the_readme_results_section_equals_the_committed_tables():
    from lifelong.pipeline import readme

    assert readme.main(["--check"]) == 0, "run `python -m lifelong.pipeline.readme` after rebuilding reports/tables/"


def test_the_readme_section_is_replaced_between_its_markers_only(tmp_path):
    from lifelong.core.errors import LifelongError
    from lifelong.pipeline import readme

    (tmp_path / "all").mkdir()
    (tmp_path / "all" / "t.md").write_text("**caption**\n\n| a |\n|---|\n| 1 |\n")
    text = f"# Title\n\nbefore\n{readme.BEGIN}\nstale numbers\n{readme.END}\nafter\n"
    out = readme.with_results(text, readme.results_block(tmp_path, ("all/t.md",)))
    assert out == (f"# Title\n\nbefore\n{readme.BEGIN}\nFrom `reports/tables/all/t.md`:\n\n**caption**\n\n| a |\n|---|\n"
                   f"| 1 |\n{readme.END}\nafter\n")
    with pytest.raises(LifelongError, match="has no results section"):
        readme.with_results("# no markers", "x")
    with pytest.raises(LifelongError, match="missing.md does not exist: build it with"):
        readme.results_block(tmp_path, ("all/missing.md",))


def test_the_notebook_index_lists_every_executed_notebook_from_its_header(tmp_path):
    import nbformat

    from lifelong.core.errors import LifelongError
    from lifelong.pipeline import readme
    from lifelong.pipeline.nbrun import normalise, run_header

    def executed(path, title, stage):
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {title}\n\nText.")]), path)
        normalise(path, run_header("notebooks/x.ipynb", {}, stage, "1 s wall clock"))

    notebooks = tmp_path / "reports" / "notebooks"
    executed(notebooks / "edit-a.ipynb", "3. One grid cell", "edit@a")
    executed(notebooks / "sweep-a.ipynb", "Sweep", None)
    executed(notebooks / "extended" / "t1000-a.ipynb", "3. One grid cell", "extended/dvc.yaml:edit_t1000@a")
    lines = readme.notebook_index(notebooks).splitlines()
    assert "- [edit-a](notebooks/edit-a.ipynb): 3. One grid cell (stage `edit@a`)" in lines
    assert "- [sweep-a](notebooks/sweep-a.ipynb): Sweep (run outside DVC)" in lines
    extended = lines.index("- [t1000-a](notebooks/extended/t1000-a.ipynb): 3. One grid cell "
                           "(stage `extended/dvc.yaml:edit_t1000@a`)")
    assert extended > next(i for i, line in enumerate(lines) if line.startswith("## Named targets"))
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Old")]), notebooks / "old.ipynb")
    with pytest.raises(LifelongError, match="old.ipynb has no run header: execute it with"):
        readme.notebook_index(notebooks)


def test_the_comparison_figures_are_drawn_from_the_runs(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from lifelong.pipeline import figures

    runs = _runs(missing_wise_t10=False).assign(reliability_em=[0.5, 0.4, 0.9, 0.6])
    for plot in (figures.plot_tradeoff, figures.plot_cost, figures.plot_generation_gap):
        fig = plot(runs, "m", "zsre", tmp_path / f"{plot.__name__}.png")
        assert (tmp_path / f"{plot.__name__}.png").stat().st_size > 5_000
        title = fig._suptitle.get_text() if fig._suptitle else fig.axes[0].get_title()
        assert "T = 10" in title and "m on zsre" in title   # the largest T every editor reached
    assert figures.plot_generation_gap(runs.drop(columns="reliability_em"), "m", "zsre", tmp_path / "none.png") is None
