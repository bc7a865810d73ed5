"""The synthetic fact world as a dataset (see lifelong/world.py). Options are WorldConfig's fields."""
from __future__ import annotations

from typing import Iterator

from ..core.config import fill
from ..core.records import EditRecord
from .world import World, WorldConfig


class SyntheticSource:
    def __init__(self, name: str, world: World):
        self.name = name
        self.world = world
        self.report = {"known_edits": world.n_known_edits}

    def __len__(self) -> int:
        return len(self.world)

    def records(self, start: int = 0, stop: int | None = None) -> Iterator[EditRecord]:
        return self.world.records(start, stop)

    def locality_pool(self) -> list[tuple[str, str]]:
        return self.world.locality_pool()


def load(name: str, options: dict, *, data_dir, where: str) -> SyntheticSource:
    return SyntheticSource(name, World(fill(WorldConfig, options, where)))
