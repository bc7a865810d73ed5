"""The family table is the only architecture knowledge: every entry resolves on a real transformers model of
that type, and the editors run on it through the table alone (a new architecture is one entry)."""
from __future__ import annotations

import pytest
import torch

from lifelong.editors import EditContext
from lifelong.editors.ultraedit import UltraEditHparams, UltraEditor
from lifelong.editors.wise import WiseEditor, WiseHparams
from lifelong.models.families import FAMILIES
from lifelong.models.modules import check_projection, family_of, get_module, layer_path, logits_at, num_layers
from lifelong.models.tokenization import encode_batch
from lifelong.pipeline.testbed import train_tokenizer


def _config(model_type: str, vocab: int, pad: int):
    import transformers as tf

    small = dict(vocab_size=vocab, pad_token_id=pad)
    llama_like = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=64, **small)
    return {
        "gpt2": lambda: tf.GPT2Config(n_embd=32, n_layer=4, n_head=2, n_inner=64, n_positions=64, **small),
        "gptj": lambda: tf.GPTJConfig(n_embd=32, n_layer=4, n_head=2, rotary_dim=8, n_positions=64, **small),
        "llama": lambda: tf.LlamaConfig(**llama_like),
        "mistral": lambda: tf.MistralConfig(**llama_like),
        "qwen2": lambda: tf.Qwen2Config(**llama_like),
        "gemma": lambda: tf.GemmaConfig(head_dim=16, **llama_like),
        "phi3": lambda: tf.Phi3Config(**llama_like),
    }[model_type]()


@pytest.fixture(scope="module")
def tok(world):
    return train_tokenizer(world, None, vocab_size=300, extra_names=50)


def _model(model_type, tok):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(model_type, len(tok), tok.pad_token_id))
    return model.eval().requires_grad_(False)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_every_family_entry_resolves_and_every_editor_runs(model_type, tok, world):
    model = _model(model_type, tok)
    fam = family_of(model)
    assert fam.name == model_type and num_layers(model) == 4
    for role in ("mlp_out", "mlp_in", "mlp_gate", "attn_out"):
        if role == "mlp_gate" and fam.mlp_gate is None:
            continue
        check_projection(model, layer_path(model, 1, role))
    for path in (fam.body, fam.final_norm, fam.lm_head):
        get_module(model, path)
    batch = encode_batch(tok, [("The sky is", "blue"), ("I am", "here today")])
    answer = batch.labels != -100
    full = model(**batch.model_inputs()).logits[answer]
    assert torch.allclose(logits_at(model, batch.model_inputs(), answer), full, atol=1e-5)

    recs = list(world.records(0, 2))
    ctx = EditContext(family=fam, locality_pool=world.locality_pool())
    ultra = UltraEditor(model, tok, UltraEditHparams(turn_size=2, layers=[-2], lr=1e-2), ctx)
    before = get_module(model, ultra.paths[0]).weight.clone()
    ultra.edit_turn(recs)
    assert not torch.equal(get_module(model, ultra.paths[0]).weight, before)
    ultra.reset()
    assert torch.equal(get_module(model, ultra.paths[0]).weight, before)

    runs = []
    for cache in (True, False):   # WISE's prefix cache runs the upper layers from the table's paths alone
        wise = WiseEditor(model, tok, WiseHparams(layer=2, n_iter=3, template_lengths=(2,), prefix_cache=cache,
                                                  early_stop_loss=-1.0, alpha=0.5, beta=2.0, gamma=1.0), ctx)
        wise.edit_turn(recs[:1])
        runs.append(wise.last_losses)
        wise.reset()
    assert runs[0] == pytest.approx(runs[1], rel=1e-4, abs=1e-5)
