"""Profiles (params-gpu.yaml): overrides in DVC's Hydra syntax, applied by DVC's own function and checked."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lifelong.core.config import load_params
from lifelong.core.errors import ConfigError
from lifelong.pipeline import cells, profile

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value, text", [
    ("tiny-llama", "tiny-llama"), ("zsre/zsre_eval_20k.json", "zsre/zsre_eval_20k.json"),
    ("1000,10000,100000", "'1000,10000,100000'"), ("null", "'null'"), ("it's", "'it\\'s'"),
    (True, "true"), (None, "null"), (1000, "1000"), (1.0e-4, "0.0001"),
    ([1, 10, "a b"], "[1,10,'a b']"), ({"n_edits": [1, 10], "datasets": None}, "{n_edits:[1,10],datasets:null}"),
])
def test_values_in_hydra_syntax(value, text):
    assert profile.hydra_value(value) == text


def test_a_key_params_lacks_is_an_addition():
    params = {"grid": {"models": ["a"]}, "datasets": {"zsre": {}}}
    assert profile.overrides({"grid.models": ["b"], "datasets.fever": {"loader": "fever"}}, params) == \
        ["grid.models=[b]", "+datasets.fever={loader:fever}"]


def _expected(params: dict, overrides: dict) -> dict:
    """What the profile means: each dotted key set (mappings merged one level, as Hydra does)."""
    import copy

    out = copy.deepcopy(params)
    for key, value in overrides.items():
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = ({**node[last], **value} if isinstance(value, dict) and isinstance(node.get(last), dict)
                      else value)
    return out


def test_the_gpu_profile_applies_to_exactly_the_papers_grid(tmp_path):
    target = tmp_path / "params.yaml"
    shutil.copyfile(ROOT / "params.yaml", target)
    applied = profile.apply(ROOT / "params-gpu.yaml", target)
    wanted = yaml.safe_load((ROOT / "params-gpu.yaml").read_text())
    assert len(applied) == len(wanted)
    merged = load_params(target)
    assert merged == _expected(load_params(ROOT / "params.yaml"), wanted)   # nothing else moved
    grid = merged["grid"]
    assert grid["models"] == ["gpt-j-6b", "llama-2-7b", "llama-3-8b-instruct", "mistral-7b"]
    assert all(merged["editors"][e]["grid"]["datasets"] is None for e in ("ft_l", "grace", "memit", "alphaedit"))
    listed = cells.render("grid", "json", target)
    assert listed.count('"command"') == 4 * len(grid["datasets"]) * len(grid["editors"])


def test_a_profile_naming_an_unregistered_model_is_refused_and_params_untouched(tmp_path):
    target = tmp_path / "params.yaml"
    shutil.copyfile(ROOT / "params.yaml", target)
    before = target.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid.models: [gpt-j-6b, llama-9000]\n")
    with pytest.raises(ConfigError, match=r"grid.models: \['llama-9000'\] not registered"):
        profile.apply(bad, target)
    bad.write_text("grid.editors: [ft, rome]\n")
    with pytest.raises(ConfigError, match=r"grid.editors: \['rome'\] not registered"):
        profile.apply(bad, target)
    assert target.read_text() == before


@pytest.mark.parametrize("text, message", [
    ("grid.models: [a\n", "not valid YAML .line 2"),
    ("- a\n- b\n", "expected a mapping of dotted params.yaml keys"),
    ("'grid models': 1\n", "keys must be dotted params.yaml paths"),
])
def test_a_malformed_profile_is_one_line(tmp_path, text, message):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    out = subprocess.run([sys.executable, "-m", "lifelong", "profile", str(path)], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert re.search(message, out.stderr), out.stderr


def test_the_printed_command_is_a_dvc_exp_run():
    out = subprocess.run([sys.executable, "-m", "lifelong", "profile", "params-gpu.yaml"], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("dvc exp run -n params-gpu")
    assert "-S '+datasets.fever={loader:fever,path:fever/fever_eval_20k.json}'" in out.stdout
    assert "-S 'grid.n_edits=[1,10,100,1000]'" in out.stdout
