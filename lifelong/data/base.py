"""The dataset interface: an indexed source of EditRecords.

Loaders return an `EditSource`. Sources know their length and yield records in file order from any
start index (random access), so a run can stream 1M edits turn by turn and re-read the edits made so
far at an evaluation checkpoint without ever holding them all in memory (file-backed sources read a
memory-mapped Arrow conversion of the file: source.py). `report` holds the loader's notes.
"""
from __future__ import annotations

from typing import Iterator, Protocol, Sequence, runtime_checkable

from ..core.records import EditRecord


@runtime_checkable
class EditSource(Protocol):
    name: str
    report: dict

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
