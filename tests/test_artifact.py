"""Saved state without pickle (core/state.py), and edited models saved and loaded for every editor
(editors/artifact.py, `--save-model`, `python -m lifelong load`)."""
from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch

from lifelong.core import state as tree
from lifelong.core.errors import LifelongError
from lifelong.editors import EDITORS, EditContext, build_hparams, editor_class
from lifelong.editors.artifact import load_edited, save_edited
from lifelong.models.loading import fingerprint
from lifelong.models.modules import family_of
from mass_support import TINY_Z, write_fixture_stats

NEEDS_STATS = ("memit", "alphaedit")      # they read layer statistics from a stats folder
FAST = {"ft": {"n_iter": 5, "lr": 3e-3}, "ft_l": {"n_iter": 5, "lr": 1e-2, "norm_constraint": 1e-2},
        "grace": {"layer": -2, "n_iter": 5, "eps": 1.0},
        "memit": {**TINY_Z, "v_num_grad_steps": 5, "mom2_update_weight": 100.0},
        "alphaedit": {**TINY_Z, "v_num_grad_steps": 5, "L2": 0.5, "nullspace_threshold": 0.1},
        "ultraedit": {"turn_size": 4, "layers": [-2], "lr": 2e-3},
        "wise": {"n_iter": 5, "template_lengths": [2, 3], "layer": 2, "act_ratio": 0.5}}


def test_state_round_trips_through_tensors_and_json(tmp_path):
    random.seed(3)
    np.random.seed(3)
    tree_in = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
               "mask": torch.rand(3, 4) > 0.5, "nested": [{"a": (1, 2.5, None, "x"), "b": torch.arange(3)}],
               "nan": float("nan"), "scores": np.array([0.5, np.nan]), "pre": np.arange(4, dtype=np.int32)}
    tree.save_tree(tmp_path / "s.pt", tree_in)
    out = tree.load_tree(tmp_path / "s.pt")
    random.setstate(out["python"])          # the restored states are usable as such
    np.random.set_state(out["numpy"])
    assert out["python"] == tree_in["python"] and isinstance(out["nested"][0]["a"], tuple)
    assert np.array_equal(out["numpy"][1], tree_in["numpy"][1]) and out["numpy"][1].dtype == np.uint32
    assert torch.equal(out["mask"], tree_in["mask"]) and torch.equal(out["nested"][0]["b"], torch.arange(3))
    assert np.isnan(out["nan"]) and np.array_equal(out["scores"], tree_in["scores"], equal_nan=True)
    assert out["pre"].dtype == np.int32
    with pytest.raises(LifelongError, match="cannot save a object"):
        tree.split({"x": object()})


class _Boom:
    def __reduce__(self):
        return (print, ("a checkpoint ran code",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")   # the refused pickle itself
def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, capsys):
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": tree.FORMAT, "payload": _Boom()}, path)
    with pytest.raises(LifelongError, match="not a readable lifelong state file"):
        tree.load_tree(path)
    assert "ran code" not in capsys.readouterr().out
    path.write_bytes(pickle.dumps({"a": 1})[:7])          # truncated
    with pytest.raises(LifelongError, match="not a readable lifelong state file"):
        tree.load_tree(path)


def _edited(name, model, tok, world, stats_dir=None):
    ctx = EditContext(family=family_of(model), locality_pool=world.locality_pool(), model_fingerprint=fingerprint(model),
                      stats_dir=stats_dir)
    editor = editor_class(name)(model, tok, build_hparams(name, {}, family_of(model).name, FAST[name]), ctx)
    recs = list(world.records(0, 4))
    for i in range(0, 4, editor.hparams.turn_size):
        editor.edit_turn(recs[i:i + editor.hparams.turn_size])
    editor.finalize()
    return editor, recs


def _logits(model, tok, pairs, editor=None):
    """Logits of the pairs; the editor, if any, is told where each prompt ends, as the scorers tell it
    (a no-op except for GRACE, whose query is the last prompt token)."""
    from lifelong.eval.teacher_forced import label_prompt_ends
    from lifelong.models.tokenization import encode_batch

    batch = encode_batch(tok, pairs)
    if editor is not None:
        editor.set_prompt_ends(label_prompt_ends(batch.labels))
    return model(**batch.model_inputs()).logits


@pytest.mark.parametrize("name", sorted(EDITORS))
def test_every_editor_saves_and_loads_an_edited_model(name, tiny_models, world, tmp_path):
    model, tok = tiny_models("gpt2" if name == "ft_l" else "llama")   # gpt2: Conv1D weight and bias
    base, _ = tiny_models("gpt2" if name == "ft_l" else "llama")
    stats_dir = write_fixture_stats(model, tok, world, tmp_path / "stats") if name in NEEDS_STATS else None
    editor, recs = _edited(name, model, tok, world, stats_dir)
    pairs = [(r.prompt, r.target) for r in recs] + [(r.locality_prompt, r.locality_answer) for r in recs]
    want = _logits(model, tok, pairs, editor)
    assert not torch.equal(want, _logits(base, tok, pairs))
    save_edited(editor, tmp_path / "edited")
    assert {"config.json", "model.safetensors", "editor.json", "editor.safetensors"} <= \
        {p.name for p in (tmp_path / "edited").iterdir()}

    loaded = load_edited(tmp_path / "edited")                         # the model saved with it
    assert loaded.name == name and loaded.edits_done == 4
    assert torch.equal(_logits(loaded.model, loaded.tokenizer, pairs, loaded), want)
    loaded.reset()                                                    # back to the base model
    assert torch.equal(_logits(loaded.model, loaded.tokenizer, pairs, loaded), _logits(base, tok, pairs))

    on_base = load_edited(tmp_path / "edited", model=base, tokenizer=tok)   # the edits put onto a base model
    assert torch.equal(_logits(base, tok, pairs, on_base), want)
    on_base.reset()


def test_cli_saves_and_loads_an_edited_model(params_file, tmp_path, capsys):
    from lifelong.cli import main

    out, saved = tmp_path / "run", tmp_path / "model"
    assert main(["run", "--model", "t-llama", "--dataset", "world", "--editor", "ft", "--n-edits", "2",
                 "--params", str(params_file), "--out", str(out), "--no-progress", "--save-model", str(saved)]) == 0
    assert "the edited model is in" in capsys.readouterr().out
    assert main(["load", str(saved), "--prompt", "The native language of", "--max-new-tokens", "2"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("ft editor, 2 edit(s), on llama") and "'The native language of' -> " in printed
    assert main(["load", str(tmp_path)]) == 2
    assert "not a saved edited model (no editor.json)" in capsys.readouterr().err
