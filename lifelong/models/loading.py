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


def load_model(path_or_id: str, *, dtype: str = "float32", device: str = "cpu"):
    """Load a causal LM and its tokenizer through the Auto classes (the hub path a GPU user takes too)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars are noise in logs and notebooks
    try:
        tokenizer = AutoTokenizer.from_pretrained(path_or_id)
        model = AutoModelForCausalLM.from_pretrained(path_or_id, dtype=DTYPES[dtype])
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
    model.to(device).eval()
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
