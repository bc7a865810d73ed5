"""Streaming JSON rows and row validation helpers shared by the dataset loaders.

`JsonRows` reads a file that is either one JSON array of objects (the format of every editing data
set: ZsRE, CounterFact, UltraEditBench, ...) or JSON Lines / concatenated objects, one object at a
time. It never holds more than one chunk (plus one partial row) of text: it decodes UTF-8
incrementally and parses each row with `json.JSONDecoder.raw_decode`, so an 800 MB UltraEditBench
file is streamed in constant memory.

It can also resume at a byte offset it recorded earlier (`checkpoints`: the offset of every
`every`-th row), which is what lets a streamed source serve `records(start, stop)` for a late start
without re-parsing the whole file.

The validation helpers raise `RowError(field, problem)`; the sources turn it into a `DataError`
that names the file, the row index and the field (strict mode) or count it (lenient mode).
"""
from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..errors import DataError

_WS = " \t\r\n"
_BOM = codecs.BOM_UTF8


class RowError(Exception):
    """A row does not match the schema: `field` is the offending key, `problem` says how."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"field {field!r}: {problem}")
        self.field = field
        self.problem = problem


class _Cursor:
    """Decoded text of an open file, consumed left to right; knows the byte offset of buf[0]."""

    def __init__(self, path: Path, fh, chunk_size: int, dropped: int):
        self.path, self.fh, self.chunk_size = path, fh, chunk_size
        self.dropped = dropped      # bytes of the file before buf[0]
        self.buf, self.pos, self.eof = "", 0, False
        self.bytes_read = 0
        self._inc = codecs.getincrementaldecoder("utf-8")(errors="strict")
        self._decoder = json.JSONDecoder()

    def trim(self) -> None:
        """Drop the consumed text (buf[:pos]), keeping the byte offset of buf[0] exact."""
        if self.pos:
            self.dropped += len(self.buf[: self.pos].encode("utf-8"))
            self.buf, self.pos = self.buf[self.pos :], 0

    def more(self) -> bool:
        if self.eof:
            return False
        data = self.fh.read(self.chunk_size)
        self.bytes_read += len(data)
        self.trim()
        try:
            text = self._inc.decode(data, final=not data)
        except UnicodeDecodeError:
            raise DataError(f"{self.path}: not valid UTF-8 (after byte {self.dropped + len(self.buf.encode())})") from None
        self.buf += text
        if not data:
            self.eof = True
        return True

    def skip_ws(self) -> bool:
        """Advance past whitespace; False at the end of the file."""
        while True:
            buf, pos = self.buf, self.pos
            while pos < len(buf) and buf[pos] in _WS:
                pos += 1
            self.pos = pos
            if pos < len(buf):
                return True
            if not self.more():
                return False

    def peek(self) -> str:
        return self.buf[self.pos]

    def decode(self, row: int) -> Any:
        """raw_decode one value at pos, reading more text while the value is incomplete."""
        while True:
            try:
                value, end = self._decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if self.more():
                    continue
                raise DataError(f"{self.path}: row {row}: malformed JSON ({exc.msg})") from None
            if end == len(self.buf) and not self.eof and self.more():
                continue  # a bare number or literal may continue in the next chunk
            self.pos = end
            return value


class JsonRows:
    """Row-by-row reader of a JSON array file or a JSON Lines file.

    `rows(start_row, offset)` yields `(row_index, value)`. `bytes_read` counts the bytes of the file
    read by the latest `rows()` call (tests use it to prove that a partial read stays partial).
    """

    def __init__(self, path: str | Path, *, chunk_size: int = 1 << 20, every: int = 1000):
        self.path = Path(path)
        self.chunk_size = max(16, int(chunk_size))
        self.every = max(1, int(every))
        self.checkpoints: dict[int, int] = {}   # row index -> byte offset where that row starts
        self.array: bool | None = None         # True: one JSON array; False: JSON Lines
        self.bytes_read = 0

    def nearest_checkpoint(self, row: int) -> tuple[int, int | None]:
        """The latest recorded (row, byte offset) at or before `row`; (0, None) if none."""
        best = max((r for r in self.checkpoints if r <= row), default=None)
        return (0, None) if best is None else (best, self.checkpoints[best])

    def rows(self, start_row: int = 0, offset: int | None = None) -> Iterator[tuple[int, Any]]:
        """Yield (row_index, value) from the start of the file, or from `offset`, a recorded
        checkpoint: the byte offset at which row `start_row` begins."""
        self.bytes_read = 0
        with open(self.path, "rb") as fh:
            if offset is None:
                skip = 3 if fh.read(3) == _BOM else 0
                fh.seek(skip)
                cur = _Cursor(self.path, fh, self.chunk_size, skip)
            else:
                if self.array is None:
                    raise ValueError("resuming needs an earlier pass that detected the file format")
                fh.seek(offset)
                cur = _Cursor(self.path, fh, self.chunk_size, offset)
            try:
                yield from self._rows(cur, start_row, fresh=offset is None)
            finally:
                self.bytes_read = cur.bytes_read

    def _rows(self, cur: _Cursor, row: int, fresh: bool) -> Iterator[tuple[int, Any]]:
        where = str(self.path)
        if fresh:
            if not cur.skip_ws():
                raise DataError(f"{where}: the file is empty (expected a JSON array of objects or JSON Lines)")
            self.array = cur.peek() == "["
            if self.array:
                cur.pos += 1
                if not cur.skip_ws():
                    raise DataError(f"{where}: the JSON array is not closed (the file ends after '[')")
                if cur.peek() == "]":
                    return
        while True:
            if not cur.skip_ws():
                if self.array:
                    raise DataError(f"{where}: the JSON array is not closed (the file ends after row {row - 1})")
                return
            if row % self.every == 0 and row not in self.checkpoints:
                cur.trim()
                self.checkpoints[row] = cur.dropped
            value = cur.decode(row)
            yield row, value
            row += 1
            if self.array:
                if not cur.skip_ws():
                    raise DataError(f"{where}: the JSON array is not closed (the file ends after row {row - 1})")
                ch = cur.peek()
                if ch == "]":
                    return
                if ch != ",":
                    raise DataError(f"{where}: row {row - 1}: malformed JSON (expected ',' or ']' after the row, "
                                    f"found {ch!r})")
                cur.pos += 1


def count_rows(path: str | Path) -> int:
    """Number of rows of a JSON array / JSON Lines file, by one streaming pass."""
    n = 0
    for n, _ in enumerate(JsonRows(path).rows(), start=1):
        pass
    return n


# -- row validation -------------------------------------------------------------------------------

def req_str(row: Mapping[str, Any], field: str, *, empty_ok: bool = False) -> str:
    """A required string field (non-empty after stripping unless empty_ok)."""
    if field not in row:
        raise RowError(field, "missing")
    value = row[field]
    if not isinstance(value, str):
        raise RowError(field, f"expected a string, got {type(value).__name__} {_short(value)}")
    if not empty_ok and not value.strip():
        raise RowError(field, f"empty string {value!r}")
    return value


def opt_str(row: Mapping[str, Any], field: str) -> str | None:
    """An optional string field: absent or null gives None; anything else must be a non-empty string."""
    value = row.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RowError(field, f"expected a string or null, got {type(value).__name__} {_short(value)}")
    if not value.strip():
        raise RowError(field, f"empty string {value!r}")
    return value


def str_list(row: Mapping[str, Any], field: str, *, min_len: int = 1) -> list[str]:
    """A required list of non-empty strings with at least `min_len` items."""
    if field not in row:
        raise RowError(field, "missing")
    value = row[field]
    if not isinstance(value, list):
        raise RowError(field, f"expected a list of strings, got {type(value).__name__} {_short(value)}")
    if len(value) < min_len:
        raise RowError(field, f"expected at least {min_len} item(s), got {len(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise RowError(f"{field}[{i}]", f"expected a string, got {type(item).__name__} {_short(item)}")
        if not item.strip():
            raise RowError(f"{field}[{i}]", f"empty string {item!r}")
    return value


def req_map(row: Mapping[str, Any], field: str) -> Mapping[str, Any]:
    if field not in row:
        raise RowError(field, "missing")
    value = row[field]
    if not isinstance(value, Mapping):
        raise RowError(field, f"expected an object, got {type(value).__name__} {_short(value)}")
    return value


def nested(row: Mapping[str, Any], path: str, check=req_str):
    """`nested(row, "requested_rewrite.target_new.str")`: walk objects, report the full dotted path."""
    parts = path.split(".")
    node: Any = row
    for depth, part in enumerate(parts[:-1]):
        try:
            node = req_map(node, part)
        except RowError as exc:
            raise RowError(".".join(parts[: depth + 1]), exc.problem) from None
    try:
        return check(node, parts[-1])
    except RowError as exc:
        raise RowError(".".join(parts[:-1] + [exc.field]), exc.problem) from None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
