"""FT-L (spec baselines.md §1, CPU tests 1-4): the L∞ box, the last-token objective, the stop rule, reset."""
from __future__ import annotations

import copy

import pytest
import torch

from lifelong.core.records import EditRecord
from lifelong.editors import EditContext, build_hparams, editor_class
from lifelong.eval.teacher_forced import score_pairs
from lifelong.models.modules import family_of


def make(model, tok, **hp):
    hparams = build_hparams("ft_l", {}, family_of(model).name, {"layer": -2, **hp})
    return editor_class("ft_l")(model, tok, hparams, EditContext(family=family_of(model)))


def test_no_weight_moves_further_than_the_box_and_nothing_else_changes(model_and_tokenizer, world):  # test 1
    model, tok = model_and_tokenizer
    eps = 1e-3
    ed = make(model, tok, lr=1e-2, n_iter=6, norm_constraint=eps)
    frozen = {n: p.clone() for n, p in model.named_parameters() if not n.startswith(ed.path + ".")}
    start = {n: p.detach().clone() for n, p in ed.tracked.items()}
    shifts = []
    original_step = torch.optim.Adam.step

    def checked_step(opt, *args, **kwargs):   # the box holds after every step's clamp: check at the next step
        shifts.append(max(float((ed.tracked[n].detach() - start[n]).abs().max()) for n in start))
        return original_step(opt, *args, **kwargs)

    torch.optim.Adam.step = checked_step
    try:
        stats = ed.edit_turn(list(world.records(0, 3)))
    finally:
        torch.optim.Adam.step = original_step
    final = max(float((ed.tracked[n].detach() - start[n]).abs().max()) for n in start)
    assert stats["steps"] > 0 and max(shifts + [final]) <= eps + 1e-7
    assert final > eps / 2                       # the box is reached: the constraint is what binds
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    if family_of(model).name == "gpt2":          # Conv1D has a bias: it is trained and boxed too (F3)
        assert f"{ed.path}.bias" in ed.tracked


def test_loss_reads_every_target_token_at_the_last_prompt_position(model_and_tokenizer):  # test 2
    model, tok = model_and_tokenizer
    ed = make(model, tok)
    record = EditRecord(prompt="The native language of Kalo Ven is", target="Paris London")
    inputs, last, targets, valid = ed._encode([record])
    ids = tok(" Paris London", add_special_tokens=False)["input_ids"]
    assert len(ids) >= 2 and targets[0].tolist() == ids
    logits = model(**inputs).logits[0, int(last[0].nonzero())]       # the last prompt token, for every target token
    logp = logits.float().log_softmax(-1)
    assert float(ed.loss(inputs, last, targets, valid)) == pytest.approx(float(-logp[ids].mean()), rel=1e-5)
    # the target gets one space, never two (F1), and no BOS (F2)
    spaced = ed._encode([EditRecord(prompt=record.prompt, target=" Paris London")])[2]
    assert torch.equal(spaced, targets) and tok.bos_token_id not in targets[0].tolist()


def test_a_target_already_predicted_leaves_the_weights_bitwise_unchanged(model_and_tokenizer, world):  # test 3
    model, tok = model_and_tokenizer
    fact = next(f for f in world.known_facts() if score_pairs(model, tok, [(f.render(0), f.obj)]).accuracy[0] == 1.0)
    ed = make(model, tok, lr=1e-2)
    record = EditRecord(prompt=fact.render(0), target=fact.obj)
    inputs, last, targets, valid = ed._encode([record])
    if float(ed.loss(inputs, last, targets, valid)) >= 1e-2:
        pytest.skip("no single-token fact is known with loss below 1e-2 by this fixture model")
    before = {n: p.detach().clone() for n, p in ed.tracked.items()}
    stats = ed.edit_turn([record])
    assert stats["steps"] == 0 and stats["epochs"] == 1
    assert all(torch.equal(ed.tracked[n], before[n]) for n in before)


def test_reset_state_dict_and_anchor(model_and_tokenizer, world):  # test 4, F4
    model, tok = model_and_tokenizer
    recs = list(world.records(0, 4))
    ed = make(model, tok, lr=1e-2, n_iter=4, norm_constraint=1e-3)
    original = {n: p.detach().clone() for n, p in ed.tracked.items()}
    ed.edit_turn(recs[:2])
    state = copy.deepcopy(ed.state_dict())
    after_two = {n: p.detach().clone() for n, p in ed.tracked.items()}
    ed.edit_turn(recs[2:])
    ed.reset()
    assert all(torch.equal(ed.tracked[n], original[n]) for n in original) and ed.edits_done == 0
    ed.load_state_dict(state)
    assert all(torch.equal(ed.tracked[n], after_two[n]) for n in after_two) and ed.edits_done == 2
    # eps_anchor: "turn" lets T turns drift up to T·ε from the original; "original" keeps them within ε
    for anchor, bound in (("turn", 4e-3), ("original", 1e-3)):
        ed = make(model, tok, lr=1e-2, n_iter=4, norm_constraint=1e-3, eps_anchor=anchor)
        for r in recs:
            ed.edit_turn([r])
        drift = max(float((p.detach() - ed._originals[n]).abs().max()) for n, p in ed.tracked.items())
        assert drift <= bound + 1e-6
        if anchor == "turn":
            assert drift > 1e-3 + 1e-6
        ed.reset()


def test_one_turn_raises_reliability(model_and_tokenizer, world):
    """On single-token targets the last-token objective is cross-entropy, so the edit must take. (On longer
    targets every token competes for one position: FT-L's known weakness, reported as measured.)"""
    model, tok = model_and_tokenizer
    recs = [r for r in world.records(0, 200) if len(tok(" " + r.target, add_special_tokens=False)["input_ids"]) == 1][:4]
    assert len(recs) == 4
    pairs = [(r.prompt, r.target) for r in recs]
    before = score_pairs(model, tok, pairs).accuracy.mean()
    ed = make(model, tok, lr=1e-2, n_iter=25, norm_constraint=0.05, batch_size=4)
    ed.edit_turn(recs)
    assert score_pairs(model, tok, pairs).accuracy.mean() > before
