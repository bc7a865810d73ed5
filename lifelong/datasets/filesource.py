"""File-backed edit sources: the options, checks and bookkeeping every real-data loader shares.

A loader module defines its options (a subclass of `FileOptions`, so `fill` validates them and
refuses unknown keys) and a `convert(row, index, opts) -> EditRecord` that raises `RowError` for a
row that does not match the schema. `open_source` does the rest:

* the path is taken relative to the data dir; a missing file names the expected path and where
  the official file comes from;
* `strict: true` (default): the first malformed row raises a `DataError` naming file, row and field,
  at load time (before any edit). `strict: false` skips such rows and counts them in `source.report`;
* `max_prompt_chars`: prompts (edit prompt, rephrases, locality prompt) longer than this are counted
  in the report, and dropped if `long_prompts: skip`. Token-level limits are a model matter: the
  runner cuts over-long inputs from the left (`tokenization.collate(max_length=...)`), keeping the answer;
* duplicate edits (same prompt and target as an earlier row) are counted (`dedupe: true` drops them);
* `n_edits`: use the first N records. Asking for more than the file holds is an error unless
  `cycle: true`, which repeats the file (uids get a `#k` suffix for the k-th repetition);
* `stream: true`: records are re-read from the file on demand (constant memory), with byte-offset
  checkpoints so that `records(start, stop)` need not re-parse from the top. With `prescan: true`
  (default) the whole used range is validated and counted at load time.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping

from ..config import fill
from ..errors import DataError, MissingDataError
from ..records import EditRecord
from .jsonio import JsonRows, RowError

MAX_EXAMPLES = 20  # row messages / indices kept in a report


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
    stream: bool = False
    prescan: bool = True
    chunk_bytes: int = 1 << 20

    def validate(self) -> None:
        if not self.path.strip():
            raise ValueError("path must not be empty")
        if self.n_edits is not None and self.n_edits < 1:
            raise ValueError(f"n_edits must be >= 1, got {self.n_edits}")
        if self.max_prompt_chars is not None and self.max_prompt_chars < 1:
            raise ValueError(f"max_prompt_chars must be >= 1, got {self.max_prompt_chars}")
        if self.dedupe and not self.check_duplicates:
            raise ValueError("dedupe: true needs check_duplicates: true")
        if self.stream and self.dedupe and not self.prescan:
            raise ValueError("dedupe with stream: true needs prescan: true (duplicates depend on earlier rows)")
        if self.chunk_bytes < 16:
            raise ValueError("chunk_bytes must be >= 16")


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
                convert: Convert, official: str):
    """Validate options, find the file, and return an eager `FileSource` or a `StreamSource`."""
    opts = fill(options_cls, options, where)
    path = resolve_file(opts, data_dir, where, official)
    cls = StreamSource if opts.stream else FileSource
    return cls(name, path, opts, convert)


class RowChecker:
    """Turns raw rows into records, applying strict/lenient handling and the report's counters."""

    def __init__(self, path: Path, opts: FileOptions, convert: Convert, *, track: bool = True):
        self.path, self.opts, self.convert = path, opts, convert
        self.track = track  # count duplicates (only on a pass that sees every row from the start)
        self.report: dict[str, Any] = {
            "file": str(path), "rows_read": 0, "records": 0,
            "skipped": 0, "skipped_rows": [],
            "long_prompts": 0, "long_prompt_rows": [], "max_prompt_chars": opts.max_prompt_chars,
            "duplicates": 0, "duplicate_rows": [],
            "target_equals_ground_truth": 0, "target_has_outer_whitespace": 0,
            "no_locality_probe": 0,
        }
        self._seen: dict[int, int] = {}
        self.dropped: set[int] = set()  # raw rows not kept (any reason)

    def process(self, index: int, value: Any) -> EditRecord | None:
        rep = self.report
        rep["rows_read"] += 1
        try:
            if not isinstance(value, Mapping):
                raise RowError("<row>", f"expected a JSON object, got {type(value).__name__}")
            record = self.convert(value, index, self.opts)
        except RowError as exc:
            message = f"{self.path}: row {index}: {exc}"
            if self.opts.strict:
                raise DataError(f"{message} (strict mode; set strict: false to skip and count such rows)") from None
            rep["skipped"] += 1
            _note(rep["skipped_rows"], message)
            self.dropped.add(index)
            return None
        limit = self.opts.max_prompt_chars
        if limit is not None:
            longest = max(len(p) for p in (record.prompt, *record.rephrases, record.locality_prompt))
            if longest > limit:
                rep["long_prompts"] += 1
                _note(rep["long_prompt_rows"], index)
                if self.opts.long_prompts == "skip":
                    self.dropped.add(index)
                    return None
        if self.track and self.opts.check_duplicates:
            key = hash((record.prompt, record.target))
            first = self._seen.setdefault(key, index)
            if first != index:
                rep["duplicates"] += 1
                _note(rep["duplicate_rows"], (index, first))
                if self.opts.dedupe:
                    self.dropped.add(index)
                    return None
        if record.ground_truth is not None and record.ground_truth.strip() == record.target.strip():
            rep["target_equals_ground_truth"] += 1
        if record.target != record.target.strip():
            rep["target_has_outer_whitespace"] += 1
        if not record.locality_prompt:
            rep["no_locality_probe"] += 1
        rep["records"] += 1
        return record

    def finish(self) -> None:
        self._seen.clear()  # up to millions of entries; not needed once the pass is done


def _note(bucket: list, item: Any) -> None:
    if len(bucket) < MAX_EXAMPLES:
        bucket.append(item)


class _CycledSource:
    """`n_edits` / `cycle` / bounds on top of a base sequence of `_count()` records."""

    name: str
    opts: FileOptions
    report: dict

    def _count(self) -> int:  # records available in the file (within n_edits when not cycling)
        raise NotImplementedError

    def _base(self, start: int, stop: int) -> Iterator[EditRecord]:
        raise NotImplementedError

    def _check_size(self) -> None:
        n_file, want = self._count(), self.opts.n_edits
        if n_file == 0:
            raise DataError(f"{self.name}: {self.report['file']} holds no usable records")
        if want is not None and want > n_file and not self.opts.cycle:
            raise DataError(f"{self.name}: n_edits={want} but {self.report['file']} holds only {n_file} usable "
                            f"records; lower n_edits or set cycle: true to repeat the file")
        self.report["cycled"] = want is not None and want > n_file

    def _known_count(self) -> int | None:
        return self._count()

    def __len__(self) -> int:
        return self.opts.n_edits if self.opts.n_edits is not None else self._count()

    def records(self, start: int = 0, stop: int | None = None) -> Iterator[EditRecord]:
        known = self._known_count()
        n = self.opts.n_edits if self.opts.n_edits is not None else known
        if stop is None:
            stop = len(self) if n is None else n
        if start < 0 or stop < start:
            raise DataError(f"{self.name}: invalid record range {start}..{stop}")
        if n is not None and stop > n:
            raise DataError(f"{self.name}: asked for records {start}..{stop} but the dataset has {n} "
                            f"(file {self.report['file']}; set n_edits and cycle: true to repeat the file)")
        return self._iter(start, stop)

    def _iter(self, start: int, stop: int) -> Iterator[EditRecord]:
        if not self.opts.cycle:
            produced = 0
            for record in self._base(start, stop):
                produced += 1
                yield record
            if produced < stop - start:
                raise DataError(f"{self.name}: asked for records {start}..{stop} but {self.report['file']} holds "
                                f"only {start + produced} usable records; lower n_edits or set cycle: true")
            return
        base = self._count()
        i = start
        while i < stop:
            lap, offset = divmod(i, base)
            end = min(stop - lap * base, base)
            for record in self._base(offset, end):
                yield record if lap == 0 else replace(record, uid=f"{record.uid}#{lap}")
            i = lap * base + end


class FileSource(_CycledSource):
    """All (used) records in memory; the file is read once, streaming, at construction."""

    def __init__(self, name: str, path: Path, opts: FileOptions, convert: Convert):
        self.name, self.path, self.opts = name, path, opts
        checker = RowChecker(path, opts, convert)
        reader = JsonRows(path, chunk_size=opts.chunk_bytes)
        self._records: list[EditRecord] = []
        limit = None if opts.cycle else opts.n_edits
        for index, value in reader.rows():
            record = checker.process(index, value)
            if record is not None:
                self._records.append(record)
                if limit is not None and len(self._records) >= limit:
                    break
        checker.finish()
        self.report = checker.report
        self.report["complete"] = True
        self._check_size()

    def _count(self) -> int:
        return len(self._records)

    def _base(self, start: int, stop: int) -> Iterator[EditRecord]:
        yield from self._records[start:stop]


class StreamSource(_CycledSource):
    """Records re-read from the file on demand; memory stays constant whatever the file size.

    Rows are parsed again on every `records()` call, from the nearest byte-offset checkpoint at or
    before `start` (one every `every` rows, recorded on earlier passes). `len()` needs one counting
    pass, done at load time with `prescan: true`, which also validates the used rows and fills the
    report (duplicates included) before any edit.
    """

    def __init__(self, name: str, path: Path, opts: FileOptions, convert: Convert, *, every: int = 1000):
        self.name, self.path, self.opts, self.convert = name, path, opts, convert
        self.reader = JsonRows(path, chunk_size=opts.chunk_bytes, every=every)
        self._valid_before: dict[int, int] = {0: 0}  # raw checkpoint row -> usable records before it
        self._n: int | None = None
        self._dropped: set[int] | None = None        # known once a full pass has run
        self.report: dict[str, Any] = {"file": str(path), "complete": False}
        if opts.prescan:
            self._scan()

    def _scan(self) -> None:
        checker = RowChecker(self.path, self.opts, self.convert)
        limit = None if self.opts.cycle else self.opts.n_edits
        n = 0
        for index, value in self.reader.rows():
            if index % self.reader.every == 0:
                self._valid_before.setdefault(index, n)
            if checker.process(index, value) is not None:
                n += 1
                if limit is not None and n >= limit:
                    break
        checker.finish()
        self._n, self._dropped = n, checker.dropped
        self.report = checker.report
        self.report["complete"] = True
        self._check_size()

    def _count(self) -> int:
        if self._n is None:
            self._scan()
        return self._n

    def _known_count(self) -> int | None:
        return self._n

    @property
    def bytes_read(self) -> int:
        """Bytes of the file read by the latest pass."""
        return self.reader.bytes_read

    def _base(self, start: int, stop: int) -> Iterator[EditRecord]:
        if start >= stop:
            return
        # the latest checkpoint whose count of usable records before it is known and <= start
        candidates = [r for r, before in self._valid_before.items()
                      if before <= start and (r == 0 or r in self.reader.checkpoints)]
        raw = max(candidates)
        count = self._valid_before[raw]
        offset = None if raw == 0 else self.reader.checkpoints[raw]
        checker = RowChecker(self.path, self.opts, self.convert, track=False)
        for index, value in self.reader.rows(raw, offset):
            if index % self.reader.every == 0:
                self._valid_before.setdefault(index, count)
            if self._dropped is not None and index in self._dropped:
                continue
            record = checker.process(index, value)
            if record is None:
                continue
            if count >= start:
                yield record
            count += 1
            if count >= stop:
                return
