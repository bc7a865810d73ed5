"""One stream over several data files: `loader: concat` with `parts`, each an inline dataset entry.

UltraEdit's long streams run over every record a benchmark holds (its 20K CounterFact setting is the edit and
train files together). A part is any other entry (`{loader: counterfact, path: ...}`) plus an optional record
range `start` / `stop` of that part (its usable records, after the part's own checks), so that records reserved
for something else, such as the held-out texts and facts of `params.yaml heldout`, stay out of the stream:

    counterfact_stream:
      loader: concat
      parts:
        - {loader: counterfact, path: counterfact/counterfact-edit.json}
        - {loader: counterfact, path: counterfact/counterfact-train.json, start: 1100}

Records keep their order (part 1, then part 2, ...). A record's uid becomes `PART:uid` (`p0:17`), since two files
may share ids. Each part checks its own rows (strict, duplicates, long prompts): duplicates across parts are not
looked for. `report` holds each part's report and the range taken from it.
"""
from __future__ import annotations

import bisect
from dataclasses import replace
from typing import Any, Iterator, Mapping, Sequence

from ..core.errors import ConfigError, DataError
from ..core.records import EditRecord
from .base import EditSource

_RANGE_KEYS = ("start", "stop")


class ConcatSource:
    """Records of several sources, one after another, each cut to a range; random access like its parts."""

    def __init__(self, name: str, parts: Sequence[tuple[EditSource, int, int]]):
        self.name = name
        self._parts = list(parts)                      # (source, start, stop) in that source's indices
        self._offsets = [0]                            # where each part begins in the stream
        for _, start, stop in self._parts:
            self._offsets.append(self._offsets[-1] + stop - start)
        self.report = {"parts": [{"name": source.name, "start": start, "stop": stop, "records": stop - start,
                                  "report": dict(source.report)} for source, start, stop in self._parts]}

    def __len__(self) -> int:
        return self._offsets[-1]

    def records(self, start: int = 0, stop: int | None = None) -> Iterator[EditRecord]:
        n = len(self)
        stop = n if stop is None else stop
        if start < 0 or stop < start or stop > n:
            raise DataError(f"{self.name}: asked for records {start}..{stop} but the stream has {n}")
        return self._iter(start, stop)

    def _iter(self, start: int, stop: int) -> Iterator[EditRecord]:
        part = bisect.bisect_right(self._offsets, start) - 1
        i = start
        while i < stop:
            source, first, _ = self._parts[part]
            lo, hi = i - self._offsets[part], min(stop, self._offsets[part + 1]) - self._offsets[part]
            for record in source.records(first + lo, first + hi):
                yield replace(record, uid=f"p{part}:{record.uid}")
            i, part = self._offsets[part] + hi, part + 1


def _range(part: Mapping[str, Any], size: int, where: str) -> tuple[int, int]:
    start, stop = part.get("start", 0), part.get("stop", size)
    for key, value in (("start", start), ("stop", stop)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{where}.{key}: expected a record index >= 0, got {value!r}")
    if not start < stop <= size:
        raise ConfigError(f"{where}: records {start}..{stop} are not a non-empty range of the part's {size} "
                          f"usable records")
    return start, stop


def load(name: str, options: dict, *, data_dir, where: str) -> ConcatSource:
    from . import load_entry_at   # the registry (imported here: it names this module only as a string)

    unknown = sorted(set(options) - {"parts"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; a concat entry holds `parts`")
    parts = options.get("parts")
    if not isinstance(parts, list) or not parts or not all(isinstance(p, Mapping) for p in parts):
        raise ConfigError(f"{where}.parts: expected a non-empty list of dataset entries ({{loader: ..., path: ...}})")
    loaded = []
    for i, part in enumerate(parts):
        part_where = f"{where}.parts[{i}]"
        if part.get("loader") == "concat":
            raise ConfigError(f"{part_where}.loader: a concat part cannot itself be a concat entry")
        entry = {k: v for k, v in part.items() if k not in _RANGE_KEYS}
        source = load_entry_at(f"{name}[{i}]", entry, data_dir, where=part_where)
        loaded.append((source, *_range(part, len(source), part_where)))
    return ConcatSource(name, loaded)
