"""`python -m lifelong cells`: the grid as shell commands for any engine, and DVC's own queue for one machine.

The fast tests check the commands against the DVC stages they stand for (dvc.yaml's cmd templates, interpolated
here), the SLURM script (run with bash and a stand-in `python`), and the one-line errors. The slow ones use DVC in
throwaway projects: cells run outside DVC (xargs -P 2, the SLURM script's tasks) and then recorded by
`dvc commit`, and two experiments queued with `dvc exp run --queue` and run by `dvc queue start --jobs 2`.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from lifelong.cli import main
from lifelong.core.paths import ROOT
from lifelong.pipeline.cells import ENVIRONMENT, ROUTES, cells

SMALL = {
    "runtime": {"threads": 0},
    "grid": {"models": ["m1", "m2"], "datasets": ["world"], "editors": ["ft", "wise", "grace"], "n_edits": [1]},
    "real_grid": {"models": ["real"], "datasets": ["zsre", "cf"], "editors": ["ft", "ultraedit"], "n_edits": [1]},
    "grid_t1000": {"models": ["m1"], "datasets": ["world"], "editors": ["ultraedit", "wise"], "n_edits": [1000]},
    "grid_custom": {"models": ["m1"], "datasets": ["world"], "editors": ["ft"]},   # a grid no DVC stage runs
}


@pytest.fixture
def small_params(tmp_path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(SMALL))
    return path


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["cells", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _stage(address: str) -> dict:
    """The stage definition behind a DVC address ('edit' or 'extended/dvc.yaml:edit_t1000') and its file's vars."""
    file, _, name = address.rpartition(":")
    spec = yaml.safe_load((ROOT / (file or "dvc.yaml")).read_text())
    nb = next(v["nb"] for v in spec["vars"] if isinstance(v, dict) and "nb" in v)
    return {**spec["stages"][name], "nb": nb}


def _interpolate(template: str, values: dict[str, str]) -> str:
    """DVC's `${...}` substitution over the names given (an unknown name fails the test with a KeyError)."""
    return " ".join(re.sub(r"\$\{([^}]+)\}", lambda m: values[m.group(1)], template).split())


def test_one_command_per_cell(small_params, capsys):
    for section, grid in SMALL.items():
        if section in ROUTES:
            code, out, _ = _cli(capsys, "--params", str(small_params), "--grid", section)
            assert code == 0
            assert len(out.splitlines()) == len(grid["models"]) * len(grid["datasets"]) * len(grid["editors"])
    code, out, _ = _cli(capsys, "--params", str(small_params), "--format", "json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 6 and set(rows[0]) == {"stage", "model", "dataset", "editor", "command", "out_dir"}
    assert [(r["model"], r["editor"]) for r in rows[:3]] == [("m1", "ft"), ("m1", "wise"), ("m1", "grace")]
    assert rows[0]["stage"] == "edit@m1-world-ft" and rows[0]["out_dir"] == "reports/runs/m1__world__ft"


@pytest.mark.parametrize("section", ["grid", "real_grid"])
def test_command_is_the_stage_cmd_of_dvc_yaml(section):
    """One real cell of params.yaml: the command equals dvc.yaml's cmd template with DVC's values substituted."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    cell = cells(params, section)[0]
    stage = _stage(ROUTES[section].stage)
    values = {"nb": stage["nb"], "item.model": cell.model, "item.dataset": cell.dataset, "item.editor": cell.editor}
    assert cell.command == _interpolate(stage["cmd"], values)
    assert (cell.model, cell.dataset, cell.editor) == tuple(params[section][k][0] for k in ("models", "datasets", "editors"))


@pytest.mark.parametrize("section", sorted(ROUTES))
def test_every_route_matches_its_stage(section):
    """Each row of ROUTES: its stage's matrix is that section, and cmd, out_dir and notebook are the stage's own."""
    stage = _stage(ROUTES[section].stage)
    assert stage["matrix"] == {k: f"${{{section}.{k}s}}" for k in ("model", "dataset", "editor")}
    assert list(stage["matrix"]) == ["model", "dataset", "editor"]     # DVC names a cell STAGE@MODEL-DATASET-EDITOR
    cell = cells({section: {"models": ["M"], "datasets": ["D"], "editors": ["E"]}}, section)[0]
    values = {"nb": stage["nb"], "item.model": "M", "item.dataset": "D", "item.editor": "E"}
    assert cell.command == _interpolate(stage["cmd"], values)
    outs = [_interpolate(next(iter(o)) if isinstance(o, dict) else o, values) for o in stage["outs"]]
    assert outs == [cell.out_dir, ROUTES[section].notebook.format(cell="M__D__E")]
    if ROUTES[section].stage.startswith("extended/"):     # the SLURM script names its report stage
        assert section in _stage("extended/dvc.yaml:report_extended")["foreach"]


def test_every_edit_matrix_stage_has_a_route():
    """A new grid stage in dvc.yaml or extended/dvc.yaml must get its row in ROUTES."""
    routed = {route.stage for route in ROUTES.values()}
    for file, prefix in (("dvc.yaml", ""), ("extended/dvc.yaml", "extended/dvc.yaml:")):
        for name, stage in yaml.safe_load((ROOT / file).read_text())["stages"].items():
            if "matrix" in stage and "notebooks/edit.ipynb" in stage["cmd"]:
                assert prefix + name in routed, f"{prefix}{name} has no row in lifelong/pipeline/cells.py ROUTES"


def test_slurm_script_runs_the_task_s_cell(small_params, tmp_path, capsys):
    code, script, _ = _cli(capsys, "--params", str(small_params), "--grid", "real_grid", "--format", "slurm",
                           "--cpus-per-task", "8", "--gpus-per-task", "1")
    commands = [c.command for c in cells(SMALL, "real_grid")]
    assert code == 0 and "#SBATCH --array=0-3\n" in script
    assert "#SBATCH --cpus-per-task=8\n" in script and "#SBATCH --gpus-per-task=1\n" in script
    body = script[script.index("CMDS=(\n") + 7:script.index("\n)\n")]
    assert [shlex.split(line)[0] for line in body.splitlines()] == commands
    assert "--gpus-per-task" not in _cli(capsys, "--params", str(small_params), "--format", "slurm")[1]

    # the same environment as the Makefile's exports
    makefile = dict(re.findall(r"^export (\w+)\s*:=\s*(.*)$", (ROOT / "Makefile").read_text(), re.M))
    assert set(makefile) == {"PATH"} | {name for name, _ in ENVIRONMENT}
    for name, value in ENVIRONMENT:
        assert value.strip('"') == makefile[name].replace("$(CURDIR)", "$ROOT") and f"export {name}={value}\n" in script

    # task 2 under bash, with a stand-in for the venv's python that records what it was given
    sbatch = tmp_path / "cells.sbatch"
    sbatch.write_text(script)
    fake = tmp_path / ".venv" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text('#!/bin/bash\nprintf "%s\\n" "$@" > argv.txt\necho "$HF_HUB_OFFLINE $HF_HOME $OMP_NUM_THREADS" > env.txt\n')
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "HF_", "OMP_"))}
    ran = subprocess.run(["bash", str(sbatch)], cwd="/", env={**env, "SLURM_ARRAY_TASK_ID": "2", "SLURM_CPUS_PER_TASK": "8"},
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert (tmp_path / "argv.txt").read_text().splitlines() == shlex.split(commands[2])[1:]
    assert (tmp_path / "env.txt").read_text().split() == ["1", f"{tmp_path}/.cache/hf", "8"]
    outside = subprocess.run(["bash", str(sbatch)], env=env, capture_output=True, text=True, timeout=60)
    assert outside.returncode != 0 and "submit this script with sbatch" in outside.stderr


@pytest.mark.parametrize("section, says", [("nope", "is not a grid section"), ("runtime", "is not a grid section"),
                                           ("grid_custom", "no DVC stage runs grid section")])
def test_a_bad_section_is_one_line_and_exit_2(small_params, capsys, section, says):
    code, out, err = _cli(capsys, "--params", str(small_params), "--grid", section)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert f"{section!r}" in err and says in err and "grid sections: grid, real_grid, grid_t1000" in err


# ------------------------------------------------------------------------------------------------- DVC itself
def _env(**extra: str) -> dict[str, str]:
    # the stages' `python` is this interpreter (its folder first on PATH)
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "DVC_NO_ANALYTICS": "1", **extra}


def _run(folder: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(list(args), cwd=folder, capture_output=True, text=True, timeout=300, env=env or _env())
    assert done.returncode == 0, f"{' '.join(args)}: {done.stdout}{done.stderr}"
    return done


def _dvc(folder: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return _run(folder, sys.executable, "-m", "dvc", *args, env=env)


FAKE_NBRUN = '''\
"""Stands in for lifelong.pipeline.nbrun: writes the executed notebook and OUT_DIR/summary.json from its -p's."""
import json, os, sys
notebook, output, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
params = {rest[i + 1]: rest[i + 2] for i in range(0, len(rest), 3)}
os.makedirs(os.path.dirname(output), exist_ok=True)
os.makedirs(params["out_dir"], exist_ok=True)
json.dump({"notebook": notebook, "params": params}, open(output, "w"))
json.dump({**params, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE")}, open(params["out_dir"] + "/summary.json", "w"))
'''


def _trimmed(address: str, deps_params: str) -> dict:
    """The real stage (matrix, wdir, cmd, outs) with its deps and params cut to what the throwaway project has."""
    stage = _stage(address)
    return {**{k: v for k, v in stage.items() if k not in ("nb", "deps", "params")},
            "deps": ["notebooks/edit.ipynb"], "params": [deps_params]}


@pytest.mark.slow
def test_cells_run_anywhere_are_recorded_by_dvc_commit(tmp_path, capsys):
    """The real grid stages in a throwaway project; their cells run outside DVC (xargs -P 2; the SLURM script's
    tasks); `dvc commit -f` records them and `dvc status` finds every stage up to date."""
    project = tmp_path / "project"
    (project / "lifelong" / "pipeline").mkdir(parents=True)
    (project / "notebooks").mkdir()
    (project / "extended").mkdir()
    (project / "notebooks" / "edit.ipynb").write_text("{}")
    (project / "lifelong" / "__init__.py").write_text("")
    (project / "lifelong" / "pipeline" / "__init__.py").write_text("")
    (project / "lifelong" / "pipeline" / "nbrun.py").write_text(FAKE_NBRUN)   # `python -m` from the root finds it
    (project / "params.yaml").write_text(yaml.safe_dump(SMALL))
    nb = {"nb": _stage("edit")["nb"]}
    (project / "dvc.yaml").write_text(yaml.safe_dump({"vars": [nb], "stages": {
        "edit": _trimmed("edit", "grid"), "edit_real": _trimmed("edit_real", "real_grid")}}, sort_keys=False))
    (project / "extended" / "dvc.yaml").write_text(yaml.safe_dump({"vars": ["../params.yaml", nb], "stages": {
        "edit_t1000": _trimmed("extended/dvc.yaml:edit_t1000", "grid_t1000")}}, sort_keys=False))
    _dvc(project, "init", "--no-scm", "-q")
    params = str(project / "params.yaml")

    started = time.monotonic()
    for section in ("grid", "grid_t1000"):        # one command a line, two at a time
        (project / "cells.txt").write_text(_cli(capsys, "--params", params, "--grid", section)[1])
        _run(project, "bash", "-c", "xargs -P 2 -I CMD sh -c CMD < cells.txt")
    code, script, _ = _cli(capsys, "--params", params, "--grid", "real_grid", "--format", "slurm")
    (project / "cells.sbatch").write_text(script)
    tasks = [subprocess.Popen(["bash", "cells.sbatch"], cwd=project, env=_env(SLURM_ARRAY_TASK_ID=str(k)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for k in range(4)]
    assert all(task.wait(timeout=120) == 0 for task in tasks), [task.stderr.read() for task in tasks]
    cells_seconds = time.monotonic() - started

    summary = json.loads((project / "reports/runs/real__cf__ultraedit/summary.json").read_text())
    assert summary == {"model": "real", "dataset": "cf", "editor": "ultraedit", "grid": "real_grid",
                       "out_dir": "reports/runs/real__cf__ultraedit", "HF_HUB_OFFLINE": "1"}
    assert (project / "reports/extended/grid_t1000/m1__world__wise/summary.json").exists()

    assert "`dvc commit -f edit_real` records the runs" in script
    assert "edit@m1-world-ft:" in _dvc(project, "status").stdout          # not recorded yet
    _dvc(project, "commit", "-f", "edit", "edit_real", "extended/dvc.yaml:edit_t1000")   # the stage groups
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert len(lock) == 6 + 4 and "edit@m1-world-grace" in lock and "edit_real@real-zsre-ft" in lock
    assert "edit_t1000@m1-world-wise" in yaml.safe_load((project / "extended" / "dvc.lock").read_text())["stages"]
    for target in ("dvc.yaml", "extended/dvc.yaml"):
        assert "up to date" in _dvc(project, "status", target).stdout
    print(f"cells ran in {cells_seconds:.1f} s")


SQUARE = '''\
"""x from params.yaml -> metrics.json; waits (up to 60 s) until the other experiment has started too."""
import json, os, time
import yaml
x = yaml.safe_load(open("params.yaml"))["x"]
barrier = os.environ["BARRIER"]
open(os.path.join(barrier, str(x)), "w").close()
deadline = time.time() + 60
while len(os.listdir(barrier)) < 2 and time.time() < deadline:
    time.sleep(0.1)
json.dump({"square": x * x, "together": int(len(os.listdir(barrier)) >= 2)}, open("metrics.json", "w"))
'''


def _experiments(project: Path, env: dict[str, str]) -> dict[str, dict]:
    """name -> {state, params, metrics} of every experiment `dvc exp show --json` lists."""
    found = {}
    for baseline in json.loads(_dvc(project, "exp", "show", "--json", env=env).stdout):
        for exp in baseline.get("experiments") or []:
            data = exp["revs"][0].get("data") or {}
            found[exp.get("name") or exp["revs"][0].get("name")] = {
                "state": (exp.get("executor") or {}).get("state"),
                "params": ((data.get("params") or {}).get("params.yaml") or {}).get("data"),
                "metrics": ((data.get("metrics") or {}).get("metrics.json") or {}).get("data")}
    return found


@pytest.mark.slow
def test_dvc_queue_runs_two_experiments_on_two_workers(tmp_path):
    """`dvc exp run --queue -S x=3`, `-S x=4`, `dvc queue start --jobs 2`: both run at once (each waits for the
    other to start), see the environment `dvc queue start` had, and `dvc exp show` collects both metrics."""
    project, barrier = tmp_path / "project", tmp_path / "barrier"
    project.mkdir()
    barrier.mkdir()
    env = _env(BARRIER=str(barrier))
    (project / "params.yaml").write_text("x: 1\n")
    (project / "square.py").write_text(SQUARE)
    (project / "dvc.yaml").write_text(textwrap.dedent("""\
        stages:
          square:
            cmd: python square.py
            deps: [square.py]
            params: [x]
            metrics:
              - metrics.json: {cache: false}
        """))
    _run(project, "git", "init", "-q")
    _run(project, "git", "config", "user.email", "test@example.com")
    _run(project, "git", "config", "user.name", "test")
    _dvc(project, "init", "-q")
    _run(project, "git", "add", "-A")
    _run(project, "git", "commit", "-qm", "baseline")

    started = time.monotonic()
    try:
        for x in (3, 4):
            _dvc(project, "exp", "run", "--queue", "-S", f"x={x}", "-n", f"x{x}", env=env)
        _dvc(project, "queue", "start", "--jobs", "2", env=env)
        deadline = time.monotonic() + 240
        while True:
            found = _experiments(project, env)
            if all(found.get(name, {}).get("state") in ("success", "failed") for name in ("x3", "x4")):
                break
            assert time.monotonic() < deadline, f"the queue did not finish in 240 s: {found}\n" + \
                _dvc(project, "queue", "status", env=env).stdout
            time.sleep(1)
    finally:
        subprocess.run([sys.executable, "-m", "dvc", "queue", "stop", "--kill"], cwd=project, env=env,
                       capture_output=True, timeout=120)
    seconds = time.monotonic() - started
    assert found["x3"]["state"] == found["x4"]["state"] == "success", _dvc(project, "queue", "logs", "x3", env=env).stdout
    assert found["x3"]["params"] == {"x": 3} and found["x4"]["params"] == {"x": 4}
    assert found["x3"]["metrics"] == {"square": 9, "together": 1}
    assert found["x4"]["metrics"] == {"square": 16, "together": 1}
    print(f"queued, ran and collected two experiments in {seconds:.1f} s")
