"""The Arrow conversion cache: each JSON data file is parsed once into an Arrow file that `datasets` memory-maps.

A data file is a top-level JSON array of objects (every editing data set: ZsRE, CounterFact,
UltraEditBench, ...) or JSON Lines; a UTF-8 BOM is allowed. Arrays are parsed with `ijson` (C backend,
constant memory), JSON Lines line by line with `json.loads`. Each row is stored as its JSON text in one
`large_string` column: the cache is schema-free, so a malformed row (`"alt": 7`) survives conversion and
the loader's row checks (strict or lenient) still see and report it.

The writer is pyarrow's IPC *stream* writer (`pa.ipc.new_stream`), batch by batch, so conversion memory is
one batch whatever the file size; `datasets.Dataset.from_file` memory-maps exactly that format. We do not
use `Dataset.from_generator`: it keys its cache on a pickled fingerprint of the generator (not on the
source file's path, size and mtime), writes through the dataset-builder machinery (info files, its own
locks and progress bars) into a folder layout we do not control, and infers a schema we do not want.

Cache entries live under `cache_dir("arrow")` ($LIFELONG_CACHE_DIR/arrow), named by the resolved source
path, its size, its mtime_ns and FORMAT_VERSION. A conversion writes a temporary file and renames it
atomically; concurrent conversions of the same file are serialised with a `filelock`. A conversion that
fails leaves no entry; a successful one removes the entries of older versions of the same file.
"""
from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import os
import re
from collections import deque
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from ..core.errors import DataError
from ..core.paths import cache_dir

FORMAT_VERSION = 1
COLUMN = "json"
SCHEMA = pa.schema([pa.field(COLUMN, pa.large_string())])
BATCH_BYTES = 4 << 20      # a record batch holds about this much JSON text (and at most BATCH_ROWS rows)
BATCH_ROWS = 32768
_READ = 1 << 20            # bytes per read of the source file
_BOM = codecs.BOM_UTF8
_WS = b" \t\r\n"
_EMPTY = "the file is empty (expected a JSON array of objects or JSON Lines)"
_ROW_END = {"end_map", "end_array", "string", "number", "boolean", "null"}


def cached_arrow(path: Path) -> Path:
    """The Arrow file holding the rows of `path`, converting the file first if no cache entry matches it."""
    path = Path(path).resolve()
    st = path.stat()
    place = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    version = hashlib.sha256(f"{FORMAT_VERSION}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)[:60]
    folder = cache_dir("arrow")
    target = folder / f"{stem}-{place}-{version}.arrow"
    if target.is_file():  # complete by construction: entries appear only by an atomic rename
        return target
    from filelock import FileLock

    with FileLock(str(folder / f"{stem}-{place}.lock")):
        if target.is_file():  # another process converted it while we waited
            return target
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        try:
            write_arrow(path, tmp)
            after = path.stat()
            if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                raise DataError(f"{path}: the file changed while it was being read; load it again")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        for old in folder.glob(f"{stem}-{place}-*.arrow"):  # older versions of the same file
            if old != target:
                old.unlink(missing_ok=True)
    return target


def write_arrow(src: Path, dst: Path) -> int:
    """Convert the JSON array / JSON Lines file `src` into the Arrow stream file `dst`; returns the row count."""
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_decimal).encode
    with open(src, "rb") as fh:
        start = len(_BOM) if fh.read(len(_BOM)) == _BOM else 0
        fh.seek(start)
        first = _first_byte(fh)
        if first is None:
            raise DataError(f"{src}: {_EMPTY}")
        fh.seek(start)
        texts = (_array_rows(src, fh, start, encode) if first == b"[" else _line_rows(src, fh, start))
        rows = 0
        with pa.OSFile(str(dst), "wb") as sink, pa.ipc.new_stream(sink, SCHEMA) as writer:
            batch: list[str] = []
            size = 0
            for text in texts:
                batch.append(text)
                size += len(text)
                if size >= BATCH_BYTES or len(batch) >= BATCH_ROWS:
                    writer.write_batch(pa.record_batch([pa.array(batch, pa.large_string())], schema=SCHEMA))
                    rows += len(batch)
                    batch, size = [], 0
            if batch:
                writer.write_batch(pa.record_batch([pa.array(batch, pa.large_string())], schema=SCHEMA))
                rows += len(batch)
    return rows


def _decimal(value):
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _first_byte(fh) -> bytes | None:
    """The first non-whitespace byte from the current position, or None at the end of the file."""
    while chunk := fh.read(_READ):
        text = chunk.lstrip(_WS)
        if text:
            return text[:1]
    return None


def _line_rows(src: Path, fh, offset: int) -> Iterator[str]:
    """JSON Lines: one JSON value per non-blank line, validated with json.loads, stored as its text."""
    row = 0
    for lineno, line in enumerate(fh, start=1):
        try:
            text = line.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise DataError(f"{src}: row {row}: not valid UTF-8 (byte {offset + exc.start}, line {lineno})") from None
        offset += len(line)
        if not text:
            continue
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            problem = f"{exc.msg} at line {lineno} column {exc.colno}"
            raise DataError(f"{src}: row {row}: malformed JSON ({problem})") from None
        yield text
        row += 1


class _BadUtf8(Exception):
    def __init__(self, offset: int):
        self.offset = offset


class _Utf8Reader:
    """The file as ijson reads it, validated as UTF-8 on the way so that an invalid byte is reported with
    its exact offset: the valid bytes before it are handed over first (so ijson yields every row that
    ends before it), and the next read raises."""

    def __init__(self, fh, offset: int):
        self.fh, self.offset = fh, offset  # offset: file position of the next byte handed over
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.bad: int | None = None

    def read(self, n: int = -1) -> bytes:
        if self.bad is not None:
            raise _BadUtf8(self.bad)
        data = self.fh.read(n)
        try:
            self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            held = len(exc.object) - len(data)  # bytes of an unfinished character from the previous read
            at = exc.start - held
            self.bad = self.offset + at
            if at <= 0:
                raise _BadUtf8(self.bad) from None
            data = data[:at]
        self.offset += len(data)
        return data


def _array_rows(src: Path, fh, offset: int, encode) -> Iterator[str]:
    """The rows of a top-level JSON array, parsed by ijson one at a time and re-encoded as JSON text."""
    import ijson

    row = 0
    try:
        # use_float=False: yajl's own integers overflow at 64 bits, so ijson hands numbers over as int
        # (any size) or Decimal; _decimal writes a Decimal back as the float json.loads would give.
        for value in ijson.items(_Utf8Reader(fh, offset), "item", use_float=False, buf_size=_READ):
            yield encode(value)
            row += 1
    except _BadUtf8 as exc:
        raise DataError(f"{src}: row {row}: not valid UTF-8 (byte {exc.offset})") from None
    except ijson.JSONError as exc:
        raise DataError(_array_error(src, offset, row, exc)) from None


def _array_error(src: Path, offset: int, row: int, exc: Exception) -> str:
    """The message for an ijson error after `row` complete rows."""
    text = exc.args[0] if exc.args else str(exc)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    problem = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if "premature EOF" in problem:
        last = _last_event(src, offset)
        if last == ("", "start_array"):
            return f"{src}: the JSON array is not closed (the file ends after '[')"
        if last is not None and last[0] == "item" and last[1] in _ROW_END:
            return f"{src}: the JSON array is not closed (the file ends after row {row - 1})"
        return f"{src}: row {row}: malformed JSON (the file ends inside the row)"
    if problem.startswith("parse error: after array element"):
        return f"{src}: row {row - 1}: malformed JSON (expected ',' or ']' after the row)"
    if "trailing garbage" in problem:
        return f"{src}: malformed JSON after the closing ']' of the array (after row {row - 1}: {problem})"
    return f"{src}: row {row}: malformed JSON ({problem})"


def _last_event(src: Path, offset: int) -> tuple[str, str] | None:
    """The last (prefix, event) ijson produces before the end of a truncated file (error path only)."""
    import ijson

    last: deque = deque(maxlen=1)
    with open(src, "rb") as fh:
        fh.seek(offset)
        with contextlib.suppress(ijson.JSONError):
            last.extend((prefix, event) for prefix, event, _ in ijson.parse(fh, buf_size=_READ))
    return last[0] if last else None


# -- reading --------------------------------------------------------------------------------------------

def scan(arrow_path: Path) -> Iterator[tuple[int, list[str]]]:
    """(index of the first row, row texts) per record batch, in file order.

    This full pass reads the file with ordinary buffered reads, one batch at a time, NOT through the
    memory map: pages of a memory-mapped file count in the process's RSS once touched and stay counted
    until the mapping is closed, so a mapped pass over an 800 MB file would show ~800 MB of RSS (clean,
    reclaimable page cache, but counted). Buffered reads keep it at about one batch (BATCH_BYTES)."""
    with pa.OSFile(str(arrow_path), "rb") as fh:
        row = 0
        for batch in pa.ipc.open_stream(fh):
            texts = batch.column(0).to_pylist()
            yield row, texts
            row += len(texts)


def open_rows(arrow_path: Path) -> pa.ChunkedArray:
    """The row texts of a cached file, memory-mapped through `datasets` (zero-copy; random access by slice)."""
    with quiet_datasets():
        import datasets

        dataset = datasets.Dataset.from_file(str(arrow_path), in_memory=False)
    return dataset.data.column(COLUMN)


@contextlib.contextmanager
def quiet_datasets():
    """datasets' progress bars and info logging off, restored afterwards."""
    import datasets
    from datasets.utils import logging as ds_logging

    bars = datasets.is_progress_bar_enabled()
    level = ds_logging.get_verbosity()
    datasets.disable_progress_bars()
    ds_logging.set_verbosity_error()
    try:
        yield
    finally:
        ds_logging.set_verbosity(level)
        if bars:
            datasets.enable_progress_bars()
