"""Dataset registry: params.yaml `datasets.NAME: {loader: LOADER, ...options}` -> an EditSource.

A new format is one file in this folder with a `load(name, options, *, data_dir, where)` function plus
one line in LOADERS. Protocol choices (which field is the target, whether "?" is appended, ...) are
loader options in params.yaml, so each paper's protocol is a config, not code.
"""
from __future__ import annotations

import importlib
from typing import Any, Mapping

from ..core.errors import ConfigError, unknown_name
from ..core.paths import data_dir as resolve_data_dir
from .base import EditSource, ListSource

LOADERS: dict[str, str] = {  # name -> "module:function"
    "synthetic": "lifelong.data.synthetic:load",
    "zsre_mend": "lifelong.data.zsre:load",
    "zsre_ultraedit": "lifelong.data.zsre:load_ultraedit",
    "counterfact": "lifelong.data.counterfact:load",
    "counterfact_rome": "lifelong.data.counterfact:load_rome",
    "ultraeditbench": "lifelong.data.ultraeditbench:load",
    "wikibigedit": "lifelong.data.wikibigedit:load",
    "fever": "lifelong.data.fever:load",
    "knowedit": "lifelong.data.knowedit:load",
    "wise_hallucination": "lifelong.data.wise_sets:load_hallucination",
    "wise_temporal": "lifelong.data.wise_sets:load_temporal",
    "concat": "lifelong.data.concat:load",
}

# keys of a dataset entry that are not loader options: the pool of irrelevant text, a description, the
# optional metrics, and `grid` (how the edit grid runs this dataset: n_edits, edits_per_point)
_ENTRY_KEYS = ("loader", "locality_pool", "description", "metrics", "grid")


def load_dataset(name: str, params: Mapping[str, Any]) -> EditSource:
    entries = params.get("datasets") or {}
    if name not in entries:
        raise unknown_name("dataset", name, list(entries))
    return load_entry(name, entries[name], params, where=f"params.yaml datasets.{name}")


def load_entry(name: str, entry: Mapping[str, Any] | None, params: Mapping[str, Any], *, where: str) -> EditSource:
    """A source from one dataset entry (`{loader: ..., options...}`)."""
    return load_entry_at(name, entry, resolve_data_dir(params.get("data_dir")), where=where)


def load_entry_at(name: str, entry: Mapping[str, Any] | None, data_dir, *, where: str) -> EditSource:
    """`load_entry` with the data directory already resolved (a concat entry loads its parts this way)."""
    entry = dict(entry or {})
    loader = entry.get("loader")
    if loader not in LOADERS:
        raise ConfigError(f"{where}.loader: {loader!r} is not a known loader; known loaders: {', '.join(sorted(LOADERS))}")
    options = {k: v for k, v in entry.items() if k not in _ENTRY_KEYS}
    module, _, function = LOADERS[loader].partition(":")
    load = getattr(importlib.import_module(module), function)
    return load(name, options, data_dir=data_dir, where=where)


def dataset_metrics(name: str, params: Mapping[str, Any]) -> tuple[str, ...]:
    """The optional metrics a dataset entry asks for (`metrics: [exact_match, perplexity, ...]`)."""
    from ..eval.registry import check_options

    entry = (params.get("datasets") or {}).get(name) or {}
    return check_options(entry.get("metrics"), f"params.yaml datasets.{name}.metrics")


def locality_pool(name: str, params: Mapping[str, Any], source: EditSource | None = None) -> list[tuple[str, str]]:
    """The (prompt, answer) pool an editor may train against as irrelevant text (WISE's D_irr).

    `datasets.NAME.locality_pool` names another dataset entry, or is an inline entry (a mapping with its
    own `loader`), whose locality pairs form the pool (the ZsRE train split for ZsRE). Inline entries keep
    everything a dataset needs under its own params key, so DVC reruns exactly the stages it affects.
    Without it, a source may provide its own pool.
    """
    entry = (params.get("datasets") or {}).get(name) or {}
    pool = entry.get("locality_pool")
    if pool:
        pool_source = (load_entry(f"{name}.locality_pool", pool, params, where=f"params.yaml datasets.{name}.locality_pool")
                       if isinstance(pool, Mapping) else load_dataset(pool, params))
        return [(r.locality_prompt, r.locality_answer) for r in pool_source.records() if r.locality_prompt]
    source = source or load_dataset(name, params)
    own = getattr(source, "locality_pool", None)
    return list(own()) if callable(own) else []


__all__ = ["EditSource", "ListSource", "LOADERS", "dataset_metrics", "load_dataset", "load_entry", "load_entry_at",
           "locality_pool"]
