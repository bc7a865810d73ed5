"""The dataset interface: an indexed or streamed source of EditRecords.

Loaders return an `EditSource`. Sources know their length and yield records in file order from any
start index, so a run can stream 1M edits turn by turn and re-read the edits made so far at an
evaluation checkpoint without ever holding them all in memory.
"""
from __future__ import annotations

from typing import Iterator, Protocol, Sequence, runtime_checkable

from ..records import EditRecord


@runtime_checkable
class EditSource(Protocol):
    name: str

    def __len__(self) -> int: ...

    def records(self, start: int = 0, stop: int | None = None) -> Iterator[EditRecord]: ...


class ListSource:
    """An in-memory source (small files, fixtures)."""

    def __init__(self, name: str, records: Sequence[EditRecord], report: dict | None = None):
        self.name = name
        self._records = list(records)
        self.report = report or {}  # loader notes: skipped rows, duplicates, truncations

    def __len__(self) -> int:
        return len(self._records)

    def records(self, start: int = 0, stop: int | None = None) -> Iterator[EditRecord]:
        yield from self._records[start:stop]
