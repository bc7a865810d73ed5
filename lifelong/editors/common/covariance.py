"""Layer statistics: the uncentred second moment E[k kᵀ] of a module's inputs over a text corpus
(spec baselines.md §5; MEMIT's C in its λC regulariser, AlphaEdit's null-space projector P).

k is the module's input at every real (non-pad) token: for a down projection, the activated FFN hidden
state, so C has dimension d_in of that module (d_ff), not d_model. The sum is accumulated in `dtype`
(float32, as the reference's `mom2_dtype`) and divided by the token count. The forward pass stops
right after the layer that holds the module: nothing above it is computed.

The result is cached on disk as safetensors plus JSON, keyed by everything it is a function of: the
model's fingerprint, the module, a hash of the corpus, the context cut, and the dtype. The JSON records
the corpus name, its text and token counts and the time taken.

A *stats folder* (what MEMIT and AlphaEdit read, `EditContext.stats_dir`; the runner uses
`artifacts/stats/<model name>`, written by the DVC stage `stats@<model name>`) is the plain, named layout

    <stats_dir>/<module path>.safetensors   {"moment": E[k kᵀ]}, d_in × d_in
    <stats_dir>/<module path>.json          corpus, corpus_sha, texts, tokens, dtype, dim, max_length,
                                            module, fingerprint (of the model it was made on); the
                                            time taken is returned, not written

`write_layer_stats` computes one for a list of modules in a single pass over the texts; `load_layer_stats`
reads one entry and refuses a file made for another model.
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
from ...models.modules import family_of, get_module, layer_of, num_layers, shape_in_out
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
    moments, count = input_second_moments(model, tokenizer, [module_path], texts, max_length=max_length,
                                          batch_tokens=batch_tokens, dtype=dtype)
    return moments[module_path], count


@torch.no_grad()
def input_second_moments(model, tokenizer, module_paths: Sequence[str], texts: Sequence[str], *,
                         max_length: int | None = None, batch_tokens: int = 8192,
                         dtype: torch.dtype = torch.float32) -> tuple[dict[str, torch.Tensor], int]:
    """`input_second_moment` for several modules in one pass over the texts (the pass stops after the
    highest layer that holds one of them). Returns ({path: E[k kᵀ]}, number of tokens)."""
    modules = {path: get_module(model, path) for path in module_paths}
    held = [layer_of(model, path) for path in module_paths]
    layers = get_module(model, family_of(model).layers)
    top = None if None in held else max(held)
    stop_at = layers[top + 1] if top is not None and top + 1 < num_layers(model) else \
        get_module(model, family_of(model).final_norm)
    device = next(model.parameters()).device
    encoded = sorted((tokenizer(t)["input_ids"][:max_length] for t in texts), key=len)
    encoded = [e for e in encoded if e]
    moments: dict[str, SecondMoment] = {}
    start = 0
    while start < len(encoded):   # length-sorted batches of about batch_tokens tokens (padding included)
        stop = start + 1
        while stop < len(encoded) and (stop + 1 - start) * len(encoded[stop]) <= batch_tokens:
            stop += 1
        ids, mask = pad(encoded[start:stop], pad_id(tokenizer))
        with capture(modules) as seen, stop_before(stop_at):
            model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
        real = mask.to(device).bool()
        for path in module_paths:
            rows = seen[path][0][real]                 # real tokens only
            if path not in moments:
                moments[path] = SecondMoment(rows.shape[-1], dtype, device)
            moments[path].update(rows)
        start = stop
    if not moments:
        raise LifelongError("second moment of an empty corpus")
    return {path: m.value() for path, m in moments.items()}, moments[module_paths[0]].count


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


# -- a stats folder: <stats_dir>/<module path>.safetensors + .json -----------------------------------
STATS_STAGE = "stats@{model}"


def stats_files(stats_dir: str | Path, module_path: str) -> tuple[Path, Path]:
    """(tensor file, metadata file) of one module's second moment in a stats folder."""
    stats_dir = Path(stats_dir)
    return stats_dir / f"{module_path}.safetensors", stats_dir / f"{module_path}.json"


def write_layer_stats(model, tokenizer, module_paths: Sequence[str] | None, texts: Sequence[str],
                      stats_dir: str | Path, *, corpus: str, max_length: int | None = None, batch_tokens: int = 8192,
                      dtype: torch.dtype = torch.float32) -> dict[str, dict]:
    """Compute E[k kᵀ] of every module's input over `texts` (one pass) and write them to the stats folder
    `stats_dir`, one safetensors + JSON pair per module. `module_paths=None`: every layer's down projection
    (all moments are held at once: d_in² floats per layer). Returns {module path: metadata}."""
    if module_paths is None:
        fam = family_of(model)
        module_paths = [f"{fam.layers}.{i}.{fam.mlp_out}" for i in range(num_layers(model))]
    t0 = time.perf_counter()
    moments, tokens = input_second_moments(model, tokenizer, module_paths, texts, max_length=max_length,
                                           batch_tokens=batch_tokens, dtype=dtype)
    seconds = round(time.perf_counter() - t0, 3)
    written = {}
    for path, moment in moments.items():
        meta = {"module": path, "fingerprint": fingerprint(model), "corpus": corpus, "corpus_sha": corpus_sha(texts),
                "texts": len(texts), "tokens": tokens, "dtype": str(dtype).removeprefix("torch."),
                "dim": int(moment.shape[0]), "max_length": max_length, "seconds": seconds}
        tensor_path, meta_path = stats_files(stats_dir, path)
        atomic_write(tensor_path, lambda p, m=moment: save_file({"moment": m.contiguous().cpu()}, str(p)))
        # The folder holds only what the moments are a function of (no timing), so a rebuild writes the same
        # bytes: the edit stages depend on it and must not rerun for a new stopwatch reading.
        write_json(meta_path, {k: v for k, v in meta.items() if k != "seconds"})
        written[path] = meta
    return written


def load_layer_stats(stats_dir: str | Path | None, module_path: str, model, *,
                     device: torch.device | str = "cpu") -> tuple[torch.Tensor, dict]:
    """(E[k kᵀ], metadata) of `module_path` from a stats folder. A missing file is an error that names the
    DVC stage (and the Python call) that writes it; a file made on another model is refused."""
    if stats_dir is None:
        raise LifelongError(f"{module_path}: this editor needs layer statistics, but no stats folder was given "
                            "(EditContext(stats_dir=...); the runner uses artifacts/stats/<model name>)")
    stats_dir = Path(stats_dir)
    tensor_path, meta_path = stats_files(stats_dir, module_path)
    if not (tensor_path.exists() and meta_path.exists()):
        stage = STATS_STAGE.format(model=stats_dir.name)
        raise LifelongError(
            f"layer statistics for {module_path} are missing: no {tensor_path.name} (+ .json) in {stats_dir}. "
            f"They are made by the DVC stage {stage}: run `dvc repro {stage}`; without DVC, in Python: "
            "lifelong.editors.common.covariance.write_layer_stats(model, tokenizer, [module paths], texts, "
            f"'{stats_dir}', corpus='<name>')")
    meta = read_json(meta_path)
    fp = fingerprint(model)
    if meta.get("fingerprint") != fp:
        raise LifelongError(f"{meta_path} was computed on model {meta.get('fingerprint')}, this model is {fp}: "
                            f"recompute the stats folder {stats_dir} for this model")
    moment = load_file(str(tensor_path), device=str(device))["moment"]
    d_in = shape_in_out(get_module(model, module_path))[0]
    if moment.shape != (d_in, d_in):
        raise LifelongError(f"{tensor_path} holds a {tuple(moment.shape)} moment; {module_path} takes inputs of "
                            f"dimension {d_in}")
    return moment, meta
