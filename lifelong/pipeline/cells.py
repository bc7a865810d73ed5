"""The grid as shell commands, one per cell, so that any engine can run it: xargs, GNU parallel, a SLURM array.

Why: `dvc repro` runs one stage at a time on one machine, but every cell of a grid (one model, dataset and editor;
a stage of the `edit` matrix) is independent, and its command is a function of params.yaml alone. The command
printed for a cell is exactly the one its DVC stage runs (dvc.yaml `edit` and `edit_real`, extended/dvc.yaml
`edit_*`), run from the repository root, so the run directory and the executed notebook land where the stage
would put them: reports/runs/MODEL__DATASET__EDITOR, or reports/extended/SECTION/... for the larger grids.

After the cells have run, wherever they ran, `dvc commit -f STAGE` (the section's matrix stage: `edit`,
`edit_real`, `extended/dvc.yaml:edit_t1000`, ...; `dvc commit -f dvc.yaml` would do too, but it records every stage
of the file, a stale one included) writes what they produced into dvc.lock, which is right only when the code and
params are the ones the cells ran with. `dvc status` then finds those stages up to date, and `dvc repro` runs the
report stage over them as usual.

Threads: notebooks/edit.ipynb takes no `threads` parameter, so none is passed; a run uses params.yaml
`runtime.threads`, and 0 (torch's default) follows OMP_NUM_THREADS, which the SLURM script sets to the task's CPUs.
"""
from __future__ import annotations

import itertools
import json
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from ..core.config import load_params
from ..core.errors import LifelongError
from ..core.paths import PARAMS

NBRUN = ("python", "-m", "lifelong.pipeline.nbrun", "notebooks/edit.ipynb")


@dataclass(frozen=True)
class Route:
    """Where a grid section's matrix stage is defined and writes; `{cell}` is MODEL__DATASET__EDITOR."""

    stage: str                # the stage's DVC address; a cell is STAGE@MODEL-DATASET-EDITOR
    notebook: str             # the executed notebook
    out_dir: str              # the run directory
    grid_param: bool = True   # the command passes `-p grid SECTION` (the default grid's stage does not)


# One row per matrix stage of dvc.yaml and extended/dvc.yaml (tests/test_cells.py checks every row against them).
ROUTES: dict[str, Route] = {
    "grid": Route("edit", "reports/notebooks/edit-{cell}.ipynb", "reports/runs/{cell}", grid_param=False),
    "real_grid": Route("edit_real", "reports/notebooks/edit-{cell}.ipynb", "reports/runs/{cell}"),
    "grid_t1000": Route("extended/dvc.yaml:edit_t1000", "reports/notebooks/extended/t1000-{cell}.ipynb",
                        "reports/extended/grid_t1000/{cell}"),
    "grid_real_t100": Route("extended/dvc.yaml:edit_real_t100", "reports/notebooks/extended/real_t100-{cell}.ipynb",
                            "reports/extended/grid_real_t100/{cell}"),
    "grid_real_t1000": Route("extended/dvc.yaml:edit_real_t1000",
                             "reports/notebooks/extended/real_t1000-{cell}.ipynb",
                             "reports/extended/grid_real_t1000/{cell}"),
    "grid_testbed_real": Route("extended/dvc.yaml:edit_testbed_real",
                               "reports/notebooks/extended/testbed_real-{cell}.ipynb",
                               "reports/extended/grid_testbed_real/{cell}"),
    "grid_real_portability": Route("extended/dvc.yaml:edit_real_portability",
                                   "reports/notebooks/extended/real_portability-{cell}.ipynb",
                                   "reports/extended/grid_real_portability/{cell}"),
    "grid_real_baselines": Route("extended/dvc.yaml:edit_real_baselines",
                                 "reports/notebooks/extended/real_baselines-{cell}.ipynb",
                                 "reports/extended/grid_real_baselines/{cell}"),
    "grid_real_hallucination": Route("extended/dvc.yaml:edit_real_hallucination",
                                     "reports/notebooks/extended/real_hallucination-{cell}.ipynb",
                                     "reports/extended/grid_real_hallucination/{cell}"),
}

# What the Makefile exports for every run (tests/test_cells.py checks that these are all of them); PATH comes first.
ENVIRONMENT: tuple[tuple[str, str], ...] = (
    ("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
    ("HF_HOME", '"$ROOT/.cache/hf"'), ("DVC_NO_ANALYTICS", "1"), ("PYTHONUNBUFFERED", "1"),
)


@dataclass(frozen=True)
class Cell:
    """One cell of a grid section and the command that runs it (from the repository root)."""

    stage: str
    model: str
    dataset: str
    editor: str
    command: str
    out_dir: str


def grid_sections(params: Mapping[str, Any]) -> list[str]:
    """The sections of `params` that `cells` can list: a routed section with models, datasets and editors."""
    return [name for name in ROUTES if _axes(params.get(name)) is not None]


def _axes(section: Any) -> tuple[list[str], list[str], list[str]] | None:
    """(models, datasets, editors) of a section, or None when it is not a grid (a missing key, not lists)."""
    if not isinstance(section, Mapping):
        return None
    axes = [section.get(key) for key in ("models", "datasets", "editors")]
    if not all(isinstance(axis, list) for axis in axes):
        return None
    return tuple([str(value) for value in axis] for axis in axes)  # type: ignore[return-value]


def cells(params: Mapping[str, Any], section: str = "grid", where: str = "params.yaml") -> list[Cell]:
    """Every cell of `section`, in the order of the DVC matrix (models, then datasets, then editors)."""
    axes = _axes(params.get(section))
    valid = ", ".join(grid_sections(params)) or "(none)"
    if axes is None:
        raise LifelongError(f"{where}: {section!r} is not a grid section (one with models, datasets and editors "
                            f"lists); grid sections: {valid}")
    if section not in ROUTES:
        raise LifelongError(f"{where}: no DVC stage runs grid section {section!r} (lifelong/pipeline/cells.py "
                            f"ROUTES); grid sections: {valid}")
    route = ROUTES[section]
    found = []
    for model, dataset, editor in itertools.product(*axes):
        name = f"{model}__{dataset}__{editor}"
        out_dir = route.out_dir.format(cell=name)
        argv = [*NBRUN, route.notebook.format(cell=name), "-p", "model", model, "-p", "dataset", dataset,
                "-p", "editor", editor, *(["-p", "grid", section] if route.grid_param else []), "-p", "out_dir", out_dir]
        found.append(Cell(stage=f"{route.stage}@{model}-{dataset}-{editor}", model=model, dataset=dataset,
                          editor=editor, command=shlex.join(argv), out_dir=out_dir))
    return found


def as_shell(found: list[Cell]) -> str:
    """One command a line: `... | xargs -P 2 -I CMD sh -c CMD` runs them two at a time."""
    return "".join(f"{cell.command}\n" for cell in found)


def as_json(found: list[Cell]) -> str:
    """A list of {stage, model, dataset, editor, command, out_dir}: for an engine that wants the fields."""
    return json.dumps([asdict(cell) for cell in found], indent=2) + "\n"


def as_slurm(found: list[Cell], *, root: Path, section: str, cpus_per_task: int = 4, gpus_per_task: int = 0) -> str:
    """A SLURM array job: task K runs cell K from `root` with the Makefile's environment (`sbatch FILE`)."""
    if not found:
        raise LifelongError(f"grid section {section!r} has no cells (models x datasets x editors is empty): "
                            "nothing to submit")
    if cpus_per_task < 1 or gpus_per_task < 0:
        raise LifelongError(f"--cpus-per-task must be >= 1 and --gpus-per-task >= 0, got {cpus_per_task} and "
                            f"{gpus_per_task}")
    gpus = [f"#SBATCH --gpus-per-task={gpus_per_task}"] if gpus_per_task else []
    group = found[0].stage.split("@")[0]          # the matrix stage: every cell of the section
    file = group.rpartition(":")[0]
    report = f"dvc repro {file}:report_extended@{section}" if file else "dvc repro"
    lines = [
        "#!/bin/bash",
        f"# The {len(found)} cells of params.yaml `{section}`, one array task each (python -m lifelong cells).",
        f"# When every task has finished: `dvc commit -f {group}` records the runs in dvc.lock, `{report}` makes the "
        "report.",
        f"#SBATCH --job-name=lifelong-{section}",
        f"#SBATCH --array=0-{len(found) - 1}",
        "#SBATCH --ntasks=1",
        f"#SBATCH --cpus-per-task={cpus_per_task}",
        *gpus,
        "set -euo pipefail",
        f"ROOT={shlex.quote(str(root))}",
        'cd "$ROOT"',
        'export PATH="$ROOT/.venv/bin:$PATH"',
        *(f"export {name}={value}" for name, value in ENVIRONMENT),
        'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"   # torch\'s threads when params.yaml runtime.threads is 0',
        "CMDS=(",
        *(f"  {shlex.quote(cell.command)}" for cell in found),
        ")",
        ': "${SLURM_ARRAY_TASK_ID:?not an array task: submit this script with sbatch}"',
        'echo "cell $SLURM_ARRAY_TASK_ID: ${CMDS[$SLURM_ARRAY_TASK_ID]}"',
        'eval "${CMDS[$SLURM_ARRAY_TASK_ID]}"',
    ]
    return "\n".join(lines) + "\n"


def render(section: str = "grid", fmt: str = "shell", params_path: str | Path | None = None, *,
           cpus_per_task: int = 4, gpus_per_task: int = 0) -> str:
    """What `python -m lifelong cells` prints. The commands are relative to the folder that holds the params file
    (the repository root), which is where the SLURM script changes to."""
    path = Path(params_path or PARAMS)
    found = cells(load_params(path), section, where=str(path))
    if fmt == "shell":
        return as_shell(found)
    if fmt == "json":
        return as_json(found)
    if fmt == "slurm":
        return as_slurm(found, root=path.resolve().parent, section=section, cpus_per_task=cpus_per_task,
                        gpus_per_task=gpus_per_task)
    raise LifelongError(f"unknown format {fmt!r}; formats: shell, json, slurm")
