"""AlphaEdit (spec baselines.md §4 CPU tests 1-4), its reduction to MEMIT's solve, and the editor contract
(cache_c after a turn, reset, state, reliability, rollback)."""
from __future__ import annotations

import copy

import pytest
import torch

from lifelong.core.errors import LifelongError
from lifelong.editors import EditContext, build_hparams, editor_class
from lifelong.editors.alphaedit import alphaedit_delta, null_space_projector
from lifelong.editors.common import mass_vectors
from lifelong.editors.memit import memit_delta
from lifelong.eval.teacher_forced import score_pairs
from lifelong.models.loading import fingerprint
from lifelong.models.modules import family_of, shape_in_out
from mass_support import TINY_Z

# The d=64 fixture models: α = 0.5 and an absolute threshold of 0.1 (null space ≈ 200 of 256 dimensions);
# the published 10 and 2e-2 are sized for 7B models' keys (A2: the threshold is absolute).
FIXTURE = {"L2": 0.5, "nullspace_threshold": 0.1}


def make(model, tok, stats_dir, **hp):
    hparams = build_hparams("alphaedit", {}, family_of(model).name, {**TINY_Z, **FIXTURE, **hp})
    context = EditContext(family=family_of(model), stats_dir=stats_dir, model_fingerprint=fingerprint(model))
    return editor_class("alphaedit")(model, tok, hparams, context)


def weights(editor):
    return {p: m.weight.detach().clone() for p, m in editor.edited.items()}


def preserved_keys(d=16, r=5, n=400, seed=0):
    """K0 (d × n) spanning an r-dimensional subspace, and its second moment C."""
    gen = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(d, r, generator=gen))[0]
    k0 = basis @ (3 * torch.randn(r, n, generator=gen))
    return k0, k0 @ k0.T / n


# -- 1. the projector -------------------------------------------------------------------------------------
def test_projector_spans_the_null_space_of_the_preserved_keys():
    k0, cov = preserved_keys()
    p, info = null_space_projector(cov, 1e-3)
    d, r = cov.shape[0], 5
    assert info["null_dim"] == d - r == int(torch.linalg.matrix_rank(p)) and info["d_in"] == d
    assert info["null_dim_relative"] == d - r                       # logged alongside (A2)
    assert torch.allclose(p, p.T, atol=1e-6) and torch.allclose(p @ p, p, atol=1e-5)
    assert (p @ k0).norm() < 1e-5 * max(1.0, float(k0.norm()))


# -- 2. preserved keys stay untouched -------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [1.0, 10.0])
def test_the_update_leaves_the_preserved_keys_alone(alpha):
    k0, cov = preserved_keys()
    p, _ = null_space_projector(cov, 1e-3)
    gen = torch.Generator().manual_seed(1)
    k1, resid = torch.randn(16, 3, generator=gen), torch.randn(7, 3, generator=gen)
    delta = alphaedit_delta(k1, resid, p, torch.zeros(16, 16), alpha)     # Xᵀ, d_out × d_in
    assert delta.dtype == torch.float32 and delta.shape == (7, 16) and delta.norm() > 0
    assert (delta @ k0).norm() <= 1e-5 * delta.norm() * k0.norm()
    # without the projection the same keys move
    assert (alphaedit_delta(k1, resid, torch.eye(16), torch.zeros(16, 16), alpha) @ k0).norm() > 1e-2 * k0.norm()


# -- 3. the cache of past keys ----------------------------------------------------------------------------------
def test_the_cache_keeps_earlier_edits():
    gen = torch.Generator().manual_seed(2)
    shared = torch.randn(12, 1, generator=gen)
    k1 = shared + 0.3 * torch.randn(12, 3, generator=gen)               # K1 and K2 share a direction:
    k2 = shared + 0.3 * torch.randn(12, 3, generator=gen)               # not orthogonal
    assert (k1.T @ k2).abs().min() > 0.1
    r2 = torch.randn(6, 3, generator=gen)
    eye = torch.eye(12)
    with_cache = alphaedit_delta(k2, r2, eye, k1 @ k1.T, 1.0)
    without = alphaedit_delta(k2, r2, eye, torch.zeros(12, 12), 1.0)
    assert (with_cache @ k1).norm() < (without @ k1).norm()


def test_after_a_turn_the_cache_holds_the_post_edit_keys(tiny_models, world, stats):
    model, tok = tiny_models("llama")
    ed = make(model, tok, stats("llama"), v_num_grad_steps=3, turn_size=2)
    records = list(world.records(0, 2))
    assert all(torch.equal(c, torch.zeros(*c.shape)) for c in ed.cache_c.values())
    assert all(c.shape == (shape_in_out(ed.edited[p])[0],) * 2 for p, c in ed.cache_c.items())   # A1
    stats_out = ed.edit_turn(records)
    rows = mass_vectors.key_rows(tok, records, ed.templates, "fallback")
    keys, _ = mass_vectors.read_keys(model, tok, family_of(model), rows, ed.paths, None)     # the edited model
    for path in ed.paths:
        assert torch.allclose(ed.cache_c[path], keys[path].T @ keys[path], atol=1e-5)
        assert stats_out[f"null_dim_L{ed.layer_ids[ed.paths.index(path)]}"] == ed.null_space[path]["null_dim"]
    projectors = {p: t.clone() for p, t in ed.projectors.items()}
    state = copy.deepcopy(ed.state_dict())
    ed.reset()                                                      # cache zeroed, P kept
    assert all(torch.equal(c, torch.zeros(*c.shape)) for c in ed.cache_c.values())
    assert all(torch.equal(ed.projectors[p], projectors[p]) for p in projectors)
    ed.load_state_dict(state)
    assert all(torch.equal(ed.cache_c[p], state["extra"]["cache_c"][p]) for p in ed.paths)


# -- 4. P = 0 --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["gpt2", "llama", "mistral"])
def test_a_zero_projector_leaves_the_weights_unchanged(family, tiny_models, world, stats):
    model, tok = tiny_models(family)
    ed = make(model, tok, stats(family), v_num_grad_steps=3)
    ed._ready()
    ed.projectors = {p: torch.zeros_like(t) for p, t in ed.projectors.items()}
    before = weights(ed)
    ed.edit_turn(list(world.records(0, 1)))
    assert all(torch.equal(ed.edited[p].weight, w) for p, w in before.items())


# -- the reduction to MEMIT -------------------------------------------------------------------------------------
def test_with_the_identity_projector_alphaedit_is_memit_with_an_identity_covariance():
    """P = I, cache_c = 0: Xᵀ = R Kᵀ (K Kᵀ + α I)⁻¹ = memit_delta(K, R, C = I, λ = α). With a cache K_p K_pᵀ and
    P = I: MEMIT with λC = α I + K_p K_pᵀ."""
    gen = torch.Generator().manual_seed(3)
    k, r, kp = torch.randn(10, 4, generator=gen), torch.randn(5, 4, generator=gen), torch.randn(10, 6, generator=gen)
    eye = torch.eye(10)
    for alpha in (1.0, 10.0):
        got = alphaedit_delta(k, r, eye, torch.zeros(10, 10), alpha)
        assert torch.allclose(got.double(), memit_delta(k, r, eye, alpha), atol=1e-5)
        got = alphaedit_delta(k, r, eye, kp @ kp.T, alpha)
        assert torch.allclose(got.double(), memit_delta(k, r, alpha * eye + kp @ kp.T, 1.0), atol=1e-5)


# -- the editor on the fixture models -------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["gpt2", "llama", "mistral"])
def test_one_turn_raises_reliability(family, tiny_models, world, stats):
    model, tok = tiny_models(family)
    records = [r for r in world.records(0, 200)
               if len(tok(" " + r.target, add_special_tokens=False)["input_ids"]) == 1][:4]
    pairs = [(r.prompt, r.target) for r in records]
    before = score_pairs(model, tok, pairs).accuracy.mean()
    ed = make(model, tok, stats(family), turn_size=4, v_num_grad_steps=40)
    ed.edit_turn(records)
    assert score_pairs(model, tok, pairs).accuracy.mean() > before
    report = ed.report()
    assert set(report["null_space"]) == set(ed.paths) and report["L2"] == FIXTURE["L2"]


def test_state_dict_round_trips_and_continues_identically(tiny_models, world, stats):
    model, tok = tiny_models("gpt2")
    ed = make(model, tok, stats("gpt2"), v_num_grad_steps=3)
    records = list(world.records(0, 3))
    ed.edit_turn(records[:1])
    state = copy.deepcopy(ed.state_dict())
    for r in records[1:]:
        ed.edit_turn([r])
    want = weights(ed)
    other_model, _ = tiny_models("gpt2")
    other = make(other_model, tok, stats("gpt2"), v_num_grad_steps=3)
    other.load_state_dict(state)
    for r in records[1:]:
        other.edit_turn([r])
    assert all(torch.equal(other.edited[p].weight, w) for p, w in want.items())
    assert all(torch.equal(other.cache_c[p], ed.cache_c[p]) for p in ed.paths)


def test_a_failed_turn_rolls_back_weights_and_cache(tiny_models, world, stats, monkeypatch):
    import lifelong.editors.alphaedit as alphaedit

    model, tok = tiny_models("llama")
    ed = make(model, tok, stats("llama"), v_num_grad_steps=3)
    ed.edit_turn(list(world.records(0, 1)))
    before, cache = weights(ed), {p: c.clone() for p, c in ed.cache_c.items()}
    solved = []
    real_solve = ed.solve
    monkeypatch.setattr(ed, "solve", lambda *a: solved.append(a[0]) or real_solve(*a))

    def boom(*args, **kwargs):
        raise LifelongError("boom")
    monkeypatch.setattr(alphaedit, "read_keys", boom)                # every layer is written, then the cache fails
    with pytest.raises(LifelongError, match="boom"):
        ed.edit_turn(list(world.records(1, 2)))
    assert solved == [0, 1]
    assert all(torch.equal(ed.edited[p].weight, w) for p, w in before.items()) and ed.edits_done == 1
    assert all(torch.equal(ed.cache_c[p], cache[p]) for p in ed.paths)
