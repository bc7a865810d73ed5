"""Models: loading, family conventions, and resolving the module an editor touches.

Families differ in two ways that matter to editors:
  * where the layers and MLP projections live (`transformer.h.{i}.mlp.c_proj` vs `model.layers.{i}.mlp.down_proj`);
  * how a projection stores its weight: `nn.Linear` is [d_out, d_in], GPT-2's `Conv1D` is [d_in, d_out].
Editors work in the (d_in, d_out) orientation (`weight_in_out`) and write back with `add_delta_`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import LifelongError


@dataclass(frozen=True)
class Family:
    name: str
    layers: str            # attribute path of the layer list
    mlp_down: str          # the FFN value / down projection, relative to a layer
    mlp_up: tuple[str, ...]  # input-side projections, relative to a layer
    activation_attr: str   # config attribute that names the hidden activation
    absolute_positions: bool = False  # learned position embeddings (GPT-2), not rotary: padding side matters


FAMILIES: dict[str, Family] = {
    "gpt2": Family("gpt2", "transformer.h", "mlp.c_proj", ("mlp.c_fc",), "activation_function", True),
    "gptj": Family("gptj", "transformer.h", "mlp.fc_out", ("mlp.fc_in",), "activation_function"),
    "llama": Family("llama", "model.layers", "mlp.down_proj", ("mlp.gate_proj", "mlp.up_proj"), "hidden_act"),
    "mistral": Family("mistral", "model.layers", "mlp.down_proj", ("mlp.gate_proj", "mlp.up_proj"), "hidden_act"),
    "qwen2": Family("qwen2", "model.layers", "mlp.down_proj", ("mlp.gate_proj", "mlp.up_proj"), "hidden_act"),
}


def family_of(model: nn.Module) -> Family:
    model_type = getattr(model.config, "model_type", None)
    if model_type not in FAMILIES:
        raise LifelongError(f"model type {model_type!r} is not supported; supported: {sorted(FAMILIES)}")
    return FAMILIES[model_type]


def num_layers(model: nn.Module) -> int:
    return len(get_module(model, family_of(model).layers))


def layer_path(model: nn.Module, layer: int, relative: str | None = None) -> str:
    """`layer_path(gpt2, 3)` -> 'transformer.h.3.mlp.c_proj' (the down projection by default).
    Negative layers count from the top."""
    fam = family_of(model)
    n = num_layers(model)
    if not -n <= layer < n:
        raise LifelongError(f"layer {layer} does not exist: {model.config.model_type} model has {n} layers (0..{n - 1})")
    return f"{fam.layers}.{layer % n}.{relative or fam.mlp_down}"


def get_module(model: nn.Module, path: str) -> nn.Module:
    """Resolve a dotted attribute path, with an error that lists what exists at the failing point."""
    node: Any = model
    walked = []
    for part in path.split("."):
        children = dict(node.named_children()) if isinstance(node, nn.Module) else {}
        if part not in children:
            where = ".".join(walked) or "<model>"
            raise LifelongError(f"module path {path!r} does not exist in the model: {where} has no child "
                                f"{part!r} (children: {', '.join(children) or 'none'})")
        node = children[part]
        walked.append(part)
    return node


def is_conv1d(module: nn.Module) -> bool:
    # transformers' Conv1D (GPT-2) behaves like Linear but stores weight as [d_in, d_out].
    return type(module).__name__ == "Conv1D"


def check_projection(model: nn.Module, path: str) -> nn.Module:
    """The module at `path`, which must be an nn.Linear or a GPT-2 Conv1D."""
    module = get_module(model, path)
    if not (isinstance(module, nn.Linear) or is_conv1d(module)):
        valid = projection_paths(model)
        raise LifelongError(f"{path!r} is a {type(module).__name__}, not a linear/Conv1D projection; "
                            f"valid MLP projections include: {', '.join(valid[:6])}{' ...' if len(valid) > 6 else ''}")
    return module


def projection_paths(model: nn.Module) -> list[str]:
    fam = family_of(model)
    paths = []
    for i in range(num_layers(model)):
        for rel in (fam.mlp_down, *fam.mlp_up):
            paths.append(f"{fam.layers}.{i}.{rel}")
    return paths


def shape_in_out(module: nn.Module) -> tuple[int, int]:
    w = module.weight
    return (w.shape[0], w.shape[1]) if is_conv1d(module) else (w.shape[1], w.shape[0])


def weight_in_out(module: nn.Module) -> torch.Tensor:
    """The weight as a [d_in, d_out] view (no copy)."""
    return module.weight if is_conv1d(module) else module.weight.t()


@torch.no_grad()
def add_delta_(module: nn.Module, delta_in_out: torch.Tensor) -> None:
    """W += Δ for Conv1D, W += Δᵀ for Linear; Δ is cast to the weight's dtype and device."""
    delta = delta_in_out.to(device=module.weight.device, dtype=module.weight.dtype)
    module.weight.add_(delta if is_conv1d(module) else delta.t())


def activation(model: nn.Module):
    """The model's hidden activation function (silu for LLaMA/Mistral, gelu_new for GPT-2/GPT-J)."""
    from transformers.activations import ACT2FN

    name = getattr(model.config, family_of(model).activation_attr)
    return ACT2FN[name]


def context_length(model: nn.Module) -> int | None:
    """The longest input the model takes (position embeddings), if its config says."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def load_model(path_or_id: str, *, dtype: str = "float32", device: str = "cpu"):
    """Load a causal LM and its tokenizer through the Auto classes (the hub path a GPU user takes too)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars are noise in logs and notebooks
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    try:
        tokenizer = AutoTokenizer.from_pretrained(path_or_id)
        model = AutoModelForCausalLM.from_pretrained(path_or_id, dtype=torch_dtype)
    except OSError as exc:
        raise LifelongError(f"could not load model {path_or_id!r}: {str(exc).splitlines()[0]}. "
                            "Testbed models are built by `dvc repro pretrain`; hub models need network access.") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device).eval()
    model.requires_grad_(False)  # editors switch on exactly what they train
    return model, tokenizer
