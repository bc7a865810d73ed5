import numpy as np
import torch

from lifelong.eval.teacher_forced import PairScores, score_pairs, token_accuracy
from lifelong.models.tokenization import IGNORE


def _logits_for(predicted: list[list[int]], vocab: int = 6) -> torch.Tensor:
    out = torch.zeros(len(predicted), len(predicted[0]), vocab)
    for b, row in enumerate(predicted):
        for j, tok in enumerate(row):
            out[b, j, tok] = 1.0
    return out


def test_token_accuracy_partial_credit_and_padding():
    # sample 0: 2 of 3 answer tokens right -> 0.667; sample 1: 1 of 1 right; padding never counts
    logits = _logits_for([[0, 1, 2, 5, 0], [3, 4, 4, 4, 4]])
    labels = torch.tensor([[IGNORE, 1, 2, 3, IGNORE], [IGNORE, 4, IGNORE, IGNORE, IGNORE]])
    acc = token_accuracy(logits, labels)
    assert torch.allclose(acc, torch.tensor([2 / 3, 1.0]))
    # the set score is the mean over samples, not over tokens (3/4 would be the token mean)
    assert abs(acc.mean().item() - (2 / 3 + 1) / 2) < 1e-6


def test_agreement():
    a = PairScores(np.array([1.0, 0.5]), [np.array([1, 2]), np.array([3])])
    b = PairScores(np.array([1.0, 0.5]), [np.array([1, 5]), np.array([3])])
    assert a.agreement(b).tolist() == [0.5, 1.0]


def test_score_pairs_is_batch_invariant(tiny_models, world):
    model, tok = tiny_models("mistral")
    pairs = [(r.prompt, r.target) for r in world.records(0, 20)] + [(f.render(1), f.obj) for f in list(world.known_facts())[:20]]
    one = score_pairs(model, tok, pairs, batch_size=1)
    many = score_pairs(model, tok, pairs, batch_size=64)
    np.testing.assert_allclose(one.accuracy, many.accuracy)
    assert all((x == y).all() for x, y in zip(one.predictions, many.predictions))
    # the pretrained fixture knows its facts (second half) and not the counterfactual targets
    assert many.accuracy[20:].mean() > 0.95


def test_the_metric_registry_is_the_one_list_of_metrics():
    from lifelong.eval import registry
    from lifelong.pipeline import report

    assert registry.CORE == ("reliability", "generalization", "locality", "locality_agreement")
    for name, metric in registry.METRICS.items():
        assert metric.definition and metric.direction in ("higher", "lower")
        assert metric.option in (None, registry.RUN_LEVEL) or metric.option in registry.OPTIONS
    for option in registry.OPTIONS:
        assert registry.option_columns(option)
    assert set(report.OPTIONAL_FIELDS) >= {"reliability_em", "target_ppl_clip100", "pre_target_ppl_median"}
    ppl = np.array([2.0, 400.0, np.nan])
    assert registry.summarize("target_ppl", ppl) == {"target_ppl": 201.0, "target_ppl_clip100": 51.0,
                                                     "target_ppl_median": 201.0}
    assert registry.summarize("reliability", np.array([np.nan]), prefix="pre_") == {"pre_reliability": None}
