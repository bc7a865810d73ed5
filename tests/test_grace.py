"""GRACE: spec shared/specs/baselines.md §2 CPU tests 1-5, plus G1/G3/G4, the scorer's prompt-end hook (G2),
reset, checkpoints and the runner. Model tests use the pretrained tiny fixture models of every family."""
from __future__ import annotations

import pytest
import torch

from lifelong.core import state as tree
from lifelong.core.errors import LifelongError
from lifelong.editors import EditContext, build_hparams
from lifelong.editors.grace import GraceEditor, GraceHparams
from lifelong.editors.grace.adapter import GraceAdapter
from lifelong.editors.grace.codebook import Codebook, labels_match
from lifelong.eval.generation import generation_exact_match, greedy_generate
from lifelong.eval.teacher_forced import label_prompt_ends, score_pairs
from lifelong.models.loading import fingerprint
from lifelong.models.modules import family_of, get_module
from lifelong.models.tokenization import IGNORE, answer_ids, encode_batch

FAST = dict(layer=-2, n_iter=30, eps=1.0)


def make(model, tok, **hp) -> GraceEditor:
    ctx = EditContext(family=family_of(model), seed=0, model_fingerprint=fingerprint(model))
    return GraceEditor(model, tok, GraceHparams(**{**FAST, **hp}), ctx)


def logits_of(model, tok, pairs, editor=None):
    """Logits of the right-padded pairs; with `editor`, it is told each row's last prompt token first."""
    batch = encode_batch(tok, pairs)
    if editor is not None:
        editor.set_prompt_ends(label_prompt_ends(batch.labels))
    return model(**batch.model_inputs()).logits


def single_token_record(world, tok, start=0):
    """The first world record from `start` whose target is one token under `tok`."""
    return next(r for r in world.records(start, start + 48) if len(answer_ids(tok, r.target)) == 1)


def vec(*v):
    return torch.tensor(v, dtype=torch.float32)


# -- the codebook arithmetic (spec tests 2 and 3) ------------------------------------------------------
A, B, C = [IGNORE, 5], [IGNORE, 6], [IGNORE, 9]


def book(**kw) -> Codebook:
    return Codebook(1.0, 2, 3, **kw)


def test_codebook_worked_example():  # spec test 2
    cb = book()
    value = lambda: torch.zeros(3)  # noqa: E731
    assert cb.update(vec(0, 0), A, value)[:2] == (0, "add")
    assert cb.update(vec(1.5, 0), A, value)[:2] == (0, "expand")            # d = 1.5 > ε = 1, same label
    assert len(cb) == 1 and float(cb.radii[0]) == 1.5
    assert cb.update(vec(2, 0), B, value)[:2] == (1, "split")               # d = 2 ≤ 1 + 1.5, other label
    assert cb.radii.tolist() == pytest.approx([0.99999, 1.0], abs=1e-7)
    assert cb.update(vec(10, 0), A, value)[:2] == (2, "add")                # d = 8 > 1 + 1
    assert float(cb.radii[2]) == 1.0
    index, action, _ = cb.update(vec(4, 0), C, value)                       # d = 2 = ε0 + ε: not strictly greater
    assert (index, action) == (3, "split") and cb.radii[1:].tolist() == pytest.approx([0.99999, 1.0, 1.0], abs=1e-7)
    assert cb.counts == {"additions": 2, "splits": 2, "expansions": 1, "keeps": 0}
    assert cb.update(vec(4.5, 0), C, value)[:2] == (3, "keep")              # inside its radius: retrain only


def test_labels_stay_with_their_keys():  # spec test 3 (G1: EasyEdit prepends labels)
    cb = book()
    for x, label in ((0, A), (5, B), (10, C)):
        cb.update(vec(x, 0), label, lambda: torch.zeros(3))
    assert cb.labels == [A, B, C] and cb.keys[:, 0].tolist() == [0, 5, 10]
    for x, label in ((0, A), (5, B), (10, C)):                              # the same edit again: a keep, not a split
        assert cb.update(vec(x, 0), label, lambda: torch.zeros(3))[1] == "keep"


def test_split_can_grow_a_radius_g3_and_the_fix():
    def run(faithful):
        cb = book(faithful_split=faithful)
        for x, label in ((0, A), (0.2, B), (-1.0, C)):   # the last: d = 1 ≤ 1 + 0.1 from key 0, whose ε is 0.1
            cb.update(vec(x, 0), label, lambda: torch.zeros(3))
        return cb.radii.tolist()
    assert run(True) == pytest.approx([0.5 - 1e-5, 0.1, 0.5], abs=1e-6)     # G3: ε_0 grew from 0.1 to 0.5
    assert run(False) == pytest.approx([0.1 - 1e-5, 0.1, 0.5], abs=1e-6)


def test_moving_average_expansion_and_undo():
    cb = book(expand="moving_average")
    cb.update(vec(0, 0), A, lambda: torch.zeros(3))
    _, action, undo = cb.update(vec(1.5, 0), A, lambda: torch.zeros(3))
    assert action == "expand" and cb.keys[0].tolist() == [0.75, 0] and float(cb.radii[0]) == 1.5
    cb.restore(undo)
    assert cb.keys[0].tolist() == [0, 0] and float(cb.radii[0]) == 1.0 and cb.counts["expansions"] == 0
    _, _, undo = cb.update(vec(2, 0), B, lambda: torch.ones(3))
    cb.restore(undo)
    assert len(cb) == 1 and cb.labels == [A] and cb.radii.tolist() == [1.0]


def test_label_match_choices():
    # the reference compares means of label rows: the same target after prompts of other lengths "differs"
    assert labels_match([IGNORE, IGNORE, 7], [IGNORE, IGNORE, 7]) and not labels_match([IGNORE, 7], [IGNORE, IGNORE, 7])
    assert labels_match([IGNORE, 3, 5], [IGNORE, 5, 3])                     # ... and other targets can "match"
    assert labels_match([IGNORE, 7], [IGNORE, IGNORE, 7], "target") and not labels_match([IGNORE, 3, 5], [IGNORE, 5, 3],
                                                                                         "target")


# -- the adapter (spec test 1) ---------------------------------------------------------------------------
@pytest.mark.parametrize("replacement", ["replace_last", "replace_all", "replace_prompt"])
def test_adapter_rows_outside_every_radius_are_bitwise_the_module(replacement):
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    cb = Codebook(0.5, 4, 3)
    ad = GraceAdapter(layer, cb, replacement)
    x = torch.randn(3, 5, 4)
    assert torch.equal(ad(x), layer(x))                                     # empty codebook
    cb.update(x[1, 2] + 0.1, A, lambda: torch.full((3,), 7.0))              # row 1's key token is 0.1 away
    cb.update(x[0, 4] + 10, B, lambda: torch.full((3,), 8.0))               # far from everything
    ad.prompt_ends = torch.tensor([4, 2, 3])
    out = ad(x)
    assert ad.last_hit.tolist() == [False, True, False] and ad.last_positions.tolist() == [4, 2, 3]
    assert torch.equal(out[[0, 2]], layer(x)[[0, 2]])                        # bitwise
    replaced = {"replace_last": [2], "replace_all": [0, 1, 2, 3, 4], "replace_prompt": [0, 1]}[replacement]
    kept = [c for c in range(5) if c not in replaced]
    assert (out[1, replaced] == 7.0).all() and torch.equal(out[1, kept], layer(x)[1, kept])


def test_adapter_without_prompt_ends():
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    cb = Codebook(0.5, 4, 3)
    ad = GraceAdapter(layer, cb)
    x = torch.randn(2, 4, 4)
    cb.update(x[0, 1], A, lambda: torch.zeros(3))
    ad.token_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])                # right padding: last real tokens 1, 3
    ad(x)
    assert ad.last_positions.tolist() == [1, 3] and ad.last_hit.tolist() == [True, False]
    ad.token_mask = torch.ones(2, 9)                                         # a cached step: the key is in the past
    assert torch.equal(ad(x), layer(x)) and ad.last_positions is None
    ad.prompt_ends = torch.tensor([1])
    with pytest.raises(LifelongError, match="1 rows, but the forward pass has 2"):
        ad(x)


# -- on the tiny pretrained models -------------------------------------------------------------------
def test_no_edit_and_far_queries_are_bitwise_the_base(model_and_tokenizer, tiny_models, family, world):  # spec 1
    model, tok = model_and_tokenizer
    base, _ = tiny_models(family)
    pairs = [(r.locality_prompt, r.locality_answer) for r in world.records(0, 6)]
    ed = make(model, tok, eps=1e-3)
    assert type(get_module(model, ed.path)) is GraceAdapter
    assert torch.equal(logits_of(model, tok, pairs), logits_of(base, tok, pairs))
    ed.edit_turn(list(world.records(0, 2)))
    assert len(ed.codebook) == 2
    got = score_pairs(model, tok, pairs, prompt_ends=ed.set_prompt_ends)
    out = logits_of(model, tok, pairs)           # no prompt ends: each row's last real token is the query
    assert not ed.adapter.last_hit.any() and torch.equal(out, logits_of(base, tok, pairs))
    assert got.agreement(score_pairs(base, tok, pairs)).mean() == 1.0


def test_one_edit_then_greedy_decoding_gives_the_target(model_and_tokenizer, family, world):  # spec test 4
    model, tok = model_and_tokenizer
    record = single_token_record(world, tok)
    pair = [(record.prompt, record.target)]
    ed = make(model, tok)
    assert generation_exact_match(model, tok, pair, prompt_ends=ed.set_prompt_ends).exact_match[0] == 0.0
    stats = ed.edit_turn([record])
    assert stats["additions"] == 1 and stats["codebook_size"] == 1
    assert generation_exact_match(model, tok, pair, prompt_ends=ed.set_prompt_ends).exact_match[0] == 1.0
    assert score_pairs(model, tok, pair, prompt_ends=ed.set_prompt_ends).accuracy[0] == 1.0


def test_query_position_follows_each_prompt(model_and_tokenizer, family, world):  # spec test 5 (G2)
    model, tok = model_and_tokenizer
    record = single_token_record(world, tok)
    ed = make(model, tok, eps=0.25)
    ed.edit_turn([record])
    pairs = [(record.prompt, record.target), ("I", "am"), (record.prompt + " really and truly", record.target),
             (record.locality_prompt, record.locality_answer)]
    lengths = [len(tok(p)["input_ids"]) for p, _ in pairs]
    assert len(set(lengths)) == len(pairs)
    seen = []

    def ends(e):
        if e is not None:
            seen.append(e.clone())
        ed.set_prompt_ends(e)

    batched = score_pairs(model, tok, pairs, prompt_ends=ends)
    order = sorted(range(len(pairs)), key=lambda i: len(encode_batch(tok, [pairs[i]]).input_ids[0]))
    assert seen[0].tolist() == [lengths[i] - 1 for i in order]                # the scorer told each row's own end
    assert ed.adapter.last_positions.tolist() == seen[0].tolist()             # ... and the query was read there
    assert ed.adapter.last_hit.tolist() == [i == 0 for i in order]           # only the edited prompt hits
    assert batched.accuracy[0] == 1.0
    alone = [score_pairs(model, tok, [p], prompt_ends=ed.set_prompt_ends).accuracy[0] for p in pairs]
    assert batched.accuracy.tolist() == alone
    # left-padded generation: the last column on the prompt pass, nothing on the cached steps
    seen.clear()
    greedy_generate(model, tok, [p for p, _ in pairs], [2] * len(pairs), prompt_ends=ends)
    assert len(seen) == 1 and seen[0].tolist() == [max(lengths) - 1] * len(pairs)
    assert ed.adapter.prompt_ends is None                                    # scorers leave no stale positions


def test_score_pairs_tells_the_prompt_ends(world, tiny_models):
    model, tok = tiny_models("gpt2")
    pairs = [(r.prompt, r.target) for r in world.records(0, 5)] + [("I", "am here now")]
    calls = []
    score_pairs(model, tok, pairs, batch_size=4, prompt_ends=calls.append)
    order = sorted(range(len(pairs)), key=lambda i: len(encode_batch(tok, [pairs[i]]).input_ids[0]))
    want = [len(tok(pairs[i][0])["input_ids"]) - 1 for i in order]
    assert [c.tolist() for c in calls[:-1]] == [want[:4], want[4:]] and calls[-1] is None


def test_labels_follow_keys_in_the_editor(tiny_models, world):  # G1 through the editor
    model, tok = tiny_models("llama")
    recs = list(world.records(0, 3))
    ed = make(model, tok, eps=1e-3, n_iter=2)
    stats = ed.edit_turn(recs)                                               # G4: one record after another
    assert stats["additions"] == 3 and ed.edits_done == 3
    for i, r in enumerate(recs):
        prompt = tok(r.prompt)["input_ids"]
        assert ed.codebook.labels[i] == [IGNORE] * len(prompt) + answer_ids(tok, r.target)
        inputs, _, key, _ = ed._inputs(r)
        assert torch.allclose(ed.codebook.keys[i], ed._query(inputs, key).float())


def test_reset_restores_the_base_bitwise(model_and_tokenizer, tiny_models, family, world):
    model, tok = model_and_tokenizer
    base, _ = tiny_models(family)
    recs = list(world.records(0, 3))
    pairs = [(r.prompt, r.target) for r in recs]
    ed = make(model, tok)
    ed.edit_turn(recs)
    assert not torch.equal(logits_of(model, tok, pairs, ed), logits_of(base, tok, pairs))
    ed.reset()
    assert get_module(model, ed.path) is ed.original and ed.edits_done == 0
    assert torch.equal(logits_of(model, tok, pairs, ed), logits_of(base, tok, pairs))
    ed.edit_turn(recs[:1])                                                  # a fresh codebook after reset
    assert len(ed.codebook) == 1 and ed.report()["codebook_size"] == 1


@pytest.mark.parametrize("val_init", ["cold", "warm"])
def test_state_round_trips_and_continues_identically(tiny_models, world, tmp_path, val_init):
    recs = list(world.records(0, 4))
    model_a, tok = tiny_models("mistral")
    model_b, _ = tiny_models("mistral")
    a = make(model_a, tok, val_init=val_init, n_iter=5)
    a.edit_turn(recs[:2])
    tree.save_tree(tmp_path / "grace.pt", a.state_dict())
    b = make(model_b, tok, val_init=val_init, n_iter=5)
    b.load_state_dict(tree.load_tree(tmp_path / "grace.pt"))
    assert b.edits_done == 2 and b.codebook.labels == a.codebook.labels
    pairs = [(r.prompt, r.target) for r in recs]
    assert torch.equal(logits_of(model_a, tok, pairs, a), logits_of(model_b, tok, pairs, b))
    assert not torch.equal(logits_of(model_b, tok, pairs, b), logits_of(tiny_models("mistral")[0], tok, pairs))
    for ed in (a, b):
        ed.edit_turn(recs[2:])
    for name in ("keys", "values", "radii"):
        assert torch.equal(getattr(a.codebook, name), getattr(b.codebook, name))
    assert a.codebook.counts == b.codebook.counts and a.report() == b.report() | {"seconds": a.report()["seconds"]}
    state = a.state_dict()
    state["extra"]["codebook"]["radii"][0] = float("nan")
    with pytest.raises(LifelongError, match="non-finite"):
        b.load_state_dict(state)


def test_hparams_refused_and_built(tiny_models):
    model, tok = tiny_models("llama")
    for bad in ({"replacement": "replace_first"}, {"eps": -1.0}, {"n_iter": 0}, {"edit_lr": 0.0}):
        with pytest.raises(LifelongError):
            build_hparams("grace", {}, "llama", bad)
    with pytest.raises(LifelongError, match=r"layer 9 does not exist.*0\.\.3"):
        make(model, tok, layer=9)
    with pytest.raises(LifelongError, match="valid: model.layers.0.mlp.down_proj"):
        make(model, tok, layer=None, module="model.layers.1.self_attn.q_proj")
    hp = build_hparams("grace", {"editors": {"grace": {"default": {"n_iter": 50}, "llama": {"eps": 2.0}}}}, "llama")
    assert isinstance(hp, GraceHparams) and hp.n_iter == 50 and hp.eps == 2.0 and hp.replacement == "replace_last"
    ed = make(model, tok, layer=None, module="model.layers.1.mlp.up_proj")
    assert ed.path == "model.layers.1.mlp.up_proj" and ed.report()["layer"] == 1
    ed.reset()


def test_runner_end_to_end(params_file, tmp_path):
    from lifelong.pipeline.runner import RunSpec, run

    summary = run(RunSpec(model="t-llama", dataset="world", editor="grace", n_edits=4, out_dir=tmp_path,
                          params_path=params_file, progress=False, overrides={"layer": -2, "n_iter": 30}))
    report = summary["editor_report"]
    assert summary["reliability"] > summary["pre_reliability"] + 0.2
    assert summary["locality_agreement"] >= 0.75
    assert report["codebook_size"] == 4 - report["expansions"] - report["keeps"] and report["eps0"] == 1.0
    assert report["faithful_split"] is True and report["replacement"] == "replace_last"


def test_params_yaml_rows():
    from lifelong.core.config import load_params

    params = load_params()
    families = {"tiny-gpt2": "gpt2", "tiny-llama": "llama", "tiny-mistral": "mistral", "gpt2-xl": "gpt2",
                "gpt-j-6b": "gptj", "llama-2-7b": "llama", "mistral-7b": "mistral"}
    hp = {m: build_hparams("grace", params, fam, model=m) for m, fam in families.items()}
    assert hp["gpt2-xl"].module == "transformer.h.35.mlp.c_fc" and hp["gpt2-xl"].n_iter == 200
    assert hp["gpt-j-6b"].layer == 25 and hp["llama-2-7b"].layer_fraction == 0.85 and hp["llama-2-7b"].eps == 1.0
    for tiny in ("tiny-gpt2", "tiny-llama", "tiny-mistral"):   # a layer the 6-layer testbed has, a calibrated ε0
        assert hp[tiny].module is None and hp[tiny].layer == -2 and hp[tiny].eps != 1.0
