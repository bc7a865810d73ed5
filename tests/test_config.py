from dataclasses import dataclass

import pytest

from lifelong.core.config import fill, parse_overrides
from lifelong.editors import build_hparams
from lifelong.core.errors import ConfigError


@dataclass
class Example:
    lr: float = 1.0
    layers: list[int] | None = None
    mode: str = "a"
    flag: bool = False


def test_fill_types_and_coercion():
    ex = fill(Example, {"lr": "1e-6", "layers": [1, 2.0], "flag": True}, "x")
    assert ex.lr == 1e-6 and ex.layers == [1, 2] and ex.flag is True


@pytest.mark.parametrize("values, message", [
    ({"lrr": 1}, r"x: unknown key\(s\) \['lrr'\]"),
    ({"lr": "fast"}, r"x.lr: expected a number"),
    ({"layers": "3"}, r"x.layers: expected list"),
    ({"flag": "false"}, r"x.flag: expected true/false"),
])
def test_fill_errors_name_the_key(values, message):
    with pytest.raises(ConfigError, match=message):
        fill(Example, values, "x")


def test_overrides_and_family_merge():
    params = {"editors": {"ft": {"default": {"lr": 0.1, "n_iter": 3}, "llama": {"lr": 0.2}}}}
    hp = build_hparams("ft", params, "llama", parse_overrides(["n_iter=7"]))
    assert (hp.lr, hp.n_iter) == (0.2, 7)
    assert build_hparams("ft", params, "gpt2").lr == 0.1
    with pytest.raises(ConfigError, match="n_iter must be >= 1"):
        build_hparams("ft", params, "gpt2", {"n_iter": 0})
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["lr"])


def test_per_model_hparams_sit_between_family_and_overrides():
    params = {"editors": {"ft": {"default": {"lr": 0.1}, "llama": {"lr": 0.2, "n_iter": 4}}},
              "models": {"tiny": {"path": "x", "hparams": {"ft": {"lr": 0.3}}}}}
    assert build_hparams("ft", params, "llama", model="tiny").lr == 0.3
    assert build_hparams("ft", params, "llama", model="tiny").n_iter == 4
    assert build_hparams("ft", params, "llama", model="other").lr == 0.2
    assert build_hparams("ft", params, "llama", {"lr": 0.4}, model="tiny").lr == 0.4
    with pytest.raises(ConfigError, match=r"params.yaml models.tiny.hparams.ft: unknown key"):
        build_hparams("ft", {"models": {"tiny": {"hparams": {"ft": {"bogus": 1}}}}}, "llama", model="tiny")
