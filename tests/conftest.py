"""Shared fixtures: a small fact world and tiny pretrained models of each family (built once, cached on disk)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lifelong.pipeline.testbed import PretrainConfig, TinyModelConfig, build_model, pretrain, train_tokenizer
from lifelong.data.world import World, WorldConfig

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FAMILIES = ("gpt2", "llama", "mistral")
SMALL_WORLD = WorldConfig(edit_subjects=12, locality_subjects=6, pool_subjects=4, relations=4, templates=3)

# The fixture models are tiny (d=64): one thread is as fast as two and does not thrash a busy 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def world() -> World:
    return World(SMALL_WORLD)


FIXTURE_MODEL = dict(d_model=64, n_layers=4, n_heads=4, d_ff=256)
FIXTURE_PRETRAIN = PretrainConfig(epochs=60, batch_size=32, lr=5e-3, warmup_steps=20)
FIXTURE_TOKENIZER = dict(vocab_size=512, extra_names=500)


def _fixture_key() -> str:
    """A hash of everything the fixture models are a function of: their configs, the world, the library
    versions, and the testbed code that builds and trains them. A change to any of it builds them anew."""
    import dataclasses
    import hashlib
    import json

    import transformers

    from lifelong.pipeline import testbed

    blob = json.dumps({"world": dataclasses.asdict(SMALL_WORLD), "model": FIXTURE_MODEL,
                       "pretrain": dataclasses.asdict(FIXTURE_PRETRAIN), "tokenizer": FIXTURE_TOKENIZER,
                       "torch": torch.__version__, "transformers": transformers.__version__,
                       "code": Path(testbed.__file__).read_text()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    """Where the pretrained fixture models live: a disk cache keyed by `_fixture_key()`, so a test session
    pretrains them only when something they depend on changed ($LIFELONG_CACHE_DIR/test-models, default
    .cache/lifelong/test-models in the repository)."""
    from lifelong.core.paths import cache_dir

    return cache_dir("test-models") / _fixture_key()


def _pretrained(family: str, world: World, root: Path):
    """A d=64, 4-layer model that knows the small world's facts; saved and reloaded via Auto classes."""
    import filelock

    from lifelong.models.loading import load_model

    out = root / family
    root.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(root / f".{family}.lock")):   # parallel sessions build each model once
        if not (out / "config.json").exists():
            torch.manual_seed(0)
            tok = train_tokenizer(world, None, add_bos=family != "gpt2", **FIXTURE_TOKENIZER)
            model = build_model(TinyModelConfig(family, **FIXTURE_MODEL), tok)
            pretrain(model, tok, world.pretraining_sentences(), FIXTURE_PRETRAIN, progress=False)
            tmp = root / f".{family}.tmp"
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            tmp.rename(out)                                  # a reader never sees half a model
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
def params_file(tiny_models, tiny_dir, world, tmp_path_factory) -> Path:
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
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


# -- dataset tests (test_datasets.py, test_data_cache.py use them on every test) ----------------------

@pytest.fixture
def no_data_env(monkeypatch):
    """No $LIFELONG_DATA_DIR from the environment: a test names its data directory."""
    monkeypatch.delenv("LIFELONG_DATA_DIR", raising=False)


@pytest.fixture
def cache(monkeypatch, tmp_path_factory) -> Path:
    """Arrow conversions go to a fresh temporary folder, never into the repository."""
    root = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("LIFELONG_CACHE_DIR", str(root))
    return root / "arrow"


@pytest.fixture
def conversions(monkeypatch) -> list[Path]:
    """The source files converted to Arrow during a test, in order."""
    from lifelong.data import arrow

    done: list[Path] = []
    write = arrow.write_arrow

    def counting(src, dst):
        done.append(Path(src))
        return write(src, dst)

    monkeypatch.setattr(arrow, "write_arrow", counting)
    return done


@pytest.fixture(scope="session")
def stats(tiny_models, world, tmp_path_factory):
    """family -> a layer-statistics folder for that fixture model (MEMIT and AlphaEdit tests)."""
    from mass_support import write_fixture_stats

    made = {}

    def get(family):
        if family not in made:
            model, tok = tiny_models(family)
            made[family] = write_fixture_stats(model, tok, world, tmp_path_factory.mktemp(f"stats-{family}"))
        return made[family]
    return get


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` skip cleanly on a machine where torch sees no GPU (CI, these 2-core machines)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; torch sees none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
