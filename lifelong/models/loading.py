"""Loading a model named in params.yaml, and identifying it (fingerprints for checkpoints and artefacts)."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from torch import nn

from ..core.errors import ConfigError, LifelongError, unknown_name
from ..core.paths import resolve

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_VOLATILE = ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "architectures")


def resolve_model(name: str, params: Mapping[str, Any]) -> tuple[str, str]:
    """params.yaml `models.NAME` -> (local path or hub id, dtype)."""
    models = params.get("models") or {}
    if name not in models:
        raise unknown_name("model", name, list(models))
    entry = models[name] or {}
    dtype = entry.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ConfigError(f"params.yaml models.{name}.dtype: expected one of {list(DTYPES)}, got {dtype!r}")
    if entry.get("hub"):
        return str(entry["hub"]), dtype
    if not entry.get("path"):
        raise ConfigError(f"params.yaml models.{name}: needs `path` (a local model) or `hub` (a hub id)")
    path = resolve(entry["path"])
    if not (path / "config.json").exists():
        raise LifelongError(f"model {name!r} is not built yet: {path} has no config.json. "
                            f"Build it with `dvc repro pretrain@{name}` (or `make repro`).")
    return str(path), dtype


def uses_chat_template(name: str, params: Mapping[str, Any]) -> bool:
    """params.yaml `models.NAME.chat_template` (default false: raw prompts, as the papers edit and score): whether
    generation metrics prompt through the tokenizer's chat template (eval/generation.py). Teacher-forced scores
    always use raw prompts."""
    value = ((params.get("models") or {}).get(name) or {}).get("chat_template", False)
    if not isinstance(value, bool):
        raise ConfigError(f"params.yaml models.{name}.chat_template: expected true or false, got {value!r}")
    return value


def placement(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """params.yaml `models.NAME` placement keys, checked: `device_map` (null, or `auto`: Accelerate spreads a model
    too large for one GPU over the machine's GPUs) and `cast_buffers` (false: load in `dtype`, which keeps float
    buffers such as the rotary `inv_freq` in fp32; true: the UltraEdit authors' `model.bfloat16()` after loading,
    which rounds them too, for bit-faithful bf16 comparisons)."""
    entry = (params.get("models") or {}).get(name) or {}
    device_map, cast = entry.get("device_map"), entry.get("cast_buffers", False)
    if device_map not in (None, "auto"):
        raise ConfigError(f"params.yaml models.{name}.device_map: expected null or auto, got {device_map!r}")
    if not isinstance(cast, bool):
        raise ConfigError(f"params.yaml models.{name}.cast_buffers: expected true or false, got {cast!r}")
    return {"device_map": device_map, "cast_buffers": cast}


def resolve_device(requested: str | None) -> str:
    """`auto` (or None): the GPU when torch sees one, else the CPU. An explicit `cuda` / `cuda:K` that torch cannot
    use is refused, never silently run on the CPU: a GPU profile's timings would otherwise mean nothing."""
    if requested in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        raise LifelongError(f"device {requested!r}: expected auto, cpu, cuda or cuda:K") from None
    if device.type == "cpu":
        return "cpu"
    if device.type != "cuda":
        raise LifelongError(f"device {requested!r}: this suite runs on cpu or cuda (auto picks)")
    if not torch.cuda.is_available():
        raise LifelongError(f"device {requested!r} was asked for, but torch {torch.__version__} sees no GPU "
                            f"(built for CUDA {torch.version.cuda or 'none: a CPU build'}); use device auto or cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise LifelongError(f"device {requested!r}: this machine has {torch.cuda.device_count()} GPU(s), "
                            f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return str(device)


def check_dtype(dtype: str, device: str, where: str) -> None:
    """Refuse, before anything loads, a dtype the device cannot compute in: float16 on the CPU (many CPU kernels
    lack it; bfloat16 or float32 instead) and bfloat16 on a GPU without it (compute capability below 8.0)."""
    kind = torch.device(device).type
    if dtype == "float16" and kind == "cpu":
        raise ConfigError(f"{where}: float16 is not supported on the CPU (use float32 or bfloat16 there, "
                          "or run on a GPU)")
    if dtype == "bfloat16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"{where}: {torch.cuda.get_device_name(torch.device(device))} has no bfloat16 support "
                          "(compute capability < 8.0); use float16 or float32")


def input_device(model: nn.Module) -> torch.device:
    """Where a batch goes: the input embeddings' device (the first shard of a `device_map: auto` model)."""
    return model.get_input_embeddings().weight.device


def load_model(path_or_id: str, *, dtype: str = "float32", device: str = "cpu", device_map: str | None = None,
               cast_buffers: bool = False):
    """Load a causal LM and its tokenizer through the Auto classes (the hub path a GPU user takes too).
    `device_map` and `cast_buffers`: see `placement`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars are noise in logs and notebooks
    try:
        tokenizer = AutoTokenizer.from_pretrained(path_or_id)
        model = AutoModelForCausalLM.from_pretrained(path_or_id, dtype=DTYPES[dtype],
                                                     **({"device_map": device_map} if device_map else {}))
    except OSError as exc:
        raise LifelongError(f"could not load model {path_or_id!r}: {str(exc).splitlines()[0]}. "
                            "Testbed models are built by `dvc repro pretrain`; hub models need network access.") from None
    except SafetensorError as exc:   # a truncated or damaged weights file
        raise LifelongError(f"could not load model {path_or_id!r}: its model.safetensors is damaged ({exc}); "
                            "rebuild it (`dvc repro`) or download it again") from None
    check_finite(model, path_or_id)
    # The pad rule: a tokenizer without a pad token pads with its end-of-sequence token. Padding is always masked
    # (attention mask, labels -100) and placed right of the text, so no position or score shifts; no token is
    # added, so the vocabulary and the embedding matrix stay as trained.
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise LifelongError(f"model {path_or_id!r}: its tokenizer has neither a pad nor an end-of-sequence token; "
                                "set one in its tokenizer_config.json (the suite never adds tokens to a vocabulary)")
        tokenizer.pad_token = tokenizer.eos_token
    if cast_buffers:   # every floating tensor, buffers included (the reference's model.bfloat16())
        model.to(DTYPES[dtype])
    if not device_map:  # a device-mapped model is already placed, shard by shard
        model.to(device)
    model.eval()
    model.requires_grad_(False)  # editors switch on exactly what they train
    return model, tokenizer


def check_finite(model: nn.Module, name: str) -> None:
    """Refuse a model with a NaN or infinite weight: every edit and score of it would be meaningless."""
    for param_name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise LifelongError(f"model {name!r}: weight {param_name} holds NaN or infinite values ({bad} of "
                                f"{tensor.numel()}); the file is damaged or the training diverged")


def context_length(model: nn.Module) -> int | None:
    """The longest input the model takes (position embeddings), if its config says."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def config_dict(model: nn.Module) -> dict[str, Any]:
    """The model's config without the keys that change with the file or the library version."""
    cfg = model.config.to_dict()
    for key in _VOLATILE:
        cfg.pop(key, None)
    return cfg


def fingerprint(model: nn.Module) -> str:
    """A short hash of the model's config: checkpoints and saved editors refuse other base models."""
    return hashlib.sha256(json.dumps(config_dict(model), sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_diff(saved: Mapping[str, Any], current: Mapping[str, Any], limit: int = 12) -> str:
    """'key: saved A, this model B; ...' for the config keys that differ."""
    absent = "<absent>"
    keys = sorted(k for k in set(saved) | set(current) if saved.get(k, absent) != current.get(k, absent))
    parts = [f"{k}: saved {saved.get(k, absent)!r}, this model {current.get(k, absent)!r}" for k in keys[:limit]]
    if len(keys) > limit:
        parts.append(f"... {len(keys) - limit} more")
    return "; ".join(parts) or "(none in the config dict; fingerprints differ)"
