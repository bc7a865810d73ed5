"""The executed-notebook header and normalisation of lifelong.pipeline.nbrun (no kernel needed)."""
from __future__ import annotations

import nbformat
import pytest

from lifelong.pipeline.nbrun import HEADER_ID, duration, normalise, run_header


@pytest.mark.parametrize("seconds, words", [(0.42, "0.42 s"), (5.31, "5.3 s"), (41.4, "41 s"), (59.4, "59 s"),
                                            (61, "1 min"), (195, "3.2 min"), (2843, "47 min"), (7200, "2.0 h")])
def test_duration_has_two_significant_figures(seconds, words):
    assert duration(seconds) == words


def test_header_names_notebook_stage_parameters_hardware_and_time():
    text = run_header("notebooks/edit.ipynb", {"model": "tiny-gpt2", "n_edits": 10, "long": "x" * 200},
                      "edit@tiny-gpt2-world-ft", "41 s wall clock")
    assert "- **What:** `notebooks/edit.ipynb`, as DVC stage `edit@tiny-gpt2-world-ft`" in text
    assert "`dvc repro edit@tiny-gpt2-world-ft`" in text
    assert "`model = 'tiny-gpt2'`, `n_edits = 10`" in text and "xxx...`" in text and "x" * 100 not in text
    assert "- **Hardware:** CPU, " in text or "- **Hardware:** GPU " in text
    assert "torch " in text and "- **Time:** 41 s wall clock" in text
    bare = run_header("notebooks/report.ipynb", {}, None, "3 s")
    assert "DVC stage" not in bare and "the notebook's defaults" in bare


def test_normalise_puts_one_header_first_and_strips_volatile_metadata(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Title"), nbformat.v4.new_code_cell("1")])
    nb.metadata["papermill"] = {"start_time": "now", "parameters": {"a": 1}}
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stderr", text="50%|#### | 1/2\rwarn\nwarn\n")]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    normalise(path, "first header")
    normalise(path, "second header")   # a rerun replaces the header, never stacks a second one
    done = nbformat.read(path, as_version=4)
    assert [c.get("id") for c in done.cells].count(HEADER_ID) == 1
    assert done.cells[0].source == "second header" and done.cells[1].source == "# Title"
    assert done.metadata.papermill == {"parameters": {"a": 1}}
    assert done.cells[2].outputs[0]["text"] == "warn\n"   # progress bar gone, the repeated warning shown once
