import pytest

from lifelong.core.errors import LifelongError
from lifelong.models.tokenization import IGNORE, collate, encode_batch, encode_pair


def test_pair_convention(tiny_models):
    """input_ids = P + A[:-1]; labels = [-100]*(|P|-1) + A, same length (ultraedit.md §3.6)."""
    _, tok = tiny_models("llama")
    prompt, answer = "The birthplace of Kalo Venrik is", "Paris"
    p = tok(prompt)["input_ids"]
    a = tok(" " + answer, add_special_tokens=False)["input_ids"]
    enc = encode_pair(tok, prompt, answer)
    assert p[0] == tok.bos_token_id  # the LLaMA-style testbed tokenizer adds BOS
    assert len(enc.input_ids) == len(enc.labels) == len(p) + len(a) - 1
    assert enc.input_ids == p + a[:-1]
    assert enc.labels[: len(p) - 1] == [IGNORE] * (len(p) - 1)
    assert enc.labels[len(p) - 1 :] == a
    # the first scored position is the last prompt token
    first = next(i for i, l in enumerate(enc.labels) if l != IGNORE)
    assert enc.input_ids[first] == p[-1]


def test_gpt2_style_has_no_bos(tiny_models):
    _, tok = tiny_models("gpt2")
    enc = encode_pair(tok, "The birthplace of Kalo Venrik is", "Paris")
    assert enc.input_ids[0] != tok.bos_token_id


def test_collate_right_pads(tiny_models):
    _, tok = tiny_models("gpt2")
    batch = encode_batch(tok, [("a b c d e", "x"), ("a", "yy zz")])
    assert batch.input_ids.shape == batch.labels.shape == batch.attention_mask.shape
    lengths = batch.attention_mask.sum(1).tolist()
    for row, n in enumerate(lengths):
        assert (batch.labels[row, n:] == IGNORE).all()
        assert batch.attention_mask[row, :n].all()


def test_collate_truncates_from_the_left():
    from lifelong.models.tokenization import Encoded

    batch = collate([Encoded([1, 2, 3, 4, 5], [IGNORE, IGNORE, IGNORE, 9, 8])], max_length=3)
    assert batch.input_ids.tolist() == [[3, 4, 5]]
    assert batch.labels.tolist() == [[IGNORE, 9, 8]]


def test_empty_answer_is_a_clear_error(tiny_models):
    _, tok = tiny_models("gpt2")
    with pytest.raises(LifelongError, match="empty answer"):
        encode_pair(tok, "The birthplace of X is", "")
