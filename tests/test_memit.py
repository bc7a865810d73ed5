"""MEMIT / MEMIT-MASS (spec baselines.md §3 CPU tests 1-5, §5) and the shared mass-editing machinery
(templates, keys, compute_z, the layer loop, rollback, layer statistics).

Reference quantities are computed here independently of the editor: module inputs and layer outputs with
plain forward hooks, subject positions by tokenizing the prompt up to the subject's end, the normal equations
of Eq. 14 in float64."""
from __future__ import annotations

import copy

import pytest
import torch

from lifelong.core.errors import LifelongError
from lifelong.core.records import EditRecord
from lifelong.editors import EditContext, build_hparams, editor_class
from lifelong.editors.common import mass_edit, mass_vectors
from lifelong.editors.common.covariance import input_second_moment, load_layer_stats, stats_files, write_layer_stats
from lifelong.editors.common.mass_edit import frozen, safe_solve
from lifelong.editors.common.subjects import subject_last_token
from lifelong.editors.common.templates import sampled_templates
from lifelong.editors.memit import memit_delta
from lifelong.eval.teacher_forced import score_pairs
from lifelong.models.loading import fingerprint
from lifelong.models.modules import family_of, get_module, layer_path, oriented
from mass_support import TINY_Z


def make(model, tok, stats_dir, **hp):
    # λ = 100 on the d=64 fixture models (M6: λ scales a mean second moment; 1000 on the testbed models)
    hparams = build_hparams("memit", {}, family_of(model).name, {**TINY_Z, "mom2_update_weight": 100.0, **hp})
    context = EditContext(family=family_of(model), stats_dir=stats_dir, model_fingerprint=fingerprint(model))
    return editor_class("memit")(model, tok, hparams, context)


def single_token_records(tok, world, n):
    recs = [r for r in world.records(0, 200) if len(tok(" " + r.target, add_special_tokens=False)["input_ids"]) == 1]
    assert len(recs) >= n
    return recs[:n]


def weights(editor):
    return {p: m.weight.detach().clone() for p, m in editor.edited.items()}


# -- 1. Eq. 14 --------------------------------------------------------------------------------------------
def test_memit_solve_meets_the_normal_equations_and_interpolates_as_lambda_vanishes():
    gen = torch.Generator().manual_seed(0)
    d_in, d_out, n = 24, 10, 5
    k0 = torch.randn(d_in, 200, generator=gen, dtype=torch.float64)
    cov = k0 @ k0.T / 200
    k1 = torch.randn(d_in, n, generator=gen, dtype=torch.float64)
    w0 = torch.randn(d_out, d_in, generator=gen, dtype=torch.float64)
    v1 = torch.randn(d_out, n, generator=gen, dtype=torch.float64)
    resid = v1 - w0 @ k1
    for lam in (1.0, 100.0):
        delta = memit_delta(k1, resid, cov, lam)
        assert delta.dtype == torch.float64 and delta.shape == (d_out, d_in)
        assert torch.allclose(delta @ (lam * cov + k1 @ k1.T), resid @ k1.T, atol=1e-8, rtol=0)
    solver = lambda a, b: safe_solve(a, b, symmetric=True)[0]                       # noqa: E731 (the editor's)
    delta = memit_delta(k1.float(), resid.float(), cov.float(), 1e-9, solver)         # fp32 in, fp64 solve
    assert torch.allclose((w0 + delta) @ k1, v1, atol=1e-6, rtol=0)


def test_a_singular_system_gets_a_counted_ridge_not_a_nan():
    k = torch.randn(6, 2, dtype=torch.float64)
    a = k @ k.T                                                   # rank 2 of 6: singular
    x, retries = safe_solve(a, k, symmetric=True)
    assert retries >= 1 and torch.isfinite(x).all()
    x, retries = safe_solve(torch.zeros(3, 3), torch.ones(3, 1), symmetric=False)
    assert retries >= 1 and torch.isfinite(x).all()
    with pytest.raises(LifelongError, match="singular after"):
        safe_solve(torch.full((2, 2), float("nan")), torch.ones(2, 1), symmetric=False)


# -- templates, subjects, keys ---------------------------------------------------------------------------
def test_sampled_templates_are_seeded_short_and_brace_free(tiny_models):
    model, tok = tiny_models("llama")
    seeds = ("The", "Therefore", "Because", "I", "You")
    a = sampled_templates(model, tok, seeds, seed=3)
    assert a == sampled_templates(model, tok, seeds, seed=3) and len(a) == 5
    assert any(x != y for x, y in zip(a, sampled_templates(model, tok, seeds, seed=4)))
    for text in a:
        assert text.endswith(". {}") and text.count("{") == 1 and text.count("}") == 1
        assert len(tok(text[:-4])["input_ids"]) <= 10 + 1          # ≤ 10 generated-with-seed tokens (+ re-tokenisation)


def test_subject_search_starts_at_the_prompt_part(tiny_models):
    _, tok = tiny_models("gpt2")
    text = "Kalo Ven was here. The native language of Kalo Ven is"
    start = text.index("The")
    pos, found = subject_last_token(tok, text, "Kalo Ven", start)
    want = len(tok(text[: text.rindex("Kalo Ven") + len("Kalo Ven")])["input_ids"]) - 1
    assert found and pos == want and pos != subject_last_token(tok, text, "Kalo Ven")[0]


@pytest.mark.parametrize("family", ["gpt2", "llama", "mistral"])
def test_key_is_half_the_bare_prompt_and_a_tenth_of_each_template(family, tiny_models, world):  # test 3
    model, tok = tiny_models(family)
    groups = [["{}"], [f"Filler {i} text here. {{}}" for i in range(5)]]
    record = world.record(1)
    path = layer_path(model, 1)
    rows = mass_vectors.key_rows(tok, [record], groups, "fallback")
    keys, _ = mass_vectors.read_keys(model, tok, family_of(model), rows, [path], None)
    found = []
    for template in groups[0] + groups[1]:
        text = template.format(record.prompt)
        end = text.rindex(record.subject) + len(record.subject)
        pos = len(tok(text[:end])["input_ids"]) - 1
        seen = {}
        handle = get_module(model, path).register_forward_hook(lambda m, a, o: seen.update(k=a[0][0, pos]))
        with torch.no_grad():
            model(**tok([text], return_tensors="pt"))
        handle.remove()
        found.append(seen["k"])
    want = 0.5 * found[0] + sum(found[1:]) / 10
    assert torch.allclose(keys[path][0], want, atol=1e-5)
    assert not torch.allclose(keys[path][0], torch.stack(found).mean(0), atol=1e-4)   # not a plain mean


# -- 4. compute_z -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["gpt2", "llama", "mistral"])
def test_z_respects_the_clamp_and_makes_the_target_the_argmax(family, tiny_models, world):
    model, tok = tiny_models(family)
    fam = family_of(model)
    record = single_token_records(tok, world, 1)[0]
    clamp = 0.5
    hp = build_hparams("memit", {}, fam.name, {**TINY_Z, "clamp_norm_factor": clamp, "v_num_grad_steps": 8})
    with frozen(model):
        res = mass_vectors.compute_z(model, tok, fam, record, ["{}"], hp, 1, 3, "fallback")
    assert res.clamp_hits > 0 and res.delta_ratio <= clamp + 1e-6
    hp = build_hparams("memit", {}, fam.name, {**TINY_Z, "clamp_norm_factor": 20.0, "v_num_grad_steps": 100,
                                                 "kl_factor": 0.0, "v_weight_decay": 0.0})
    with frozen(model):
        res = mass_vectors.compute_z(model, tok, fam, record, ["{}"], hp, 1, 3, "fallback")
    layer = get_module(model, fam.layers)[1]
    pos, _ = subject_last_token(tok, record.prompt, record.subject)
    ids = tok([record.prompt], return_tensors="pt")
    target = tok(" " + record.target, add_special_tokens=False)["input_ids"][0]

    def inject(module, args, output):
        out = (output[0] if isinstance(output, tuple) else output).clone()
        out[0, pos] = res.z
        return (out, *output[1:]) if isinstance(output, tuple) else out
    with torch.no_grad():
        plain = model(**ids).logits[0, -1].argmax()
        handle = layer.register_forward_hook(inject)
        injected = model(**ids).logits[0, -1].argmax()
        handle.remove()
    assert int(injected) == target and int(plain) != target


def test_weight_decay_uses_the_norm_unless_asked_for_its_square(tiny_models, world):   # M3
    """Two iterations: one step (its weight-decay gradient is 0 at δ = 0 either way), then the loss at δ₁."""
    model, tok = tiny_models("llama")
    fam = family_of(model)
    got = {}
    for faithful in (True, False):
        hp = build_hparams("memit", {}, fam.name, {**TINY_Z, "v_num_grad_steps": 2, "kl_factor": 0.0,
                                                     "v_weight_decay": 0.5, "faithful_weight_decay": faithful})
        with frozen(model):
            got[faithful] = mass_vectors.compute_z(model, tok, fam, world.record(0), ["{}"], hp, 1, 3, "fallback")
    assert torch.equal(got[True].z, got[False].z)
    delta, h = got[True].z - got[True].h_init, got[True].h_init
    want = 0.5 * (delta.norm() - delta.norm() ** 2) / h.norm() ** 2
    assert delta.norm() > 0 and got[True].loss - got[False].loss == pytest.approx(float(want), rel=1e-3, abs=1e-6)


# -- 2. the layer loop --------------------------------------------------------------------------------------
def test_three_layers_take_a_third_a_half_and_the_rest(tiny_models, world, stats, monkeypatch):
    model, tok = tiny_models("llama")
    ed = make(model, tok, stats("llama"), layers=[0, 1, 2], v_num_grad_steps=4)
    records = list(world.records(0, 2))
    zs, seen = [], []
    real_z = mass_edit.compute_z
    monkeypatch.setattr(mass_edit, "compute_z", lambda *a, **k: zs.append(real_z(*a, **k)) or zs[-1])
    layer2 = get_module(model, family_of(model).layers)[2]
    real_solve = ed.solve

    def checked(index, path, keys, resid):
        cur = []                                   # layer 2's output at each bare prompt's subject token, now
        for r in records:
            pos, _ = subject_last_token(tok, r.prompt, r.subject)
            handle = layer2.register_forward_hook(lambda m, a, o: cur.append(o[0, pos].float()) and None)
            with torch.no_grad():
                model(**tok([r.prompt], return_tensors="pt"))
            handle.remove()
        remaining = torch.stack([z.z for z in zs]) - torch.stack(cur)
        seen.append((index, remaining))
        assert torch.allclose(resid.T, remaining / (3 - index), atol=1e-4)
        return real_solve(index, path, keys, resid)

    monkeypatch.setattr(ed, "solve", checked)
    ed.edit_turn(records)
    assert [i for i, _ in seen] == [0, 1, 2]
    assert not torch.allclose(seen[0][1], seen[1][1], atol=1e-3)       # recomputed after the lower edits


# -- 5. bitwise weights, reset, state ----------------------------------------------------------------------
@pytest.mark.parametrize("family", ["gpt2", "llama", "mistral"])
def test_weights_are_bitwise_the_original_plus_the_deltas_and_reset_restores(family, tiny_models, world, stats):
    model, tok = tiny_models(family)
    ed = make(model, tok, stats(family), v_num_grad_steps=4, turn_size=2)
    original = weights(ed)
    records = list(world.records(0, 4))
    ed.edit_turn(records[:2])
    first = {p: d.clone() for p, d in ed.last_deltas.items()}
    ed.edit_turn(records[2:])
    for path, module in ed.edited.items():
        want = original[path] + oriented(module, first[path].T).to(original[path].dtype)
        want = want + oriented(module, ed.last_deltas[path].T).to(want.dtype)
        assert torch.equal(module.weight, want), path
        assert first[path].abs().sum() > 0
    ed.reset()
    assert all(torch.equal(m.weight, original[p]) for p, m in ed.edited.items()) and ed.edits_done == 0
    assert ed.templates is not None                                      # templates survive a reset


def test_state_dict_round_trips_and_continues_identically(tiny_models, world, stats):
    model, tok = tiny_models("llama")
    ed = make(model, tok, stats("llama"), v_num_grad_steps=4)
    records = list(world.records(0, 3))
    ed.edit_turn(records[:1])
    state = copy.deepcopy(ed.state_dict())
    ed.edit_turn(records[1:2])
    ed.edit_turn(records[2:])
    want = weights(ed)
    other_model, _ = tiny_models("llama")
    other = make(other_model, tok, stats("llama"), v_num_grad_steps=4)
    other.load_state_dict(state)
    assert other.templates == ed.templates and other.edits_done == 1
    other.edit_turn(records[1:2])
    other.edit_turn(records[2:])
    assert all(torch.equal(other.edited[p].weight, w) for p, w in want.items())


# -- reliability, guards -------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["gpt2", "llama", "mistral"])
def test_one_turn_raises_reliability(family, tiny_models, world, stats):
    model, tok = tiny_models(family)
    records = single_token_records(tok, world, 4)
    pairs = [(r.prompt, r.target) for r in records]
    before = score_pairs(model, tok, pairs).accuracy.mean()
    ed = make(model, tok, stats(family), turn_size=4, v_num_grad_steps=60)
    out = ed.edit_turn(records)
    assert score_pairs(model, tok, pairs).accuracy.mean() > before
    assert out["subject_fallbacks"] == 0 and out["delta_norm_L0"] > 0 and "z_iterations" in out
    report = ed.report()
    assert report["layers"] == [0, 1] and len(report["templates"][1]) == 5 and report["variant"].startswith("MEMIT-MASS")


def test_missing_stats_name_the_stage_and_leave_the_model_alone(tiny_models, world, tmp_path):
    model, tok = tiny_models("gpt2")
    ed = make(model, tok, tmp_path / "stats" / "tiny-gpt2")
    before = weights(ed)
    with pytest.raises(LifelongError, match=r"stats@tiny-gpt2.*dvc repro stats@tiny-gpt2.*write_layer_stats"):
        ed.edit_turn(list(world.records(0, 1)))
    assert all(torch.equal(ed.edited[p].weight, w) for p, w in before.items())
    with pytest.raises(LifelongError, match="no stats folder"):
        load_layer_stats(None, layer_path(model, 0), model)


def test_stats_folder_layout_and_fingerprint_check(tiny_models, world, tmp_path):
    model, tok = tiny_models("llama")
    path = layer_path(model, 1)
    texts = world.pretraining_sentences()[:40]
    meta = write_layer_stats(model, tok, [layer_path(model, 0), path], texts, tmp_path, corpus="forty")[path]
    tensor_file, meta_file = stats_files(tmp_path, path)
    assert tensor_file.name == f"{path}.safetensors" and meta_file.exists()
    assert {"corpus", "tokens", "texts", "dtype", "seconds", "fingerprint"} <= set(meta) and meta["texts"] == 40
    moment, loaded = load_layer_stats(tmp_path, path, model)
    assert torch.allclose(moment, input_second_moment(model, tok, path, texts)[0], atol=1e-6)
    assert loaded == {k: v for k, v in meta.items() if k != "seconds"}     # on disk: everything but the timing
    mistral, _ = tiny_models("mistral")                  # the same module path, another model
    assert layer_path(mistral, 1) == path
    with pytest.raises(LifelongError, match="computed on model"):
        load_layer_stats(tmp_path, path, mistral)


def test_a_nan_update_rolls_the_whole_turn_back(tiny_models, world, stats, monkeypatch):
    model, tok = tiny_models("gpt2")
    ed = make(model, tok, stats("gpt2"), v_num_grad_steps=3)
    ed.edit_turn(list(world.records(0, 1)))
    before = weights(ed)
    real = ed.solve
    monkeypatch.setattr(ed, "solve", lambda i, p, k, r: real(i, p, k, r) * (float("nan") if i == 1 else 1.0))
    with pytest.raises(LifelongError, match=r"layer 1 \(transformer\.h\.1\.mlp\.c_proj\).*NaN"):
        ed.edit_turn(list(world.records(1, 2)))
    assert all(torch.equal(ed.edited[p].weight, w) for p, w in before.items()) and ed.edits_done == 1


def test_a_record_without_its_subject_falls_back_and_is_counted(tiny_models, world, stats):
    model, tok = tiny_models("llama")
    ed = make(model, tok, stats("llama"), v_num_grad_steps=3)
    record = world.record(0)
    out = ed.edit_turn([EditRecord(prompt=record.prompt, target=record.target)])
    assert out["subject_fallbacks"] == 1 and ed.report()["subject_fallbacks"] == 1
    strict = make(model, tok, stats("llama"), v_num_grad_steps=3, missing_subject="error")
    before = weights(strict)
    with pytest.raises(LifelongError, match="does not occur"):
        strict.edit_turn([EditRecord(prompt=record.prompt, target=record.target, subject="Nobody Here")])
    assert all(torch.equal(strict.edited[p].weight, w) for p, w in before.items())
