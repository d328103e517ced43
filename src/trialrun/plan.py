"""Experiment → trials: stable ids, per-trial seeds, repeats, shards."""

from __future__ import annotations

import hashlib
import itertools
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from trialrun.config import Experiment
from trialrun.errors import UsageError
from trialrun.hashing import content_hash
from trialrun.types import Trial

SHARD_VARIABLES = (
    ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"),
    ("BATCH_TASK_INDEX", "BATCH_TASK_COUNT", ""),
)
"""(index, count, first index) variables `--shard auto` reads, in this order."""


@dataclass(frozen=True, slots=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str, environ: Mapping[str, str] | None = None) -> Shard:
        """`I/N`, or `auto`: from a SLURM job array or a Google Cloud Batch job's variables."""
        if text == "auto":
            return cls.from_env(os.environ if environ is None else environ)
        left, sep, right = text.partition("/")
        try:
            index, count = int(left), int(right)
        except ValueError:
            index, count = -1, 0
        if not sep or count < 1 or not 0 <= index < count:
            raise UsageError(f"--shard '{text}': expected I/N with 0 <= I < N, e.g. 0/4")
        return cls(index, count)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Shard:
        """This task's shard: SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT, or Google Cloud
        Batch's BATCH_TASK_INDEX/BATCH_TASK_COUNT (an array from 0; SLURM's `--array=1-N`
        counts from SLURM_ARRAY_TASK_MIN)."""
        for index_var, count_var, min_var in SHARD_VARIABLES:
            if index_var in environ and count_var in environ:
                try:
                    index = int(environ[index_var]) - int(environ.get(min_var, "0") or 0)
                    count = int(environ[count_var])
                except ValueError:
                    index, count = -1, 0
                if not 0 <= index < count:
                    raise UsageError(
                        f"--shard auto: {index_var}={environ[index_var]} and "
                        f"{count_var}={environ[count_var]} make no shard I/N with 0 <= I < N"
                    )
                return cls(index, count)
        raise UsageError(
            "--shard auto: neither SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT (a SLURM job "
            "array) nor BATCH_TASK_INDEX/BATCH_TASK_COUNT (Google Cloud Batch) is set; "
            "give --shard I/N"
        )

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
