"""File-backed edit sources: the options, checks and bookkeeping every real-data loader shares.

A loader module defines its options (a subclass of `FileOptions`, so `fill` validates them and
refuses unknown keys) and a `convert(row, index, opts) -> EditRecord` that raises `RowError` for a
row that does not match the schema. `open_source` does the rest:

* the path is taken relative to the data dir; a missing file names the expected path and where
  the official file comes from;
* the file is converted once into an Arrow file that `datasets` memory-maps (`arrow.py`: a cache keyed
  by the file's path, size and mtime; later loads reuse it without parsing the JSON again);
* `strict: true` (default): the first malformed row raises a `DataError` naming file, row and field,
  at load time (before any edit). `strict: false` skips such rows and counts them in `source.report`;
* `max_prompt_chars`: prompts (edit prompt, rephrases, locality prompt) longer than this are counted
  in the report, and dropped if `long_prompts: skip`. Token-level limits are a model matter: the
  runner cuts over-long inputs from the left (`tokenization.collate(max_length=...)`), keeping the answer;
* duplicate edits (same prompt and target as an earlier row) are counted (`dedupe: true` drops them);
* `n_edits`: use the first N records. Asking for more than the file holds is an error unless
  `cycle: true`, which repeats the file (uids get a `#k` suffix for the k-th repetition).

Every source is random-access with bounded memory: the load-time pass checks the used rows (the first
`n_edits` usable ones, or the whole file when cycling or without n_edits) and keeps only the indices of
the usable raw rows (int32/int64); `records(start, stop)` re-reads those rows from the memory-mapped Arrow
table in slices and converts them on demand. Memory, measured (tests/test_data_cache.py,
test_two_million_rows_in_bounded_memory): a 2,000,000-row UltraEditBench-like JSON array (434 MiB),
converted (~8.5 s) and checked (~14 s) in a fresh process, then a late and a first range read (a late
range of 1,000 records: ~5 ms once datasets is imported), peaks at ~210 MiB RSS (VmHWM; the interpreter,
pyarrow and datasets included); the test's bound is 350 MiB. Reading the checks' full pass through the
memory map instead peaked at ~650 MiB (see arrow.scan), as did a full records() pass without re-mapping.
"""
from __future__ import annotations

import json
import os
from array import array
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping

import numpy as np

from ..core.config import fill
from ..core.errors import DataError, MissingDataError
from ..core.records import EditRecord
from . import arrow
from .rows import RowError

MAX_EXAMPLES = 20   # row messages / indices kept in a report
MAX_REASONS = 20    # distinct skip reasons counted in a report (the rest: "(other reasons)")
_BLOCK = 4096       # records checked for duplicates together
_SPAN = 1024        # raw rows read from the Arrow table per slice by records()
_REMAP_ROWS = 1 << 18  # raw rows read through one memory map before it is re-opened (FileSource._read)


@dataclass(kw_only=True)
class FileOptions:
    path: str
    strict: bool = True
    n_edits: int | None = None
    cycle: bool = False
    max_prompt_chars: int | None = None
    long_prompts: Literal["keep", "skip"] = "keep"
    check_duplicates: bool = True
    dedupe: bool = False

    def validate(self) -> None:
        if not self.path.strip():
            raise ValueError("path must not be empty")
        if self.n_edits is not None and self.n_edits < 1:
            raise ValueError(f"n_edits must be >= 1, got {self.n_edits}")
        if self.max_prompt_chars is not None and self.max_prompt_chars < 1:
            raise ValueError(f"max_prompt_chars must be >= 1, got {self.max_prompt_chars}")
        if self.dedupe and not self.check_duplicates:
            raise ValueError("dedupe: true needs check_duplicates: true")


Convert = Callable[[Mapping[str, Any], int, Any], EditRecord]


def resolve_file(opts: FileOptions, data_dir: str | os.PathLike, where: str, official: str) -> Path:
    p = Path(opts.path).expanduser()
    full = p if p.is_absolute() else Path(data_dir) / p
    if not full.is_file():
        raise MissingDataError(f"{where}.path: dataset file not found: {full} (path {opts.path!r} under the data dir "
                        f"{data_dir}; set LIFELONG_DATA_DIR or params.yaml data_dir to the folder that holds it). "
                        f"The official file: {official}")
    return full


def open_source(name: str, options_cls: type, options: Mapping[str, Any] | None, *, data_dir, where: str,
                convert: Convert, official: str) -> FileSource:
    """Validate options, find the file, convert it (once) and check it: a `FileSource`."""
    opts = fill(options_cls, options, where)
    path = resolve_file(opts, data_dir, where, official)
    return FileSource(name, path, opts, convert)


class RowChecker:
    """Turns raw rows into records, applying strict/lenient handling and the report's counters.

    `check` handles one row (schema, long prompts); accepted records wait in a block that `run` hands to
    `_settle` (duplicates, the remaining counters), so that duplicate keys are looked up a block at a
    time in compact sorted arrays (`_SeenKeys`) rather than in a dict of millions of Python ints.
    """

    def __init__(self, path: Path, opts: FileOptions, convert: Convert):
        self.path, self.opts, self.convert = path, opts, convert
        self.report: dict[str, Any] = {
            "file": str(path), "rows_read": 0, "records": 0,
            "skipped": 0, "skipped_rows": [], "skip_reasons": {},
            "long_prompts": 0, "long_prompt_rows": [], "max_prompt_chars": opts.max_prompt_chars,
            "duplicates": 0, "duplicate_rows": [],
            "target_equals_ground_truth": 0, "target_has_outer_whitespace": 0,
            "no_locality_probe": 0,
        }
        self._seen = _SeenKeys()

    def run(self, batches: Iterator[tuple[int, list[str]]], limit: int | None) -> np.ndarray:
        """Check rows in file order until `limit` records are kept; the indices of the kept raw rows."""
        kept = array("q")
        pending: list[tuple[int, EditRecord]] = []
        for first, texts in batches:
            for index, text in enumerate(texts, first):
                record = self.check(index, text)
                if record is None:
                    continue
                pending.append((index, record))
                # settle before `limit` could be passed: dropping duplicates only lowers the count
                if len(pending) >= (_BLOCK if limit is None else min(_BLOCK, limit - len(kept))):
                    self._settle(pending, kept)
                    pending = []
                    if limit is not None and len(kept) >= limit:
                        return _compact(kept)
        self._settle(pending, kept)
        return _compact(kept)

    def check(self, index: int, text: str) -> EditRecord | None:
        rep = self.report
        rep["rows_read"] += 1
        value = None
        try:
            value = json.loads(text)
            if not isinstance(value, Mapping):
                raise RowError("<row>", f"expected a JSON object, got {type(value).__name__}")
            record = self.convert(value, index, self.opts)
        except RowError as exc:
            if index == 0 and (wrapper := _wrapped_rows(value)):
                raise DataError(f"{self.path}: expected a JSON array or JSON Lines, found an object with keys "
                                f"{sorted(value)[:10]} (are the rows the list under {wrapper!r}?)") from None
            message = f"{self.path}: row {index}: {exc}"
            if self.opts.strict:
                raise DataError(f"{message} (strict mode; set strict: false to skip and count such rows)") from None
            rep["skipped"] += 1
            _note(rep["skipped_rows"], message)
            reasons = rep["skip_reasons"]
            reason = str(exc) if str(exc) in reasons or len(reasons) < MAX_REASONS else "(other reasons)"
            seen = reasons.setdefault(reason, {"rows": 0, "example_row": index})
            seen["rows"] += 1
            return None
        limit = self.opts.max_prompt_chars
        if limit is not None:
            longest = max(len(p) for p in (record.prompt, *record.rephrases, record.locality_prompt))
            if longest > limit:
                rep["long_prompts"] += 1
                _note(rep["long_prompt_rows"], index)
                if self.opts.long_prompts == "skip":
                    return None
        return record

    def _settle(self, pending: list[tuple[int, EditRecord]], kept: array) -> None:
        if not pending:
            return
        rep = self.report
        firsts = None
        if self.opts.check_duplicates:
            rows = np.fromiter((i for i, _ in pending), np.int64, len(pending))
            keys = np.fromiter((hash((r.prompt, r.target)) for _, r in pending), np.int64, len(pending))
            firsts = self._seen.first_rows(keys, rows).tolist()
        for k, (index, record) in enumerate(pending):
            if firsts is not None and firsts[k] != index:
                rep["duplicates"] += 1
                _note(rep["duplicate_rows"], (index, firsts[k]))
                if self.opts.dedupe:
                    continue
            if record.ground_truth is not None and record.ground_truth.strip() == record.target.strip():
                rep["target_equals_ground_truth"] += 1
            if record.target != record.target.strip():
                rep["target_has_outer_whitespace"] += 1
            if not record.locality_prompt:
                rep["no_locality_probe"] += 1
            rep["records"] += 1
            kept.append(index)


class _SeenKeys:
    """64-bit keys seen so far and the row that first had each, as sorted runs (merged like a binary
    counter): 16 bytes a key, where a dict would take ~100."""

    def __init__(self):
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted unique keys, their first rows)

    def first_rows(self, keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """For each key (in file order, with its row): the row that first had it; remembers the new ones."""
        uniq, pos, inverse = np.unique(keys, return_index=True, return_inverse=True)
        first = rows[pos]  # the first row of each key within this block
        new = np.ones(len(uniq), bool)
        for run_keys, run_rows in self._runs:
            at = np.searchsorted(run_keys, uniq).clip(max=len(run_keys) - 1)
            hit = run_keys[at] == uniq
            first[hit] = run_rows[at[hit]]
            new &= ~hit
        self._add(uniq[new], first[new])
        return first[inverse]

    def _add(self, keys: np.ndarray, rows: np.ndarray) -> None:
        if not len(keys):
            return
        while self._runs and len(self._runs[-1][0]) <= len(keys):
            old_keys, old_rows = self._runs.pop()
            keys, rows = np.concatenate([old_keys, keys]), np.concatenate([old_rows, rows])
            order = np.argsort(keys)
            keys, rows = keys[order], rows[order]
        self._runs.append((keys, rows))


def _wrapped_rows(value: Any) -> str | None:
    """The key of a list of objects inside a top-level object (`{"data": [{...}, ...]}`): a file of rows
    wrapped in an object, which JSON Lines reading takes for one row."""
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if isinstance(inner, list) and inner and all(isinstance(v, Mapping) for v in inner):
                return key
    return None


def skipped_summary(report: Mapping[str, Any], top: int = 3) -> str:
    """'2 rows skipped of 2 read; reasons: field 'alt': missing (2 rows, e.g. row 0)' for a loader report."""
    reasons = sorted(report.get("skip_reasons", {}).items(), key=lambda kv: (-kv[1]["rows"], kv[1]["example_row"]))
    listed = "; ".join(f"{reason} ({seen['rows']} row{'s' * (seen['rows'] != 1)}, e.g. row {seen['example_row']})"
                       for reason, seen in reasons[:top])
    return (f"{report.get('skipped', 0)} rows skipped of {report.get('rows_read', 0)} read"
            + (f"; top reasons: {listed}" if listed else ""))


def _note(bucket: list, item: Any) -> None:
    if len(bucket) < MAX_EXAMPLES:
        bucket.append(item)


def _compact(kept: array) -> np.ndarray:
    rows = np.frombuffer(kept, dtype=np.int64) if len(kept) else np.zeros(0, np.int64)
    return rows.astype(np.int32) if len(rows) and rows[-1] < 2**31 else rows.copy()


class FileSource:
    """Records of a data file, served from its memory-mapped Arrow conversion.

    Construction converts the file (or reuses the cached conversion) and checks the used rows, keeping
    only the indices of the usable raw rows; `records(start, stop)` reads and converts rows on demand.
    """

    def __init__(self, name: str, path: Path, opts: FileOptions, convert: Convert):
        self.name, self.path, self.opts, self.convert = name, path, opts, convert
        self.arrow_path = arrow.cached_arrow(path)
        self._column = None  # the memory-mapped row texts, opened on first use
        self._mapped_rows = 0
        checker = RowChecker(path, opts, convert)
        self._rows = checker.run(arrow.scan(self.arrow_path), None if opts.cycle else opts.n_edits)
        self.report = checker.report
        self.report["complete"] = True
        self._check_size()

    def _count(self) -> int:  # usable records (within n_edits when not cycling)
        return len(self._rows)

    def _check_size(self) -> None:
        n_file, want = self._count(), self.opts.n_edits
        if n_file == 0:
            raise DataError(f"{self.name}: {self.report['file']} holds no usable records: "
                            f"{skipped_summary(self.report)}")
        if want is not None and want > n_file and not self.opts.cycle:
            raise DataError(f"{self.name}: n_edits={want} but {self.report['file']} holds only {n_file} usable "
                            f"records; lower n_edits or set cycle: true to repeat the file")
        self.report["cycled"] = want is not None and want > n_file

    def __len__(self) -> int:
        return self.opts.n_edits if self.opts.n_edits is not None else self._count()

    def records(self, start: int = 0, stop: int | None = None) -> Iterator[EditRecord]:
        n = len(self)
        if stop is None:
            stop = n
        if start < 0 or stop < start:
            raise DataError(f"{self.name}: invalid record range {start}..{stop}")
        if stop > n:
            raise DataError(f"{self.name}: asked for records {start}..{stop} but the dataset has {n} "
                            f"(file {self.report['file']}; set n_edits and cycle: true to repeat the file)")
        return self._iter(start, stop)

    def _iter(self, start: int, stop: int) -> Iterator[EditRecord]:
        base = self._count()
        i = start
        while i < stop:
            lap, offset = divmod(i, base)
            end = min(stop - lap * base, base)
            for record in self._read(offset, end):
                yield record if lap == 0 else replace(record, uid=f"{record.uid}#{lap}")
            i = lap * base + end

    def _read(self, start: int, stop: int) -> Iterator[EditRecord]:
        """Usable records start..stop, converted from slices of at most _SPAN raw rows of the mapped table.

        Pages of a memory map count in RSS once touched and stay counted while the map is open, so after
        _REMAP_ROWS raw rows read through it (a run streaming 1M edits through one records() call, or
        many calls) the map is re-opened (~3 ms): the pages read so far leave the process's RSS (they stay
        in the page cache). Measured on 2M rows: a full records() pass peaks at ~245 MB RSS this way,
        ~635 MB with one map kept open."""
        rows = self._rows[start:stop]
        i = 0
        while i < len(rows):
            lo = int(rows[i])
            j = int(np.searchsorted(rows, lo + _SPAN))
            hi = int(rows[j - 1]) + 1
            if self._column is None or self._mapped_rows >= _REMAP_ROWS:
                self._column, self._mapped_rows = None, 0
                self._column = arrow.open_rows(self.arrow_path)
            self._mapped_rows += hi - lo
            texts = self._column.slice(lo, hi - lo).to_pylist()
            for index in rows[i:j].tolist():
                yield self.convert(json.loads(texts[index - lo]), index, self.opts)
            i = j
