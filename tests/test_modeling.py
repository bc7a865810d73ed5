import pytest
import torch
from torch import nn

from lifelong.core.errors import LifelongError
from lifelong.models.modules import (add_delta_, check_projection, family_of, get_module, is_conv1d, layer_path,
                               shape_in_out, weight_in_out)

EXPECTED = {
    "gpt2": ("transformer.h.2.mlp.c_proj", True),
    "llama": ("model.layers.2.mlp.down_proj", False),
    "mistral": ("model.layers.2.mlp.down_proj", False),
}


def test_resolution_per_family(model_and_tokenizer, family):
    model, _ = model_and_tokenizer
    path, conv = EXPECTED[family]
    assert family_of(model).name == family
    assert layer_path(model, 2) == path
    module = check_projection(model, path)
    assert is_conv1d(module) == conv
    d_in, d_out = shape_in_out(module)
    assert (d_in, d_out) == (model.config.to_dict().get("n_inner") or model.config.to_dict().get("intermediate_size"),
                             model.config.to_dict().get("n_embd") or model.config.to_dict().get("hidden_size"))
    assert tuple(weight_in_out(module).shape) == (d_in, d_out)


def test_add_delta_orientation(model_and_tokenizer):
    """After W += Δ (in the (d_in, d_out) orientation) the module maps k to f(k) + k·Δ."""
    model, _ = model_and_tokenizer
    module = get_module(model, layer_path(model, 1))
    d_in, d_out = shape_in_out(module)
    k = torch.randn(3, d_in)
    delta = torch.randn(d_in, d_out) * 0.01
    before = module(k)
    add_delta_(module, delta)
    torch.testing.assert_close(module(k) - before, k @ delta, rtol=1e-4, atol=1e-5)


def test_negative_layer_counts_from_top(model_and_tokenizer):
    model, _ = model_and_tokenizer
    assert layer_path(model, -1) == layer_path(model, 3)


def test_bad_layer_and_path_errors(model_and_tokenizer):
    model, _ = model_and_tokenizer
    with pytest.raises(LifelongError, match="does not exist.*4 layers"):
        layer_path(model, 7)
    with pytest.raises(LifelongError, match="no child 'nope'"):
        get_module(model, f"{family_of(model).layers}.0.nope")
    norm_path = next(n for n, m in model.named_modules() if "norm" in type(m).__name__.lower() or isinstance(m, nn.LayerNorm))
    with pytest.raises(LifelongError, match="not a linear/Conv1D projection; valid"):
        check_projection(model, norm_path)
