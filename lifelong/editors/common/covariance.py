"""Layer statistics: the uncentred second moment E[k kᵀ] of a module's inputs over a text corpus
(spec baselines.md §5; MEMIT's C in its λC regulariser, AlphaEdit's null-space projector P).

k is the module's input at every real (non-pad) token: for a down projection, the activated FFN hidden
state, so C has dimension d_in of that module (d_ff), not d_model. The sum is accumulated in `dtype`
(float32, as the reference's `mom2_dtype`) and divided by the token count. The forward pass stops
right after the layer that holds the module: nothing above it is computed.

The result is cached on disk as safetensors plus JSON, keyed by everything it is a function of: the
model's fingerprint, the module, a hash of the corpus, the context cut, and the dtype. The JSON records
the corpus name, its text and token counts and the time taken.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file

from ...core.errors import LifelongError
from ...core.io import atomic_write, read_json, write_json
from ...models.loading import fingerprint
from ...models.modules import family_of, get_module, layer_of, num_layers
from ...models.tokenization import pad, pad_id
from .hooks import capture, stop_before


class SecondMoment:
    """Running Σ x xᵀ and the row count; `value()` is E[x xᵀ]."""

    def __init__(self, dim: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        self.sum = torch.zeros(dim, dim, dtype=dtype, device=device)
        self.count = 0

    def update(self, rows: torch.Tensor) -> None:
        rows = rows.to(self.sum.dtype)
        self.sum.addmm_(rows.T, rows)
        self.count += rows.shape[0]

    def value(self) -> torch.Tensor:
        if not self.count:
            raise LifelongError("second moment of no rows: the corpus produced no tokens")
        return self.sum / self.count


def corpus_sha(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


@torch.no_grad()
def input_second_moment(model, tokenizer, module_path: str, texts: Sequence[str], *, max_length: int | None = None,
                        batch_tokens: int = 8192, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, int]:
    """(E[k kᵀ] over every real token of `texts`, number of tokens) for the input k of `module_path`.
    Texts longer than `max_length` tokens are cut to their first `max_length` tokens."""
    module = get_module(model, module_path)
    layer = layer_of(model, module_path)
    layers = get_module(model, family_of(model).layers)
    stop_at = layers[layer + 1] if layer is not None and layer + 1 < num_layers(model) else \
        get_module(model, family_of(model).final_norm)
    device = next(model.parameters()).device
    encoded = sorted((tokenizer(t)["input_ids"][:max_length] for t in texts), key=len)
    encoded = [e for e in encoded if e]
    moment: SecondMoment | None = None
    start = 0
    while start < len(encoded):   # length-sorted batches of about batch_tokens tokens (padding included)
        stop = start + 1
        while stop < len(encoded) and (stop + 1 - start) * len(encoded[stop]) <= batch_tokens:
            stop += 1
        ids, mask = pad(encoded[start:stop], pad_id(tokenizer))
        with capture({module_path: module}) as seen, stop_before(stop_at):
            model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
        keys = seen[module_path][0]
        rows = keys[mask.to(device).bool()]            # real tokens only
        if moment is None:
            moment = SecondMoment(rows.shape[-1], dtype, device)
        moment.update(rows)
        start = stop
    if moment is None:
        raise LifelongError("second moment of an empty corpus")
    return moment.value(), moment.count


@dataclass(frozen=True)
class MomentKey:
    """Everything a cached second moment is a function of."""

    fingerprint: str
    module: str
    corpus_sha: str
    texts: int
    max_length: int | None
    dtype: str

    def stem(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return f"{self.module}-{hashlib.sha256(blob).hexdigest()[:16]}"


def cached_second_moment(model, tokenizer, module_path: str, texts: Sequence[str], directory: str | Path, *,
                         corpus: str = "", max_length: int | None = None, batch_tokens: int = 8192,
                         dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, dict]:
    """The second moment from `directory` if it was computed for exactly this key, else computed and stored.
    Returns (C, metadata)."""
    key = MomentKey(fingerprint(model), module_path, corpus_sha(texts), len(texts), max_length,
                    str(dtype).removeprefix("torch."))
    directory = Path(directory)
    tensor_path, meta_path = directory / f"{key.stem()}.safetensors", directory / f"{key.stem()}.json"
    if tensor_path.exists() and meta_path.exists():
        meta = read_json(meta_path)
        if meta.get("key") == asdict(key):
            return load_file(str(tensor_path))["moment"], meta
    t0 = time.perf_counter()
    moment, tokens = input_second_moment(model, tokenizer, module_path, texts, max_length=max_length,
                                         batch_tokens=batch_tokens, dtype=dtype)
    meta = {"key": asdict(key), "corpus": corpus, "tokens": tokens, "dim": int(moment.shape[0]),
            "seconds": round(time.perf_counter() - t0, 3)}
    atomic_write(tensor_path, lambda p: save_file({"moment": moment.contiguous().cpu()}, str(p)))
    write_json(meta_path, meta)
    return moment, meta
