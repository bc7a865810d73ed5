"""Shared fixtures: a small fact world and tiny pretrained models of each family (built once per session)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lifelong.testbed import PretrainConfig, TinyModelConfig, build_model, pretrain, train_tokenizer
from lifelong.world import World, WorldConfig

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FAMILIES = ("gpt2", "llama", "mistral")
SMALL_WORLD = WorldConfig(edit_subjects=12, locality_subjects=6, pool_subjects=4, relations=4, templates=3)

# The fixture models are tiny (d=64): one thread is as fast as two and does not thrash a busy 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def world() -> World:
    return World(SMALL_WORLD)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny")


def _pretrained(family: str, world: World, root: Path):
    """A d=64, 4-layer model that knows the small world's facts; saved and reloaded via Auto classes."""
    from lifelong.modeling import load_model

    out = root / family
    if not (out / "config.json").exists():
        torch.manual_seed(0)
        tok = train_tokenizer(world, None, vocab_size=512, extra_names=500, add_bos=family != "gpt2")
        model = build_model(TinyModelConfig(family, d_model=64, n_layers=4, n_heads=4, d_ff=256), tok)
        pretrain(model, tok, world.pretraining_sentences(),
                 PretrainConfig(epochs=60, batch_size=32, lr=5e-3, warmup_steps=20), progress=False)
        model.save_pretrained(out)
        tok.save_pretrained(out)
    return load_model(str(out))


@pytest.fixture(scope="session")
def tiny_models(world, tiny_dir):
    """family -> path of a pretrained tiny model (lazily built on first use)."""
    cache: dict[str, Path] = {}

    def get(family: str):
        model, tok = _pretrained(family, world, tiny_dir)
        cache[family] = tiny_dir / family
        return model, tok

    return get


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture
def model_and_tokenizer(tiny_models, family):
    """A fresh copy (loaded from disk) of the tiny model of `family`: tests may edit it freely."""
    return tiny_models(family)


@pytest.fixture(scope="session")
def params_file(tiny_models, tiny_dir, world) -> Path:
    """A params.yaml whose models are the tiny fixture models and whose world is the small one."""
    import dataclasses

    import yaml

    for fam in FAMILIES:
        tiny_models(fam)  # make sure all three exist on disk
    params = {
        "models": {f"t-{fam}": {"path": str(tiny_dir / fam)} for fam in FAMILIES},
        "datasets": {"world": {"loader": "synthetic", **dataclasses.asdict(SMALL_WORLD)}},
        "editors": {"ft": {"default": {"turn_size": 1, "lr": 5e-3, "n_iter": 20, "layer": -2}}},
    }
    path = tiny_dir / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path
