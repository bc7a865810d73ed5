"""Crash and resume, for every editor in the registry: a run SIGKILLed at five seeded points in turn, each
time resumed with --resume, ends with the uninterrupted run's results byte for byte (timings aside). The
uninterrupted run itself is repeated in a second process, which proves that a seeded CPU run is deterministic.

The kill points (tests/resume_support.py names them) are drawn from every point the run passes, with a seed per
editor; docs/reliability.md lists them, and a test checks that the list is current.
"""
from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lifelong.core.paths import ROOT
from lifelong.editors import EDITORS

from resume_support import OVERRIDES, RESULTS, SPEC

RELIABILITY = ROOT / "docs" / "reliability.md"
KILLS = 5
TIMINGS = ("edit_seconds", "eval_seconds", "seconds_per_edit", "peak_rss_mb", "rss_mb")
EDITOR_TIMINGS = ("timing", "seconds")   # the editors' own clocks in their reports (WISE, GRACE)
def run_points(n_edits: int = SPEC["n_edits"], n_blocks: int = SPEC["n_blocks"], eval_at=SPEC["eval_at"]) -> list[list]:
    """Every point a run of SPEC passes, in order (one edit per turn, a checkpoint after every turn)."""
    points = []
    for block in range(n_blocks):
        for turn in range(n_edits):
            points.append(["edit", block, turn])
            if turn + 1 in eval_at and turn + 1 < n_edits:
                points.append(["eval", block, turn + 1])
            if turn + 1 < n_edits:
                points += [["checkpoint-write", block, turn + 1], ["after-checkpoint", block, turn + 1]]
        points.append(["eval", block, n_edits])
        if block + 1 < n_blocks:
            points.append(["checkpoint-write", block + 1, 0])
    return points + [["results", name, 0] for name in RESULTS]


def kill_points(editor: str) -> list[list]:
    """The editor's seeded sample of KILLS points, in run order (each resume passes the next one)."""
    points = run_points()
    return [points[i] for i in sorted(random.Random(f"kill-{editor}").sample(range(len(points)), KILLS))]


def describe(point: list) -> str:
    kind, a, b = point
    if kind == "results":
        return f"writing {a}"
    if kind == "edit":
        where = f"block {a}, turn {b + 1}"
    elif kind == "eval":
        where = f"block {a}, {b} edits"
    else:   # a checkpoint after turn b of block a; turn 0 is the one written when block a - 1 is done
        where = f"block {a}, turn {b}" if b else f"block {a - 1} done"
    return {"edit": "editing", "eval": "evaluating", "checkpoint-write": "writing the checkpoint",
            "after-checkpoint": "after the checkpoint"}[kind] + f" ({where})"


def table_row(editor: str) -> str:
    return f"| {editor} | {'; '.join(describe(p) for p in kill_points(editor))} |"


def _child(editor: str, out: Path, params_file: Path, artifacts: Path | None, **extra) -> subprocess.CompletedProcess:
    args = {"editor": editor, "out": str(out), "params": str(params_file), "overrides": OVERRIDES.get(editor, {}),
            "artifacts": str(artifacts) if artifacts else None, **extra}
    return subprocess.run([sys.executable, str(Path(__file__).parent / "resume_support.py"), json.dumps(args)],
                          capture_output=True, text=True, timeout=900)


def _comparable(folder: Path) -> dict[str, str]:
    """The result files as text, with the timing fields (which no two runs share) taken out."""
    out = {"per_edit.csv": (folder / "per_edit.csv").read_text()}
    curve = (folder / "curve.csv").read_text().splitlines()
    drop = [i for i, name in enumerate(curve[0].split(",")) if name in TIMINGS]
    out["curve.csv"] = "\n".join(",".join(v for i, v in enumerate(line.split(",")) if i not in drop) for line in curve)
    summary = json.loads((folder / "summary.json").read_text())
    summary = {k: v for k, v in summary.items() if k not in TIMINGS}
    summary["editor_report"] = {k: v for k, v in summary["editor_report"].items() if k not in EDITOR_TIMINGS}
    out["summary.json"] = json.dumps(summary, indent=1, sort_keys=True)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("editor", sorted(EDITORS))
def test_sigkill_at_five_seeded_points_then_resume_gives_identical_results(editor, params_file, stats, tmp_path):
    artifacts = None
    if editor in ("memit", "alphaedit"):     # their layer statistics, where the runner looks (artifacts/stats/MODEL)
        artifacts = tmp_path / "artifacts"
        shutil.copytree(stats("llama"), artifacts / "stats" / SPEC["model"])
    straight = _child(editor, tmp_path / "straight", params_file, artifacts, trace=str(tmp_path / "trace.json"))
    assert straight.returncode == 0, straight.stderr
    assert json.loads((tmp_path / "trace.json").read_text()) == run_points()   # the points are where we think

    resumed = tmp_path / "resumed"
    for point in kill_points(editor):
        killed = _child(editor, resumed, params_file, artifacts, kill=point, resume=True)
        assert killed.returncode == -9, f"not killed at {point}: {killed.stderr[-2000:]}"
    final = _child(editor, resumed, params_file, artifacts, resume=True)
    assert final.returncode == 0, final.stderr
    assert _comparable(resumed) == _comparable(tmp_path / "straight")
    assert sorted(p.name for p in resumed.iterdir()) == sorted(RESULTS)   # no checkpoint, no temporary file left

    # determinism: the same seed and configuration in this (another) process give the same bytes
    from lifelong.pipeline import runner

    if artifacts:
        runner_artifacts, runner.ARTIFACTS = runner.ARTIFACTS, artifacts
    try:
        runner.run(runner.RunSpec(editor=editor, out_dir=tmp_path / "again", params_path=params_file,
                                  overrides=OVERRIDES.get(editor, {}), progress=False, **SPEC))
    finally:
        if artifacts:
            runner.ARTIFACTS = runner_artifacts
    assert _comparable(tmp_path / "again") == _comparable(tmp_path / "straight")


def test_the_reliability_page_lists_the_kill_points_of_every_editor():
    rows = [line for line in RELIABILITY.read_text(encoding="utf-8").splitlines()
            if re.match(r"\| [a-z_]+ \| (editing|evaluating|writing|after)", line)]
    assert rows == [table_row(editor) for editor in sorted(EDITORS)], (
        "docs/reliability.md's kill points differ from tests/test_resume.py (rewrite: python tests/test_resume.py)")


def test_kill_points_are_seeded_distinct_and_in_run_order():
    points = run_points()
    for editor in EDITORS:
        chosen = kill_points(editor)
        assert chosen == kill_points(editor) and len({json.dumps(p) for p in chosen}) == KILLS
        assert [points.index(p) for p in chosen] == sorted(points.index(p) for p in chosen)


if __name__ == "__main__":   # `python tests/test_resume.py`: rewrite docs/reliability.md's kill-point table
    text = RELIABILITY.read_text(encoding="utf-8").splitlines()
    rows = [i for i, line in enumerate(text) if re.match(r"\| [a-z_]+ \| (editing|evaluating|writing|after)", line)]
    text[rows[0]:rows[-1] + 1] = [table_row(editor) for editor in sorted(EDITORS)]
    RELIABILITY.write_text("\n".join(text) + "\n", encoding="utf-8")
    print(f"{RELIABILITY}: kill points of {len(EDITORS)} editors")
