"""Dataset registry: params.yaml `datasets.NAME: {loader: LOADER, ...options}` -> an EditSource.

A new format is one file in this folder with a `load(name, options, *, data_dir, where)` function plus
one line in LOADERS. Protocol choices (which field is the target, whether "?" is appended, ...) are
loader options in params.yaml, so each paper's protocol is a config, not code.
"""
from __future__ import annotations

import importlib
from typing import Any, Mapping

from ..errors import ConfigError, unknown_name
from ..paths import data_dir as resolve_data_dir
from .base import EditSource, ListSource

LOADERS: dict[str, str] = {  # name -> "module:function"
    "synthetic": "lifelong.datasets.synthetic:load",
    "zsre_mend": "lifelong.datasets.zsre:load",
    "zsre_ultraedit": "lifelong.datasets.zsre:load_ultraedit",
    "counterfact": "lifelong.datasets.counterfact:load",
    "counterfact_rome": "lifelong.datasets.counterfact:load_rome",
    "ultraeditbench": "lifelong.datasets.ultraeditbench:load",
    "wikibigedit": "lifelong.datasets.wikibigedit:load",
    "fever": "lifelong.datasets.fever:load",
    "wise_hallucination": "lifelong.datasets.wise_sets:load_hallucination",
    "wise_temporal": "lifelong.datasets.wise_sets:load_temporal",
}

# keys of a dataset entry that are not loader options
_ENTRY_KEYS = ("loader", "locality_pool", "description", "metrics")


def load_dataset(name: str, params: Mapping[str, Any]) -> EditSource:
    entries = params.get("datasets") or {}
    if name not in entries:
        raise unknown_name("dataset", name, list(entries))
    entry = dict(entries[name] or {})
    loader = entry.get("loader")
    if loader not in LOADERS:
        raise ConfigError(f"params.yaml datasets.{name}.loader: {loader!r} is not a known loader; "
                          f"known loaders: {', '.join(sorted(LOADERS))}")
    options = {k: v for k, v in entry.items() if k not in _ENTRY_KEYS}
    module, _, function = LOADERS[loader].partition(":")
    load = getattr(importlib.import_module(module), function)
    data_dir = resolve_data_dir(params.get("data_dir"))
    return load(name, options, data_dir=data_dir, where=f"params.yaml datasets.{name}")


def dataset_metrics(name: str, params: Mapping[str, Any]) -> tuple[str, ...]:
    """The optional metrics a dataset entry asks for (`metrics: [exact_match, perplexity, ...]`)."""
    from ..evaluate import check_extra_metrics

    entry = (params.get("datasets") or {}).get(name) or {}
    return check_extra_metrics(entry.get("metrics"), f"params.yaml datasets.{name}.metrics")


def locality_pool(name: str, params: Mapping[str, Any], source: EditSource | None = None) -> list[tuple[str, str]]:
    """The (prompt, answer) pool an editor may train against as irrelevant text (WISE's D_irr).

    `datasets.NAME.locality_pool` names another dataset entry whose locality pairs form the pool
    (the ZsRE train split for ZsRE). Without it, a source may provide its own pool.
    """
    entry = (params.get("datasets") or {}).get(name) or {}
    pool_name = entry.get("locality_pool")
    if pool_name:
        pool_source = load_dataset(pool_name, params)
        return [(r.locality_prompt, r.locality_answer) for r in pool_source.records() if r.locality_prompt]
    source = source or load_dataset(name, params)
    own = getattr(source, "locality_pool", None)
    return list(own()) if callable(own) else []


__all__ = ["EditSource", "ListSource", "LOADERS", "dataset_metrics", "load_dataset", "locality_pool"]
