"""The real models' text corpus for layer statistics (MEMIT's C, AlphaEdit's P; spec baselines.md §5).

The papers compute C over 100K Wikipedia samples. Nothing can be downloaded here, so the corpus is the
real, general-domain text that the data directory already holds and that the real grid neither edits
nor scores: the WISE hallucination set's WikiBio passages and RedPajama locality passages, and the
temporal set's locality passages (params.yaml `stats.real_text`). Any text that mentions a subject of
a dataset the grid edits (`exclude_subjects_of`) is left out, so that C does not protect the very facts
the edits change, as the testbed corpus does (testbed.py `stats_corpus`).

Subjects are matched on lower-cased word sequences (\\w+), so "Paris" does not match "Parisian";
subjects shorter than `min_subject_chars` are not matched (they would drop ordinary words).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from ..core.config import fill
from ..core.errors import ConfigError
from ..data import load_dataset, load_entry

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class RealTextConfig:
    """params.yaml `stats.real_text`."""

    sources: dict[str, dict] = field(default_factory=dict)   # name -> dataset entry ({loader, path, [fields]})
    fields: list[str] = field(default_factory=lambda: ["locality"])   # "locality" (prompt + answer), "prompt", "target"
    exclude_subjects_of: list[str] = field(default_factory=list)      # datasets.NAME whose subjects are left out
    min_subject_chars: int = 4


def _words(text: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(text.lower()))


def _texts_of(record, fields: Iterable[str]) -> list[str]:
    out = []
    for name in fields:
        if name == "locality" and record.locality_prompt:
            out.append(f"{record.locality_prompt} {record.locality_answer}".strip())
        elif name == "prompt":
            out.append(record.prompt)
        elif name == "target":
            out.append(record.target)
    return [t for t in out if t.strip()]


def mentions(text_words: tuple[str, ...], subjects: set[tuple[str, ...]], longest: int) -> bool:
    """Whether any word n-gram of the text (n ≤ longest) is one of the subjects."""
    for n in range(1, longest + 1):
        for i in range(len(text_words) - n + 1):
            if text_words[i:i + n] in subjects:
                return True
    return False


def real_text_corpus(params: Mapping[str, Any]) -> tuple[list[str], str]:
    """(distinct texts, a one-line description) for the real models' layer statistics."""
    where = "params.yaml stats.real_text"
    config = fill(RealTextConfig, dict((params.get("stats") or {}).get("real_text") or {}), where=where)
    for name, entry in [("", config.fields)] + [(f".sources.{k}", v.get("fields", [])) for k, v in config.sources.items()]:
        bad = sorted(set(entry) - {"locality", "prompt", "target"})
        if bad:
            raise ConfigError(f"{where}{name}.fields: {bad} are not text fields; expected locality, prompt or target")
    subjects = set()
    for name in config.exclude_subjects_of:
        for record in load_dataset(name, params).records():
            if len(record.subject) >= config.min_subject_chars and _words(record.subject):
                subjects.add(_words(record.subject))
    longest = max((len(s) for s in subjects), default=0)
    texts: dict[str, None] = {}
    dropped = 0
    for name, entry in config.sources.items():
        entry = dict(entry)
        fields = entry.pop("fields", config.fields)   # a source may name its own fields
        source = load_entry(name, entry, params, where=f"{where}.sources.{name}")
        for record in source.records():
            for text in _texts_of(record, fields):
                if text in texts:
                    continue
                if mentions(_words(text), subjects, longest):
                    dropped += 1
                else:
                    texts[text] = None
    description = (f"real text from {', '.join(config.sources)} without the "
                   f"{len(subjects)} subjects of {', '.join(config.exclude_subjects_of) or 'no dataset'}: "
                   f"{len(texts)} texts kept, {dropped} dropped")
    return list(texts), description
