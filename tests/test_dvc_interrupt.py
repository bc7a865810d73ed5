"""`dvc repro` killed in the middle of a stage: nothing half-done is recorded, and the next `dvc repro` finishes.

A one-stage pipeline in a temporary DVC project runs the suite's own command line (a run that checkpoints
after every turn). The test SIGKILLs `dvc repro` and every process under it once the stage has written its
first checkpoint, then checks what DVC recorded and reruns it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

RUN = ["run", "--model", "t-llama", "--dataset", "world", "--editor", "ft", "--n-edits", "3", "--blocks", "3",
       "--no-progress", "--threads", "1"]
STAGE = {"cmd": " ".join(["python -m lifelong", *RUN, "--params params.yaml --out out --checkpoint-every 1"]),
         "deps": ["params.yaml"], "outs": ["out"]}


def _dvc(folder: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=folder, capture_output=True, text=True,
                          timeout=600, env=_env(), **kw)


def _env() -> dict[str, str]:
    # the stage's `python` is this interpreter (its folder first on PATH)
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "DVC_NO_ANALYTICS": "1"}


@pytest.mark.slow
def test_dvc_repro_killed_mid_stage_records_nothing_and_a_rerun_completes(params_file, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "params.yaml").write_text(Path(params_file).read_text())
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"edit": STAGE}}))
    assert _dvc(project, "init", "--no-scm", "-q").returncode == 0

    repro = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=project, env=_env(), start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (project / "out" / "checkpoint.pt").exists():
        assert repro.poll() is None, "dvc repro ended before the stage wrote a checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.2)
    os.killpg(repro.pid, signal.SIGKILL)      # dvc and the stage's command, as a machine's OOM killer or a reboot would
    repro.wait(timeout=60)
    assert not (project / "out" / "summary.json").exists()

    lock = project / "dvc.lock"
    assert not lock.exists() or "edit" not in (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    status = _dvc(project, "status")
    assert status.returncode == 0 and "edit:" in status.stdout, status.stdout + status.stderr

    rerun = _dvc(project, "repro")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "edit" in yaml.safe_load(lock.read_text())["stages"]
    assert (project / "out" / "summary.json").exists() and not (project / "out" / "checkpoint.pt").exists()
    assert "up to date" in _dvc(project, "status").stdout.lower()

    straight = subprocess.run([sys.executable, "-m", "lifelong", *RUN, "--params", str(project / "params.yaml"),
                               "--out", str(tmp_path / "straight")], capture_output=True, text=True, timeout=600,
                              env=_env())
    assert straight.returncode == 0, straight.stderr
    assert (project / "out" / "per_edit.csv").read_bytes() == (tmp_path / "straight" / "per_edit.csv").read_bytes()
