"""UltraEdit: spec ultraedit.md §7 (faithfulness) plus the editor contract (guards, checkpoints).

Reference computations here are written independently of the editor: module inputs and output
gradients are taken with zero "probe" tensors added to the module outputs, the loss is a float64
log-softmax, and the normalizer and ridge targets are closed forms.
"""
from __future__ import annotations

import copy
import io

import pytest
import torch

from lifelong.editors import EditContext, build_hparams
from lifelong.editors.ultraedit import UltraEditor, UltraEditHparams, pseudo_values, ridge_solve
from lifelong.editors.ultraedit.stats import EPS, RunningStats
from lifelong.core.errors import ConfigError, LifelongError
from lifelong.eval.teacher_forced import reliability_pairs, score_pairs
from lifelong.models.families import FAMILIES
from lifelong.models.modules import get_module, weight_in_out
from lifelong.core.records import EditRecord
from lifelong.models.tokenization import IGNORE, answer_ids, collate, encode_pair, pad_id

LLAMA_MODULES = ["model.layers.1.mlp.gate_proj", "model.layers.2.mlp.up_proj", "model.layers.2.mlp.down_proj"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Tiny models on a shared 2-core machine: one thread avoids OpenMP oversubscription (10-50x faster).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_editor(model, tok, family, **overrides):
    hp = build_hparams("ultraedit", {}, family, overrides)
    return UltraEditor(model, tok, hp, EditContext(FAMILIES[family]))


def ref_minibatches(tok, records, batch_size):
    """Spec §3.6: sort by token length, longest first (stable), cut, right-pad."""
    enc = [encode_pair(tok, r.prompt, r.target) for r in records]
    order = sorted(range(len(enc)), key=lambda i: -len(enc[i].input_ids))
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [collate([enc[i] for i in c], pad_id=pad_id(tok)) for c in chunks]


def ref_capture(model, batch, paths):
    """Keys = module inputs, grads = d(mean CE over the answer tokens)/d(module output), at answer positions."""
    inputs, probes, handles = {}, {}, []
    for path in paths:
        def hook(module, args, output, path=path):
            inputs[path] = args[0].detach().clone()
            probes[path] = torch.zeros_like(output, requires_grad=True)
            return output + probes[path]
        handles.append(get_module(model, path).register_forward_hook(hook))
    try:
        logits = model(**batch.model_inputs()).logits
    finally:
        for h in handles:
            h.remove()
    valid = batch.labels != IGNORE
    logp = torch.log_softmax(logits.double(), -1)[valid]
    loss = -logp.gather(1, batch.labels[valid][:, None]).mean()
    grads = torch.autograd.grad(loss, [probes[p] for p in paths])
    return {p: (inputs[p][valid].float(), g[valid].float()) for p, g in zip(paths, grads)}


def weights(editor):
    return {p: m.weight.detach().clone() for p, m in editor.edited.items()}


# -- tokenization and capture --------------------------------------------------------------------
def test_tokenization_and_capture_positions(tiny_models, world):
    model, tok = tiny_models("llama")  # adds BOS, like LLaMA-3 / Mistral
    records = list(world.records(0, 3))
    for r in records:
        p_ids, a_ids = tok(r.prompt)["input_ids"], tok(" " + r.target, add_special_tokens=False)["input_ids"]
        enc = encode_pair(tok, r.prompt, r.target)
        assert len(enc.input_ids) == len(enc.labels) == len(p_ids) + len(a_ids) - 1
        assert enc.labels[: len(p_ids) - 1] == [IGNORE] * (len(p_ids) - 1) and enc.labels[len(p_ids) - 1 :] == a_ids
    path = "model.layers.2.mlp.down_proj"
    editor = make_editor(model, tok, "llama", modules=[path], batch_size=3)
    batch = collate([encode_pair(tok, r.prompt, r.target) for r in records], pad_id=pad_id(tok))
    seen = {}

    def record_input(module, args, output):
        seen["x"] = args[0].detach().clone()

    handle = get_module(model, path).register_forward_hook(record_input)
    _, captured = editor.capture(batch)
    handle.remove()
    keys, grads = captured[path]
    n_answer = sum(len(answer_ids(tok, r.target)) for r in records)
    assert keys.shape == (n_answer, 256) and grads.shape == (n_answer, 64)
    # sample-major, token order, from the last prompt token to the second-to-last answer token
    expected = torch.cat([seen["x"][b, len(tok(r.prompt)["input_ids"]) - 1 :
                                    len(tok(r.prompt)["input_ids"]) - 1 + len(answer_ids(tok, r.target))]
                          for b, r in enumerate(records)])
    torch.testing.assert_close(keys, expected, rtol=0, atol=0)


def test_capture_matches_autograd(model_and_tokenizer, family, world):
    model, tok = model_and_tokenizer
    fam = FAMILIES[family]
    # several modules, some downstream of others: gradients must flow through earlier edited modules
    paths = [f"{fam.layers}.1.{fam.mlp_projections[1]}", f"{fam.layers}.1.{fam.mlp_out}", f"{fam.layers}.3.{fam.mlp_out}"]
    editor = make_editor(model, tok, family, modules=paths)
    batch = ref_minibatches(tok, list(world.records(0, 6)), 6)[0]
    loss, captured = editor.capture(batch)
    expected = ref_capture(model, batch, paths)
    for p in paths:
        torch.testing.assert_close(captured[p][0], expected[p][0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(captured[p][1], expected[p][1], rtol=1e-4, atol=1e-7)
        assert captured[p][1].abs().max() > 0
    assert all(not prm.requires_grad and prm.grad is None for prm in model.parameters())  # activation grads only


# -- the normalizer ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_normalizer_recursion_matches_closed_form(dtype):
    gen = torch.Generator().manual_seed(0)
    d_in, d_out = 5, 3
    stats = RunningStats(d_in, d_out, dtype=dtype)
    batches = [torch.randn(m, d_in + d_out, generator=gen) * 3 + 2 for m in (7, 20, 2, 13, 1, 9)]
    for x in batches:
        stats.update(x[:, :d_in], x[:, d_in:])
    rows = torch.cat(batches).double()
    n = rows.shape[0]
    mean = rows.mean(0)
    m2 = ((rows - mean) ** 2).sum(0)
    extra = sum(x.double().var(0) for x in batches if len(x) > 1)  # the m·var quirk; 0 for a one-row batch
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    assert stats.count == n
    torch.testing.assert_close(stats.mean.double(), mean, **tol)
    torch.testing.assert_close(stats.S.double(), m2 + extra, **tol)
    assert not torch.allclose(stats.S.double(), m2, rtol=1e-3)  # the quirk is really there
    torch.testing.assert_close(stats.std.double(), ((m2 + extra) / (n - 1 + EPS)).sqrt(), **tol)
    z = torch.randn(4, d_in + d_out, generator=gen)
    k_hat, g_hat = stats.normalize(z[:, :d_in], z[:, d_in:])
    torch.testing.assert_close(torch.cat([k_hat, g_hat], 1).double(),
                               (z.double() - mean) / (((m2 + extra) / (n - 1 + EPS)).sqrt() + EPS), **tol)


def test_single_row_minibatch_guard(tiny_models, world):
    model, tok = tiny_models("gpt2")
    words = [w for w in (tok.convert_tokens_to_string([t]).strip() for t in sorted(tok.get_vocab()) if t.startswith("Ġ"))
             if w.isalpha() and len(answer_ids(tok, w)) == 1]
    assert words, "no single-token answer found"
    record = EditRecord(prompt=world.record(0).prompt, target=words[0])
    editor = make_editor(model, tok, "gpt2", layers=[2], batch_size=1, turn_size=1, lr=1e-3)
    editor.edit_turn([record])  # one row: the reference's var_unbiased would be NaN forever after
    editor.edit_turn(list(world.records(0, 4)))
    stats = next(iter(editor.stats.values()))
    assert stats.count > 1 and all(torch.isfinite(t).all() for t in (stats.mean, stats.S, stats.std))
    assert all(torch.isfinite(m.weight).all() for m in editor.edited.values())


def test_stats_shared_per_shape_and_union_of_two_turns(tiny_models, world):
    model, tok = tiny_models("llama")
    editor = make_editor(model, tok, "llama", modules=LLAMA_MODULES, batch_size=4, stats_dtype="float64")
    assert sorted(editor.stats) == ["(256, 64)", "(64, 256)"]  # gate and up share one normalizer
    turns = [list(world.records(0, 10)), list(world.records(10, 20))]
    calls = {"(64, 256)": [], "(256, 64)": []}
    for records in turns:
        for batch in ref_minibatches(tok, records, 4):  # captured from the model as edited so far
            cap = ref_capture(model, batch, LLAMA_MODULES)
            for p in LLAMA_MODULES:  # one update per (mini-batch, module)
                calls["(256, 64)" if p.endswith("down_proj") else "(64, 256)"].append(torch.cat(cap[p], 1))
        editor.edit_turn(records)
    for key, batches in calls.items():
        rows = torch.cat(batches).double()
        mean = rows.mean(0)
        S = ((rows - mean) ** 2).sum(0) + sum(b.double().var(0) for b in batches)
        stats = editor.stats[key]
        assert stats.count == rows.shape[0]
        torch.testing.assert_close(stats.mean, mean, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(stats.S, S, rtol=1e-4, atol=1e-6)


# -- the solve ---------------------------------------------------------------------------------------
def _random_problem(n=40, d_in=96, d_out=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    keys = torch.randn(n, d_in, generator=gen) * 2 + 0.5
    grads = torch.randn(n, d_out, generator=gen) * 1e-2
    stats = RunningStats(d_in, d_out)
    for i in range(0, n, 10):
        stats.update(keys[i : i + 10], grads[i : i + 10])
    return keys, grads, stats


def test_frozen_normalizer_gives_ridge_with_raw_keys(tiny_models):
    model, tok = tiny_models("llama")
    path = "model.layers.2.mlp.down_proj"
    editor = make_editor(model, tok, "llama", modules=[path], lr=1e-3)
    keys, grads, stats = _random_problem(n=60, d_in=256, d_out=64)
    editor.stats["(256, 64)"] = stats
    delta = editor.shift(path, keys, grads).double()
    mu, sd = stats.mean.double(), stats.std.double() + EPS
    k_hat = (keys.double() - mu[:256]) / sd[:256]
    g_hat = (grads.double() - mu[256:]) / sd[256:]
    V = -1e-3 * (k_hat**2).sum(1, keepdim=True) * g_hat
    K = keys.double()
    ridge = torch.linalg.solve(K.T @ K + torch.eye(256, dtype=torch.float64), K.T @ V)
    torch.testing.assert_close(delta, ridge, rtol=1e-4, atol=1e-6 * ridge.abs().max().item())
    wrong = torch.linalg.solve(k_hat.T @ k_hat + torch.eye(256, dtype=torch.float64), k_hat.T @ V)
    assert not torch.allclose(wrong, ridge, rtol=1e-2, atol=1e-4 * ridge.abs().max().item())


@pytest.mark.parametrize("n", [30, 150])  # fewer and more rows than d_in
def test_woodbury_equals_direct(n):
    keys, grads, stats = _random_problem(n=n, d_in=96)
    values = pseudo_values(stats, keys, grads, lr=1e-3)
    w, d = ridge_solve(keys, values, 1.0, "woodbury"), ridge_solve(keys, values, 1.0, "direct")
    assert ((w - d).norm() / d.norm()) < 1e-4


def test_shift_invariant_to_row_order_and_chunk_and_linear_in_lr(tiny_models):
    model, tok = tiny_models("llama")
    path = "model.layers.2.mlp.down_proj"
    keys, grads, stats = _random_problem(n=60, d_in=256, d_out=64, seed=1)

    def shift(k, g, **hp):
        editor = make_editor(model, tok, "llama", modules=[path], **hp)
        editor.stats["(256, 64)"] = stats
        return editor.shift(path, k, g)

    base = shift(keys, grads, lr=1e-3)
    perm = torch.randperm(60, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(shift(keys[perm], grads[perm], lr=1e-3), base, rtol=1e-4, atol=1e-6 * base.abs().max().item())
    torch.testing.assert_close(shift(keys, grads, lr=1e-3, row_chunk=7), base, rtol=0, atol=0)
    assert torch.equal(shift(keys, grads, lr=2e-3), 2 * base)  # exactly linear in lr
    assert torch.equal(shift(keys, grads, lr=4e-3), 4 * base)


def test_turn_shift_linear_in_lr(tiny_models, world):
    records = list(world.records(0, 10))
    diffs = []
    for lr in (1e-4, 3e-4):
        model, tok = tiny_models("gpt2")
        editor = make_editor(model, tok, "gpt2", layers=[2], lr=lr)
        before = weights(editor)
        editor.edit_turn(records)
        diffs.append(next(iter(weights(editor).values())) - next(iter(before.values())))
    torch.testing.assert_close(diffs[1], 3 * diffs[0], rtol=1e-3, atol=1e-6)


# -- orientation and the whole turn ------------------------------------------------------------------
@pytest.mark.parametrize("fam,path", [("gpt2", "transformer.h.2.mlp.c_proj"), ("llama", "model.layers.2.mlp.down_proj")])
def test_orientation(tiny_models, world, fam, path):
    model, tok = tiny_models(fam)
    editor = make_editor(model, tok, fam, modules=[path], lr=1e-3, batch_size=5)
    records = list(world.records(0, 5))
    cap = ref_capture(model, ref_minibatches(tok, records, 5)[0], [path])
    keys, grads = cap[path]
    module = get_module(model, path)
    with torch.no_grad():
        old_out = module(keys)
    w_old = weight_in_out(module).detach().clone()
    editor.edit_turn(records)
    expected_delta = editor.shift(path, keys, grads)  # stats now include this turn's rows
    torch.testing.assert_close(weight_in_out(module) - w_old, expected_delta, rtol=1e-4, atol=1e-7)
    with torch.no_grad():
        moved = module(keys) - old_out  # = k·Δ through the module's own forward (bias cancels)
    torch.testing.assert_close(moved, keys @ expected_delta, rtol=1e-3, atol=1e-5)
    # K·Δ ≈ V (the minimum-norm update moving each key's output by its pseudo-value) where ||k||² >> 1
    values = pseudo_values(editor.stats_for(path), keys, grads, 1e-3)
    cos = torch.nn.functional.cosine_similarity(moved, values, dim=1)
    assert cos.mean() > 0.9, cos


@pytest.mark.parametrize("fam", ["llama", "gpt2"])
def test_one_turn_raises_reliability(tiny_models, world, fam):
    model, tok = tiny_models(fam)
    records = list(world.records(0, 20))
    before = score_pairs(model, tok, reliability_pairs(records)).accuracy.mean()
    editor = make_editor(model, tok, fam, turn_size=20, lr=3e-3, layers=[1, 2])
    editor.edit_turn(records)
    after = score_pairs(model, tok, reliability_pairs(records)).accuracy.mean()
    assert after > before + 0.25, (before, after)


def test_fix_pairing_never_pairs_keys_with_zero_grads(tiny_models, world):
    """turn_size % batch_size != 0: the reference (bug §1.10a) pairs the last batch's keys with zero grads."""
    records = list(world.records(0, 8))
    path = "transformer.h.2.mlp.c_proj"
    deltas = {}
    for fix in (True, False):
        model, tok = tiny_models("gpt2")
        editor = make_editor(model, tok, "gpt2", modules=[path], batch_size=3, lr=1e-3, fix_pairing=fix)
        caps = [ref_capture(model, b, [path])[path] for b in ref_minibatches(tok, records, 3)]
        w0 = weight_in_out(get_module(model, path)).detach().clone()
        editor.edit_turn(records)
        deltas[fix] = weight_in_out(get_module(model, path)) - w0
    keys = torch.cat([k for k, _ in caps])
    real = torch.cat([g for _, g in caps])
    bugged = torch.cat([g for _, g in caps[:-1]] + [torch.zeros_like(caps[-1][1])])
    tol = dict(rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(deltas[True], editor.shift(path, keys, real), **tol)
    torch.testing.assert_close(deltas[False], editor.shift(path, keys, bugged), **tol)
    assert not torch.allclose(deltas[True], deltas[False], **tol)


# -- guards ------------------------------------------------------------------------------------------
def test_nan_guard_leaves_model_and_stats_unchanged(tiny_models, world):
    model, tok = tiny_models("llama")
    editor = make_editor(model, tok, "llama", modules=LLAMA_MODULES, lr=1e-3)
    editor.edit_turn(list(world.records(0, 10)))
    saved_w, saved_stats = weights(editor), copy.deepcopy(editor.extra_state())
    editor.hparams.lr = 1e38  # pseudo-values overflow: the solve is not finite
    with pytest.raises(LifelongError, match="NaN/Inf"):
        editor.edit_turn(list(world.records(10, 20)))
    editor.hparams.lr = 1e-3
    with torch.no_grad():
        get_module(model, "model.layers.0.mlp.down_proj").weight[0, 0] = float("nan")  # poisons every key
    with pytest.raises(LifelongError, match="NaN/Inf"):
        editor.edit_turn(list(world.records(10, 20)))
    for p, w in weights(editor).items():
        assert torch.equal(w, saved_w[p])
    for key, st in editor.extra_state()["stats"].items():
        for name in ("n", "mean", "S", "std"):
            assert torch.equal(st[name], saved_stats["stats"][key][name])


def test_hparams_and_module_selection(tiny_models):
    model, tok = tiny_models("llama")
    params = {"editors": {"ultraedit": {"default": {"lr": 1e-4}, "llama": {"layers": [1, 2]}}}}
    hp = build_hparams("ultraedit", params, "llama", {"projections": ["mlp.gate_proj", "mlp.up_proj"]})
    assert isinstance(hp, UltraEditHparams) and hp.lr == 1e-4 and hp.turn_size == 100 and hp.batch_size == 10
    editor = UltraEditor(model, tok, hp, EditContext(FAMILIES["llama"]))
    assert editor.paths == ["model.layers.1.mlp.gate_proj", "model.layers.2.mlp.gate_proj",
                            "model.layers.1.mlp.up_proj", "model.layers.2.mlp.up_proj"]
    assert make_editor(model, tok, "llama").paths == ["model.layers.1.mlp.down_proj", "model.layers.2.mlp.down_proj"]
    with pytest.raises(ConfigError, match="unknown key"):
        build_hparams("ultraedit", {}, "llama", {"lamda": 1})
    for bad in ({"lr": 0}, {"batch_size": 0}, {"preset": "nope"}, {"preset": "mistral-7b", "modules": ["x"]}):
        with pytest.raises(ConfigError):
            build_hparams("ultraedit", {}, "llama", bad)
    with pytest.raises(LifelongError, match="valid MLP projections"):
        make_editor(model, tok, "llama", modules=["model.layers.1.self_attn"])
    with pytest.raises(LifelongError, match="does not exist"):
        make_editor(model, tok, "llama", modules=["model.layers.1.mlp.fc_out"])
    with pytest.raises(LifelongError, match="layer 9 does not exist"):
        make_editor(model, tok, "llama", layers=[9])
    with pytest.raises(LifelongError, match="twice"):
        make_editor(model, tok, "llama", layers=[3, -1])
    with pytest.raises(LifelongError, match="32-layer llama"):
        make_editor(model, tok, "llama", preset="llama3-8b")


# -- checkpoints -------------------------------------------------------------------------------------
@pytest.mark.parametrize("options", [{}, {"faithful": False}], ids=["faithful", "improved"])
def test_state_dict_round_trip(tiny_models, world, options):
    def fresh():
        model, tok = tiny_models("llama")
        if options:
            model.to(torch.bfloat16)  # exercises the fp32 master copy
        return make_editor(model, tok, "llama", modules=LLAMA_MODULES, lr=1e-3, batch_size=5, **options)

    turn1, turn2 = list(world.records(0, 10)), list(world.records(10, 20))
    a = fresh()
    originals = weights(a)
    a.edit_turn(turn1)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    a.edit_turn(turn2)
    b = fresh()
    buffer.seek(0)
    b.load_state_dict(torch.load(buffer))
    b.edit_turn(turn2)
    for p in a.paths:
        assert torch.equal(a.edited[p].weight, b.edited[p].weight)
        assert not torch.equal(a.edited[p].weight, originals[p])
    sa, sb = a.extra_state(), b.extra_state()
    for key in sa["stats"]:
        assert torch.equal(sa["stats"][key]["S"], sb["stats"][key]["S"]) and sa["stats"][key]["n"] > 0
    if options:
        assert a.stats_dtype == torch.float64 and set(sa["master"]) == set(a.paths)
        for p in a.paths:
            assert torch.equal(sa["master"][p], sb["master"][p])
            assert torch.equal(a.edited[p].weight, sa["master"][p].to(torch.bfloat16))
    else:
        assert a.stats_dtype == torch.float32 and sa["master"] == {}
    a.reset()
    for p in a.paths:
        assert torch.equal(a.edited[p].weight, originals[p])
    assert all(float(s.n) == 0 for s in a.stats.values()) and a.edits_done == 0
