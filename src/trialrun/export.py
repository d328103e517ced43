"""results.jsonl (refreshed as the run goes) and exports to JSONL and CSV."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator
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


def write_atomic(path: Path, chunks: Iterable[str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8", newline="") as handle:
        for chunk in chunks:
            handle.write(chunk)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


CSV_FIELDS = [
    "trial_id",
    "item_id",
    "model",
    "repeat",
    "seed",
    "status",
    "turns",
    "response",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cost_usd",
    "latency_s",
    "retries",
    "cache_hits",
    "error",
    "started_at",
    "finished_at",
]


def csv_row(record: dict[str, Any]) -> dict[str, Any]:
    """One flat CSV row: grid values as `grid.<key>`, item fields as `item.<key>`, turns joined."""
    turns = record["turns"]
    costs = [t["cost_usd"] for t in turns]
    row: dict[str, Any] = {
        "trial_id": record["trial_id"],
        "item_id": record["item_id"],
        "model": record["model"],
        "repeat": record["repeat"],
        "seed": record["seed"],
        "status": record["status"],
        "turns": len(turns),
        "response": turns[-1]["response"] if turns else "",
        "input_tokens": sum(t["usage"]["input"] for t in turns),
        "output_tokens": sum(t["usage"]["output"] for t in turns),
        "total_tokens": sum(t["usage"]["total"] for t in turns),
        "cost_usd": None if any(c is None for c in costs) else sum(costs),
        "latency_s": round(sum(t["latency_s"] for t in turns), 6),
        "retries": record["retries"],
        "cache_hits": sum(1 for t in turns if t["cache_hit"]),
        "error": record["error"] or "",
        "started_at": record["started_at"],
        "finished_at": record["finished_at"],
    }
    for key, value in record["grid"].items():
        row[f"grid.{key}"] = _cell(value)
    for key, value in record["item"].items():
        row[f"item.{key}"] = _cell(value)
    for index, turn in enumerate(turns[:-1] if len(turns) > 1 else []):
        row[f"turn{index + 1}.response"] = turn["response"]
    return row


def _cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else value


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


def _export_csv(store: Store, out: IO[str]) -> int:
    # Extra columns (grid.*, item.*, turnN.*) are known only after a first pass.
    extra: dict[str, None] = {}
    for record in _parsed(store.records()):
        extra.update(dict.fromkeys(k for k in csv_row(record) if k not in CSV_FIELDS))
    writer = csv.DictWriter(out, fieldnames=[*CSV_FIELDS, *extra], extrasaction="ignore")
    writer.writeheader()
    count = 0
    for record in _parsed(store.records()):
        writer.writerow(csv_row(record))
        count += 1
    return count


def _parsed(records: Iterable[str]) -> Iterator[dict[str, Any]]:
    return (json.loads(record) for record in records)
