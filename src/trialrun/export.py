"""results.jsonl (refreshed as the run goes) and exports to JSONL and CSV.

Every file written here is written whole or not at all (`atomic_output`): a kill
midway leaves the previous file, or none, never a truncated one that looks valid.
The CSV's columns are described once, in `CSV_COLUMNS` and `CSV_PATTERN_COLUMNS`;
`csv_row` fills exactly those and docs/reference.md's column reference is generated from them.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from trialrun.errors import UsageError
from trialrun.store import Store

RESULTS_NAME = "results.jsonl"


class ResultsFile:
    """Appends committed records as they land; `rewrite` regenerates it from the store."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[str] | None = None

    def append(self, records: Iterable[str]) -> None:
        if self._handle is None:
            self._handle = self.path.open("a", encoding="utf-8")
        self._handle.write("".join(f"{record}\n" for record in records))
        self._handle.flush()

    def rewrite(self, store: Store) -> None:
        """Replace the file atomically with every committed record, in plan order."""
        self.close()
        write_atomic(self.path, (f"{record}\n" for record in store.records()))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


@contextmanager
def atomic_output(path: Path) -> Iterator[IO[str]]:
    """A text handle on a temporary file beside `path`, renamed onto `path` only when the
    block ends without error; an error removes it, a kill leaves it hidden (`.NAME.tmp`)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline="") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, chunks: Iterable[str]) -> None:
    with atomic_output(path) as handle:
        for chunk in chunks:
            handle.write(chunk)


# ------------------------------------------------------------------ CSV columns

CSV_COLUMNS: dict[str, str] = {
    "run_id": "The run the trial belongs to: tells `--multirun` variants (same trial ids) apart.",
    "trial_id": "Hash of item, model, grid values and repeat: the same in every run of a config.",
    "item_id": "The dataset item's id.",
    "model": "The model's label: its `name` in the config, else `provider/model`.",
    "repeat": "Repeat index, from 0.",
    "seed": "The trial's seed, derived from the experiment's seed and the trial id.",
    "status": "`done` or `failed`.",
    "turns": "How many turns were answered.",
    "response": "The last answered turn's text.",
    "finish_reason": "Why the model stopped on the last answered turn (`stop`, `length`, ...).",
    "request_id": "The provider's id of the last answered turn's call.",
    "served_model": "The model the provider says answered the last turn.",
    "input_tokens": "Input tokens, summed over the answered turns.",
    "output_tokens": "Output tokens, summed over the answered turns.",
    "total_tokens": "Input plus output tokens.",
    "cost_usd": "US dollars summed over the answered turns (a cache hit costs 0); empty when "
    "unknown: a turn without a price, or a failed trial with no answered turn.",
    "latency_s": "Seconds the answering call of each turn took, summed (0 for a cache hit).",
    "retries": "Calls made beyond the first, over all turns.",
    "cache_hits": "Turns answered from the response cache.",
    "error": "Why the trial failed; empty when done.",
    "started_at": "When the trial started (ISO 8601, UTC).",
    "finished_at": "When the trial's record was committed (ISO 8601, UTC).",
}
"""The fixed columns, in order, each with its meaning (rendered into docs/reference.md)."""

TURN_FIELDS = ("response", "finish_reason", "request_id", "served_model")
"""Per-turn columns: the last turn's unprefixed, earlier turns' as `turn<N>.<field>`."""

CSV_PATTERN_COLUMNS: dict[str, str] = {
    "grid.<key>": "The trial's value of each grid key.",
    "params.<name>": "Each sampling param actually sent (config, model and grid params, "
    "`seed`), less those the provider cannot take.",
    "item.<field>": "Each dataset field but the id; lists and mappings as JSON.",
    "scores.<name>": "Each score of `scores:` (`True`/`False`, a number, or empty when null).",
    "score_errors.<name>": "Why that score is null (the trial failed, no option found, ...).",
    **{
        f"turn<N>.{name}": f"`{name}` of earlier turn N (1 to `turns` - 1)." for name in TURN_FIELDS
    },
}
"""Columns that depend on the run (its grid, params, dataset, turns), after the fixed ones."""

CSV_FIELDS = list(CSV_COLUMNS)


def csv_row(record: dict[str, Any]) -> dict[str, Any]:
    """One flat CSV row: the fixed columns, then the run-dependent ones (see the docstrings)."""
    turns = record["turns"]
    row: dict[str, Any] = {
        "run_id": record["run_id"],
        **{key: record[key] for key in ("trial_id", "item_id", "model", "repeat", "seed")},
        "status": record["status"],
        "turns": len(turns),
        **_turn_cells(turns[-1] if turns else None, ""),
        "input_tokens": sum(t["usage"]["input"] for t in turns),
        "output_tokens": sum(t["usage"]["output"] for t in turns),
        "total_tokens": sum(t["usage"]["total"] for t in turns),
        "cost_usd": trial_cost(record),
        "latency_s": round(sum(t["latency_s"] for t in turns), 6),
        "retries": record["retries"],
        "cache_hits": sum(1 for t in turns if t["cache_hit"]),
        "error": record["error"] or "",
        "started_at": record["started_at"],
        "finished_at": record["finished_at"],
    }
    for group in ("grid", "params", "item", "scores", "score_errors"):
        row.update({f"{group}.{k}": _cell(v) for k, v in (record.get(group) or {}).items()})
    for index, turn in enumerate(turns[:-1]):
        row.update(_turn_cells(turn, f"turn{index + 1}."))
    return row


def trial_cost(record: dict[str, Any]) -> float | None:
    """The trial's cost, or None when unknown: any answered turn without a cost, or no
    answered turn at all (a failed call reports no usage, so nothing says what it cost).
    Records carry it as `cost_usd` (the executor's `trial_cost`); older ones are summed here."""
    if "cost_usd" in record:
        return record["cost_usd"]  # type: ignore[no-any-return]
    costs = [turn["cost_usd"] for turn in record["turns"]]
    if not costs or any(cost is None for cost in costs):
        return None
    return float(sum(costs))


def _turn_cells(turn: dict[str, Any] | None, prefix: str) -> dict[str, Any]:
    return {f"{prefix}{name}": (turn or {}).get(name) or "" for name in TURN_FIELDS}


def _cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else value


# ------------------------------------------------------------------ export


def export(store: Store, fmt: str, out: IO[str]) -> int:
    """Write every committed record to `out` as JSONL or CSV; returns the count."""
    if fmt == "jsonl":
        count = 0
        for record in store.records():
            out.write(record + "\n")
            count += 1
        return count
    if fmt == "csv":
        return _export_csv(store, out)
    raise UsageError(f"--format '{fmt}': expected jsonl or csv")


def export_file(store: Store, fmt: str, path: Path) -> int:
    """Export to `path` whole or not at all: a kill or an error midway leaves the file
    that was there before (or none); returns the count."""
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder; create it or choose another output path")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{folder}: folder not writable; choose another output path")
    with atomic_output(path) as handle:
        return export(store, fmt, handle)


def _export_csv(store: Store, out: IO[str]) -> int:
    # Run-dependent columns (grid.*, params.*, item.*, turnN.*) are known after a first pass.
    extra: dict[str, None] = {}
    for record in _parsed(store.records()):
        extra.update(dict.fromkeys(k for k in csv_row(record) if k not in CSV_COLUMNS))
    writer = csv.DictWriter(out, fieldnames=[*CSV_FIELDS, *extra], extrasaction="ignore")
    writer.writeheader()
    count = 0
    for record in _parsed(store.records()):
        writer.writerow(csv_row(record))
        count += 1
    return count


def _parsed(records: Iterable[str]) -> Iterator[dict[str, Any]]:
    return (json.loads(record) for record in records)
