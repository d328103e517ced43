"""Experiment → trials: stable ids, per-trial seeds, repeats, shards."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from trialrun.config import Experiment
from trialrun.errors import UsageError


def canonical(value: Any) -> str:
    """Canonical JSON: sorted keys, no spaces, UTF-8 kept; the input of every content hash."""
    return canonical_bytes(value).decode()


def canonical_bytes(value: Any) -> bytes:
    if _same_in_orjson(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # integers beyond 64 bits, or types orjson does not know
            pass
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode()


def _same_in_orjson(value: Any) -> bool:
    """False where orjson's text differs from json.dumps: floats below 1e-4 (0.00001 vs 1e-05), NaN.

    On the hot path (every cache key, request and record): a loop over a stack, exact type
    checks first, since the values are nearly all strings in dicts and lists."""
    stack = [value]
    pop, push_all = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is str or kind is int or kind is bool or item is None:
            continue
        if kind is dict:
            push_all(item.values())
        elif kind is list or kind is tuple:
            push_all(item)
        elif isinstance(item, float):
            if not (math.isfinite(item) and (item == 0.0 or abs(item) >= 1e-4)):
                return False
        elif isinstance(item, dict):
            push_all(item.values())
        elif isinstance(item, list | tuple):
            push_all(item)
    return True


def content_hash(value: Any) -> str:
    return hashlib.sha256(canonical_bytes(value)).hexdigest()


@dataclass(frozen=True, slots=True)
class Trial:
    seq: int
    trial_id: str
    item_id: str
    model: str
    """The model entry's label (its `name`, else `provider/model-id`)."""
    grid: dict[str, Any]
    repeat: int
    seed: int


@dataclass(frozen=True, slots=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        left, sep, right = text.partition("/")
        try:
            index, count = int(left), int(right)
        except ValueError:
            index, count = -1, 0
        if not sep or count < 1 or not 0 <= index < count:
            raise UsageError(f"--shard '{text}': expected I/N with 0 <= I < N, e.g. 0/4")
        return cls(index, count)

    def holds(self, trial_id: str) -> bool:
        return int(trial_id[2:], 16) % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def trial_id(name: str, model: str, item_id: str, grid: dict[str, Any], repeat: int) -> str:
    return "t_" + content_hash([name, model, item_id, grid, repeat])[:16]


def trial_seed(experiment_seed: int, tid: str) -> int:
    digest = hashlib.sha256(f"{experiment_seed}:{tid}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def cells(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every point of the grid, in config order, as a list: only for grids known to be small."""
    return list(iter_cells(grid))


def iter_cells(grid: dict[str, list[Any]]) -> Iterator[dict[str, Any]]:
    """Every point of the grid, in config order, one at a time (a grid can hold millions)."""
    keys = list(grid)
    return (dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values()))


def cell_count(grid: dict[str, list[Any]]) -> int:
    return math.prod(len(values) for values in grid.values())


def cell_at(grid: dict[str, list[Any]], index: int) -> dict[str, Any]:
    """The `index`-th cell of `iter_cells(grid)` (modulo the count), without the ones before it."""
    cell: dict[str, Any] = {}
    index %= cell_count(grid)
    for key in reversed(list(grid)):
        values = grid[key]
        index, position = divmod(index, len(values))
        cell[key] = values[position]
    return {key: cell[key] for key in grid}


def count_trials(experiment: Experiment, n_items: int) -> int:
    return n_items * len(experiment.models) * cell_count(experiment.grid) * experiment.repeats


SHARED_CELLS = 10_000
"""Up to this many grid cells are built once and shared by every trial; more are rebuilt
as they are reached, so memory does not grow with the grid."""


def expand(
    experiment: Experiment,
    item_ids: list[str],
    shard: Shard | None = None,
    limit: int | None = None,
) -> Iterator[Trial]:
    """Yield the trials in a fixed order: item, then model, then grid cell, then repeat."""
    grid = experiment.grid
    shared = cells(grid) if cell_count(grid) <= SHARED_CELLS else None
    labels = [m.label for m in experiment.models]
    seq = 0
    for item_id in item_ids:
        for label in labels:
            for cell in shared if shared is not None else iter_cells(grid):
                for repeat in range(experiment.repeats):
                    tid = trial_id(experiment.name, label, item_id, cell, repeat)
                    if shard is not None and not shard.holds(tid):
                        continue
                    if limit is not None and seq >= limit:
                        return
                    yield Trial(
                        seq, tid, item_id, label, cell, repeat, trial_seed(experiment.seed, tid)
                    )
                    seq += 1
