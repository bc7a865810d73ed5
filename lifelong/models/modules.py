"""Finding and changing the modules an editor touches, through the model's `Family` record.

Families differ in two ways that matter to editors:
  * where the layers and projections live (`transformer.h.{i}.mlp.c_proj` vs `model.layers.{i}.mlp.down_proj`):
    `families.py` holds those paths as data;
  * how a projection stores its weight: `nn.Linear` is [d_out, d_in], GPT-2's `Conv1D` is [d_in, d_out].
    Editors work in the (d_in, d_out) orientation (`weight_in_out`) and write back with `add_delta_`.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core.errors import LifelongError
from .families import FAMILIES, Family, family_named


def family_of(model: nn.Module) -> Family:
    return family_named(getattr(model.config, "model_type", None))


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


def num_layers(model: nn.Module) -> int:
    return len(get_module(model, family_of(model).layers))


def layer_index(model: nn.Module, layer: int) -> int:
    """A layer index, negative counting from the top; an out-of-range index is a clear error."""
    n = num_layers(model)
    if not -n <= layer < n:
        raise LifelongError(f"layer {layer} does not exist: {model.config.model_type} model has {n} layers (0..{n - 1})")
    return layer % n


def layer_path(model: nn.Module, layer: int, relative: str | None = None) -> str:
    """`layer_path(gpt2, 3)` -> 'transformer.h.3.mlp.c_proj' (the down projection by default).
    `relative` is a path inside the layer or a role name (`mlp_out`, `mlp_in`, `mlp_gate`, `attn_out`)."""
    fam = family_of(model)
    if relative is None:
        relative = fam.mlp_out
    elif "." not in relative and relative.startswith(("mlp_", "attn_")):
        relative = fam.role(relative)
    return f"{fam.layers}.{layer_index(model, layer)}.{relative}"


def layer_of(model: nn.Module, path: str) -> int | None:
    """The index of the decoder layer that holds `path`, or None outside the layer stack."""
    prefix = family_of(model).layers + "."
    if not path.startswith(prefix):
        return None
    head = path[len(prefix):].split(".", 1)[0]
    return int(head) if head.isdigit() else None


def side_module(model: nn.Module, *, layer: int | None, layer_fraction: float, module: str | None,
                editor: str) -> tuple[int | None, str]:
    """(layer index, module path) of the one projection an adapter editor wraps (WISE, GRACE): an explicit
    `module` path (any FFN projection), else `layer` (negative: from the top), else int(layer_fraction·n), at most
    n-2 (7B models, 32 layers: 27). Unknown layers or paths are one clear error listing the valid ones."""
    fam = family_of(model)
    n = num_layers(model)
    if module:
        valid = projection_paths(model)
        if module not in valid:
            raise LifelongError(f"{editor} module {module!r} is not an MLP projection of this "
                                f"{model.config.model_type} model; valid: {', '.join(valid)}")
        return layer_of(model, module), module
    if layer is None:
        index = min(int(layer_fraction * n), max(n - 2, 0))
    elif -n <= layer < n:
        index = layer % n
    else:
        raise LifelongError(f"{editor} layer {layer} does not exist: the {model.config.model_type} model has {n} "
                            f"layers (0..{n - 1}); valid modules: "
                            f"{', '.join(f'{fam.layers}.{i}.{fam.mlp_out}' for i in range(n))}")
    return index, f"{fam.layers}.{index}.{fam.mlp_out}"


def is_conv1d(module: nn.Module) -> bool:
    # transformers' Conv1D (GPT-2) behaves like Linear but stores weight as [d_in, d_out].
    return type(module).__name__ == "Conv1D"


def projection_paths(model: nn.Module) -> list[str]:
    """Every FFN projection of every layer (what weight editors may target by default)."""
    fam = family_of(model)
    return [f"{fam.layers}.{i}.{rel}" for i in range(num_layers(model)) for rel in fam.mlp_projections]


def check_projection(model: nn.Module, path: str) -> nn.Module:
    """The module at `path`, which must be an nn.Linear or a GPT-2 Conv1D."""
    module = get_module(model, path)
    if not (isinstance(module, nn.Linear) or is_conv1d(module)):
        valid = projection_paths(model)
        raise LifelongError(f"{path!r} is a {type(module).__name__}, not a linear/Conv1D projection; "
                            f"valid MLP projections include: {', '.join(valid[:6])}{' ...' if len(valid) > 6 else ''}")
    return module


def shape_in_out(module: nn.Module) -> tuple[int, int]:
    w = module.weight
    return (w.shape[0], w.shape[1]) if is_conv1d(module) else (w.shape[1], w.shape[0])


def weight_in_out(module: nn.Module) -> torch.Tensor:
    """The weight as a [d_in, d_out] view (no copy)."""
    return module.weight if is_conv1d(module) else module.weight.t()


def oriented(module: nn.Module, delta_in_out: torch.Tensor) -> torch.Tensor:
    """A [d_in, d_out] delta in the module's own weight layout (Conv1D: as is; Linear: transposed)."""
    return delta_in_out if is_conv1d(module) else delta_in_out.t()


@torch.no_grad()
def add_delta_(module: nn.Module, delta_in_out: torch.Tensor) -> None:
    """W += Δ for Conv1D, W += Δᵀ for Linear; Δ is cast to the weight's dtype and device."""
    module.weight.add_(oriented(module, delta_in_out).to(device=module.weight.device, dtype=module.weight.dtype))


def activation(model: nn.Module):
    """The model's FFN activation function (silu for LLaMA/Mistral, gelu_new for GPT-2/GPT-J)."""
    from transformers.activations import ACT2FN

    return ACT2FN[getattr(model.config, family_of(model).activation_attr)]


def logits_at(model: nn.Module, inputs: dict[str, torch.Tensor], positions: torch.Tensor) -> torch.Tensor:
    """Logits at the positions of a boolean mask only ([n_true, vocab]): the LM head runs on those rows.

    Same numbers as `model(**inputs).logits[positions]` for a plain linear head, without the head's
    forward and backward over every other position (the vocabulary projection dominates small models).
    A model outside the families (a test double, a custom LM) takes the full forward."""
    if getattr(getattr(model, "config", None), "model_type", None) not in FAMILIES:
        return model(**inputs).logits[positions]
    fam = family_of(model)
    hidden = get_module(model, fam.body)(**inputs)[0]
    return get_module(model, fam.lm_head)(hidden[positions])
