import torch

from lifelong.editors import EditContext, build_hparams, editor_class
from lifelong.eval.teacher_forced import score_pairs
from lifelong.models.modules import family_of


def test_ft_one_edit_raises_reliability_and_resets(model_and_tokenizer, world):
    model, tok = model_and_tokenizer
    record = world.record(3)
    hp = build_hparams("ft", {}, family_of(model).name, {"lr": 3e-3, "n_iter": 20})
    editor = editor_class("ft")(model, tok, hp, EditContext(family=family_of(model)))
    before = score_pairs(model, tok, [(record.prompt, record.target)]).accuracy[0]
    frozen = {n: p.clone() for n, p in model.named_parameters() if not n.endswith(editor.path + ".weight")}
    editor.edit_turn([record])
    after = score_pairs(model, tok, [(record.prompt, record.target)]).accuracy[0]
    assert before < 1.0 and after == 1.0
    # only the chosen weight moved, and no gradient buffers were left behind
    for name, p in model.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), name
        assert p.grad is None
    editor.reset()
    assert score_pairs(model, tok, [(record.prompt, record.target)]).accuracy[0] == before
