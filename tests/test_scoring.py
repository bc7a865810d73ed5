"""lifelong.scoring: exact match by generation, locality agreement, perplexity (clipped and not) and
WISE's temporal OOD metric, on hand-built cases, a controllable bigram model and tiny random models."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from lifelong.core.errors import LifelongError
from lifelong.eval.teacher_forced import PairScores, score_pairs
from lifelong.core.records import EditRecord
from lifelong.eval.generation import exact_match, generation_exact_match, greedy_generate, normalize_answer
from lifelong.eval.perplexity import (OOD_DELTA, PerplexityScores, target_nll, target_perplexity, temporal_ood,
                                      temporal_ood_pairs)
from lifelong.eval.teacher_forced import locality_agreement
from lifelong.pipeline.testbed import TinyModelConfig, build_model, train_tokenizer
from lifelong.models.tokenization import answer_ids, encode_pair


@pytest.fixture(scope="module")
def tokenizers(world):
    return {bos: train_tokenizer(world, None, vocab_size=2048, extra_names=50, add_bos=bos) for bos in (False, True)}


@pytest.fixture(scope="module")
def random_models(tokenizers):
    """Untrained tiny models of each family (scoring mechanics only need a deterministic network)."""
    out = {}
    for family in ("gpt2", "llama", "mistral"):
        tok = tokenizers[family != "gpt2"]
        model = build_model(TinyModelConfig(family, d_model=32, n_layers=2, n_heads=2, d_ff=64), tok, seed=1).eval()
        out[family] = (model, tok)
    return out


class BigramConfig(PretrainedConfig):
    model_type = "bigram-test"


class BigramLM(PreTrainedModel, GenerationMixin):
    """Next token = table[current token]: a model whose greedy output we choose (a PreTrainedModel, so that
    the library's own `generate` drives it; without a cache it re-reads the whole sequence at each step)."""

    config_class = BigramConfig

    def __init__(self, vocab_size: int, table: dict[int, int], fallback: int):
        super().__init__(BigramConfig(vocab_size=vocab_size, use_cache=False, num_hidden_layers=0))
        weights = torch.zeros(vocab_size, vocab_size)
        weights[:, fallback] = 5.0
        for a, b in table.items():
            weights[a, b] = 20.0
        self.weights = torch.nn.Parameter(weights, requires_grad=False)

    def forward(self, input_ids, attention_mask=None, **_):
        return CausalLMOutputWithPast(logits=self.weights[input_ids])


def chain(tok, prompt: str, answer: str) -> dict[int, int]:
    ids = tok(prompt)["input_ids"] + answer_ids(tok, answer)
    return {a: b for a, b in zip(ids[:-1], ids[1:])}


# -- normalisation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, normal", [
    ("The Eiffel Tower!", "eiffel tower"),
    ("  a   Cat,  ", "cat"),
    ("Anna and Theatre", "anna and theatre"),
    ("«Paris»", "paris"),
    ("An apple; the pear.", "apple pear"),
    ("U.S.A.", "usa"),
    ("Sleater-Kinney", "sleaterkinney"),
    ("Zoë “the” Ŝtar!", "zoë ŝtar"),
    ("$5 + tax", "5 tax"),
])
def test_normalize_answer(text, normal):
    assert normalize_answer(text) == normal


def test_exact_match():
    assert exact_match(" the Cold Sea.", "Cold sea")
    assert not exact_match("1998", "1999")
    assert not exact_match("Paris Hilton", "Paris")


# -- generation exact match ------------------------------------------------------------------------

def test_generation_exact_match_on_a_model_that_knows_some_answers(tokenizers):
    tok = tokenizers[True]
    table = {}
    table.update(chain(tok, "The home town of Kalo Venrik is", "Paris"))
    table.update(chain(tok, "Kalo Venrik speaks", "German!"))   # the model will say "German?"
    table.update(chain(tok, "Sator Tel works as a", "pilot"))
    # punctuation variant: replace the last step of "German!" by "?"
    german = tok("Kalo Venrik speaks")["input_ids"] + answer_ids(tok, "German!")
    question = answer_ids(tok, "German?")
    assert len(question) == len(answer_ids(tok, "German!")) and question[:-1] == answer_ids(tok, "German!")[:-1]
    table[german[-2]] = question[-1]
    model = BigramLM(len(tok), table, fallback=tok.convert_tokens_to_ids("<unk>"))
    pairs = [("The home town of Kalo Venrik is", "Paris"), ("Kalo Venrik speaks", "German!"),
             ("Sator Tel works as a", "pilot"), ("Sator Tel works as a", "baker")]
    scores = generation_exact_match(model, tok, pairs, batch_size=3)
    assert scores.exact_match.tolist() == [1.0, 1.0, 1.0, 0.0]
    assert scores.token_match.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert scores.generations[1].strip() == "German?" and scores.mean == 0.75
    assert [len(g) for g in scores.generated_ids] == [len(answer_ids(tok, a)) for _, a in pairs]


@pytest.mark.parametrize("family", ["gpt2", "llama", "mistral"])
def test_batched_left_padded_generation_equals_one_at_a_time(random_models, family):
    model, tok = random_models[family]
    prompts = ["Kalo Venrik", "The home town of Sator Tel is the city of", "Yes", "Because the sport played by Mor is"]
    lengths = [3, 4, 1, 2]
    batched = greedy_generate(model, tok, prompts, lengths, batch_size=4)
    alone = [greedy_generate(model, tok, [p], [n], batch_size=1)[0] for p, n in zip(prompts, lengths)]
    assert batched == alone
    # and the cached loop equals plain full re-computation without padding
    for prompt, n, got in list(zip(prompts, lengths, alone))[:2]:
        ids = tok(prompt)["input_ids"]
        for _ in range(n):
            with torch.no_grad():
                ids = ids + [int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())]
        assert ids[-n:] == got


# -- locality agreement ----------------------------------------------------------------------------

def test_locality_agreement_hand_built():
    pre = PairScores(np.array([1.0, 0.5]), [np.array([1, 2, 3]), np.array([4, 5])])
    post = PairScores(np.array([0.0, 0.5]), [np.array([1, 2, 0]), np.array([4, 5])])
    assert np.allclose(locality_agreement(post, pre), [2 / 3, 1.0])
    with pytest.raises(LifelongError, match="2 post-edit pairs but 1 pre-edit"):
        locality_agreement(post, PairScores(np.array([1.0]), [np.array([1, 2, 3])]))
    with pytest.raises(LifelongError, match="pair 1 has 2 answer positions"):
        locality_agreement(post, PairScores(pre.accuracy, [np.array([1, 2, 3]), np.array([4, 5, 6])]))


def test_locality_agreement_over_score_pairs(random_models):
    model, tok = random_models["llama"]
    pairs = [("The favourite colour of Kalo Venrik is", "red"), ("Sator Tel plays", "tennis and golf")]
    pre = score_pairs(model, tok, pairs)
    assert locality_agreement(score_pairs(model, tok, pairs), pre).tolist() == [1.0, 1.0]
    edited = copy.deepcopy(model)
    with torch.no_grad():  # (tied embeddings: perturbing lm_head alone would keep "predict the input token")
        edited.model.norm.weight.copy_(torch.randn_like(edited.model.norm.weight))
    assert locality_agreement(score_pairs(edited, tok, pairs), pre).mean() < 1.0


# -- perplexity ------------------------------------------------------------------------------------

def _manual_nll(model, tok, prompt, answer):
    enc = encode_pair(tok, prompt, answer)
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([enc.input_ids])).logits[0].double(), -1)
    terms = [-logp[j, lab].item() for j, lab in enumerate(enc.labels) if lab != -100]
    return sum(terms) / len(terms)


@pytest.mark.parametrize("family", ["gpt2", "mistral"])
def test_target_nll_matches_a_manual_computation(random_models, family):
    model, tok = random_models[family]
    pairs = [("This is a passage about Kalo Venrik.", "He was born in Paris and plays the violin."),
             ("Yes", "no"), ("The employer of Sator Tel is", "Google")]
    scores = target_nll(model, tok, pairs, batch_size=2)
    want = [_manual_nll(model, tok, p, a) for p, a in pairs]
    assert np.allclose(scores.nll, want, atol=1e-4)
    assert scores.n_tokens.tolist() == [len(answer_ids(tok, a)) for _, a in pairs]
    ppl = target_perplexity(model, tok, pairs)
    assert np.allclose(ppl.ppl, np.exp(want), rtol=1e-4)


def test_perplexity_summary_reports_clipped_and_unclipped_means():
    scores = PerplexityScores(np.log(np.array([2.0, 50.0, 1000.0])), np.array([3, 4, 5]))
    summary = scores.summary()
    assert summary["ppl_mean"] == pytest.approx((2 + 50 + 1000) / 3)
    assert summary["ppl_mean_clip100"] == pytest.approx((2 + 50 + 100) / 3)
    assert summary["ppl_median"] == pytest.approx(50.0) and summary["ppl_n_clipped"] == 1 and summary["n"] == 3
    assert scores.mean(clip=10) == pytest.approx((2 + 10 + 10) / 3)


def test_target_nll_cuts_long_inputs_from_the_left(random_models):
    model, tok = random_models["gpt2"]
    long_prompt = " ".join(["Kalo Venrik"] * 40)
    scores = target_nll(model, tok, [(long_prompt, "Paris")], max_length=16)
    enc = encode_pair(tok, long_prompt, "Paris")
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([enc.input_ids[-16:]])).logits[0]
    labels = enc.labels[-16:]
    logp = torch.log_softmax(logits.double(), -1)
    want = np.mean([-logp[j, lab].item() for j, lab in enumerate(labels) if lab != -100])
    assert scores.nll[0] == pytest.approx(want, abs=1e-4)


# -- temporal OOD (WISE Eq. 10) --------------------------------------------------------------------

def _temporal(prompt, ood):
    return EditRecord(prompt=prompt, target="x", extras={"ood_rephrase": ood})


def test_temporal_ood_pairs_strip_the_prompt():
    records = [_temporal("Sunvale Grid,", "Sunvale Grid, the cooperative that links producers."),
               _temporal("The Kestrel probe", "Kestrel photographed the ridged ice."),
               EditRecord(prompt="no ood", target="y")]
    assert temporal_ood_pairs(records) == [("Sunvale Grid,", "the cooperative that links producers."),
                                           ("The Kestrel probe", "Kestrel photographed the ridged ice.")]
    assert temporal_ood_pairs(records, strip_prompt=False)[0][1] == "Sunvale Grid, the cooperative that links producers."


def test_temporal_ood_is_the_rate_of_losses_below_delta(tokenizers, random_models):
    tok = tokenizers[True]
    known = ("Sator Tel works as a", "pilot in Paris")
    table = chain(tok, *known)
    model = BigramLM(len(tok), table, fallback=tok.convert_tokens_to_ids("<unk>"))
    pairs = [known, ("Sator Tel works as a", "baker in Rome")]
    scores = temporal_ood(model, tok, pairs)
    assert scores.delta == pytest.approx(-math.log(0.8)) == OOD_DELTA
    assert scores.loss[0] < 1e-3 < scores.loss[1]
    assert scores.success.tolist() == [1.0, 0.0] and scores.rate == 0.5
    # delta is the paper's threshold: moving it between the two losses flips the second indicator
    assert temporal_ood(model, tok, pairs, delta=float(scores.loss[1]) + 1e-3).rate == 1.0
    # on a real network the loss is the same quantity as target_nll
    net, ntok = random_models["llama"]
    real = temporal_ood(net, ntok, pairs, delta=100.0)
    assert np.allclose(real.loss, target_nll(net, ntok, pairs).nll) and real.summary()["ood_gen"] == 1.0


# -- generation through a chat template (models.NAME.chat_template) -------------------------------

def test_contains_answer_matches_whole_normalised_words():
    from lifelong.eval.generation import contains_answer

    assert contains_answer("The architect of the station is Ken Duncan.", "Ken Duncan")
    assert contains_answer("It was designed by KEN DUNCAN, in 1920", "ken duncan")
    assert not contains_answer("It was designed by Ken Duncanson", "Ken Duncan")
    assert not contains_answer("Paris", "")


CHAT = "{% for m in messages %}Q: {{ m['content'] }}{% endfor %}{% if add_generation_prompt %} A:{% endif %}"


def test_chat_template_prompts_the_turn_and_finds_the_answer_in_the_reply(tokenizers):
    tok = copy.deepcopy(tokenizers[True])
    tok.chat_template = CHAT
    templated = tok.apply_chat_template([{"role": "user", "content": "Kalo Venrik lives in"}], tokenize=False,
                                        add_generation_prompt=True)
    assert templated == "Q: Kalo Venrik lives in A:"
    # the model answers the templated question in a sentence, and the raw one with nothing useful
    model = BigramLM(len(tok), chain(tok, templated, "so Paris"),
                     fallback=tok.convert_tokens_to_ids("<unk>"))
    pairs = [("Kalo Venrik lives in", "Paris")]
    raw = generation_exact_match(model, tok, pairs)
    chat = generation_exact_match(model, tok, pairs, chat_template=True, reply_tokens=4)
    assert raw.exact_match.tolist() == [0.0]
    assert chat.exact_match.tolist() == [1.0]
    assert chat.generations[0].strip().startswith("so Paris")   # the reply to the templated turn, not " A: so ..."
    assert len(chat.generated_ids[0]) == len(answer_ids(tok, "Paris")) + 4
    # a reply that only starts the answer's words is no hit
    short = generation_exact_match(model, tok, pairs, chat_template=True, reply_tokens=0)
    assert short.exact_match.tolist() == [0.0]


def test_chat_template_on_a_tokenizer_without_one_is_one_clear_error(tokenizers):
    tok = copy.deepcopy(tokenizers[True])
    tok.chat_template = None
    model = BigramLM(len(tok), {}, fallback=0)
    with pytest.raises(LifelongError, match="has no chat template.*chat_template: false"):
        generation_exact_match(model, tok, [("a", "b")], chat_template=True)


def test_the_chat_template_switch_is_a_checked_model_setting():
    from lifelong.core.errors import ConfigError
    from lifelong.models.loading import uses_chat_template

    params = {"models": {"raw": {"path": "x"}, "chat": {"path": "x", "chat_template": True},
                         "typo": {"path": "x", "chat_template": "yes"}}}
    assert uses_chat_template("raw", params) is False and uses_chat_template("chat", params) is True
    with pytest.raises(ConfigError, match=r"models.typo.chat_template: expected true or false, got 'yes'"):
        uses_chat_template("typo", params)


def test_a_deprecation_warning_from_our_own_code_fails_the_suite():
    """pyproject.toml's filterwarnings rule: a DeprecationWarning or FutureWarning attributed to a lifelong module
    is an error under pytest (a library's warning about a call of ours is attributed to our calling line)."""
    import warnings

    for category in (DeprecationWarning, FutureWarning):
        with pytest.raises(category, match="going away"):
            warnings.warn_explicit("going away", category, "lifelong/eval/generation.py", 1,
                                   module="lifelong.eval.generation")
