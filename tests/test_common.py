"""Shared editor pieces: hooks, subject positions, layer statistics (spec baselines.md §5 CPU tests)."""
from __future__ import annotations

import pytest
import torch

from lifelong.core.records import EditRecord
from lifelong.editors.common.covariance import (MomentKey, SecondMoment, cached_second_moment, corpus_sha,
                                                input_second_moment)
from lifelong.editors.common.hooks import capture, stop_before
from lifelong.editors.common.subjects import subject_last_token, subject_positions
from lifelong.models.modules import family_of, get_module, layer_path, shape_in_out
from lifelong.models.tokenization import pad


def test_subject_last_token_from_offsets(tiny_models):
    for family in ("gpt2", "llama"):   # no BOS / a prepended BOS
        _, tok = tiny_models(family)
        prompt, subject = "The native language of Kalo Ven is", "Kalo Ven"
        pos, found = subject_last_token(tok, prompt, subject)
        ids = tok(prompt)["input_ids"]
        prefix = tok(prompt[: prompt.index(subject) + len(subject)])["input_ids"]
        assert found and pos == len(prefix) - 1 and ids[: pos + 1] == prefix
        assert subject_last_token(tok, prompt, "Nobody Here") == (len(ids) - 1, False)
        assert subject_last_token(tok, prompt, "") == (len(ids) - 1, False)
        got = subject_positions(tok, [EditRecord(prompt, "x", subject=subject), EditRecord(prompt, "x")])
        assert got.positions == [pos, len(ids) - 1] and got.fallbacks == 1


def test_second_moment_counts_real_tokens_only():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool()
    moment = SecondMoment(3, torch.float64)
    moment.update(x[mask])
    real = x[mask].double()
    assert torch.allclose(moment.value(), real.T @ real / 8) and moment.count == 8


def test_layer_statistics_are_of_the_module_input_over_real_tokens(tiny_models, tmp_path):
    model, tok = tiny_models("llama")
    path = layer_path(model, 1)                              # down projection: input dimension d_ff
    d_in, _ = shape_in_out(get_module(model, path))
    texts = ["The native language of Kalo Ven is French", "I am", "Because of the rain the match was cancelled"]
    moment, tokens = input_second_moment(model, tok, path, texts, batch_tokens=16)
    assert moment.shape == (d_in, d_in) and d_in != model.config.hidden_size
    # by hand: one padded batch, keys at the real tokens only
    ids, mask = pad([tok(t)["input_ids"] for t in texts], tok.pad_token_id)
    with capture({path: get_module(model, path)}) as seen, torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    keys = seen[path][0][mask.bool()]
    assert tokens == int(mask.sum()) and torch.allclose(moment, keys.T @ keys / tokens, atol=1e-5)

    c1, meta = cached_second_moment(model, tok, path, texts, tmp_path, corpus="three sentences")
    assert meta["tokens"] == tokens and meta["corpus"] == "three sentences" and torch.allclose(c1, moment, atol=1e-6)
    (tmp_path / "marker").write_text("")
    again, meta2 = cached_second_moment(model, tok, path, texts, tmp_path)
    assert torch.equal(again, c1) and meta2 == meta                        # read from the cache
    other, _ = cached_second_moment(model, tok, path, texts[:2], tmp_path)  # another corpus: another key
    assert not torch.equal(other, c1) and len(list(tmp_path.glob("*.safetensors"))) == 2


def test_moment_key_covers_model_module_corpus_size_and_dtype():
    base = MomentKey("fp", "model.layers.1.mlp.down_proj", corpus_sha(["a"]), 1, None, "float32")
    variants = [MomentKey("fp2", *list(base.__dict__.values())[1:]),
                MomentKey(base.fingerprint, "model.layers.2.mlp.down_proj", base.corpus_sha, 1, None, "float32"),
                MomentKey(base.fingerprint, base.module, corpus_sha(["b"]), 1, None, "float32"),
                MomentKey(base.fingerprint, base.module, base.corpus_sha, 2, None, "float32"),
                MomentKey(base.fingerprint, base.module, base.corpus_sha, 1, None, "float64")]
    assert len({base.stem(), *(v.stem() for v in variants)}) == 6


def test_stop_before_skips_the_rest_of_the_model(tiny_models):
    model, tok = tiny_models("gpt2")
    fam = family_of(model)
    layers = get_module(model, fam.layers)
    ran = []
    handle = layers[3].register_forward_hook(lambda *a: ran.append(3))
    try:
        with capture({"l1": layers[1]}) as seen, stop_before(layers[2]), torch.no_grad():
            model(**tok(["I am here"], return_tensors="pt"))
    finally:
        handle.remove()
    assert "l1" in seen and not ran


def test_capture_refuses_a_module_that_runs_twice(tiny_models):
    from lifelong.core.errors import LifelongError

    model, tok = tiny_models("llama")
    module = get_module(model, layer_path(model, 0))
    with pytest.raises(LifelongError, match="runs more than once"):
        with capture({"m": module}):
            x = torch.randn(1, 2, shape_in_out(module)[0])
            module(x)
            module(x)


def test_a_rebuilt_stats_folder_has_the_same_bytes(tiny_models, tmp_path):
    """The edit stages depend on the stats folder: rebuilding it must not change a byte (no timings in it)."""
    import hashlib

    from lifelong.editors.common.covariance import write_layer_stats

    model, tok = tiny_models("llama")
    texts = ["The native language of Kalo Ven is French", "I am here", "Because of the rain"]
    digests = []
    for name in ("a", "b"):
        written = write_layer_stats(model, tok, None, texts, tmp_path / name, corpus="three sentences")
        assert all("seconds" in meta for meta in written.values())            # the caller still learns the time
        digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((tmp_path / name).iterdir())})
    assert digests[0] == digests[1] and len(digests[0]) == 2 * 4             # 4 layers: tensor + JSON each
