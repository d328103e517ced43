"""results.jsonl (refreshed as the run goes) and exports to JSONL and CSV.

Every file written here is written whole or not at all (`atomic_output`): a kill
midway leaves the previous file, or none, never a truncated one that looks valid.
The CSV's columns are described once, in `CSV_COLUMNS` and `CSV_PATTERN_COLUMNS`;
`csv_row` fills exactly those and docs/reference.md's column reference is generated from them.
Parquet (pyarrow, the `parquet` extra) and `Run.to_pandas()` take the same columns plus the
verdicts (`flat_row`); `--partition-by FIELD` writes one file per value of a column.
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
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
    """Write every committed record to `out` as JSONL or CSV (parquet: `export_file`);
    returns the count."""
    if fmt == "jsonl":
        count = 0
        for record in store.records():
            out.write(record + "\n")
            count += 1
        return count
    if fmt == "csv":
        return _export_csv(store, out)
    if fmt == "parquet":
        raise UsageError("--format parquet writes a file: give -o FILE")
    raise UsageError(f"--format '{fmt}': expected jsonl, csv or parquet")


def export_file(store: Store, fmt: str, path: Path) -> int:
    """Export to `path` whole or not at all: a kill or an error midway leaves the file
    that was there before (or none); returns the count."""
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder; create it or choose another output path")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{folder}: folder not writable; choose another output path")
    if fmt == "parquet":
        return _write_parquet(store, path)
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


# ------------------------------------------------------------------ parquet, pandas, partitions

PARTITION_LIMIT = 256
"""Files one `--partition-by` export may write at most (each is open while it is written)."""
PARQUET_BATCH = 10_000
"""Rows per parquet row group: memory holds one group per open file."""


def flat_row(record: dict[str, Any]) -> dict[str, Any]:
    """The CSV row plus the verdicts: `judge.<field>` (the first judge's),
    `judges.<name>.<field>` (each judge's), and `judge_errors.<name>` (its error as JSON)."""
    row = csv_row(record)
    for field, value in (record.get("judge") or {}).items():
        row[f"judge.{field}"] = _cell(value)
    for name, verdict in (record.get("judges") or {}).items():
        for field, value in (verdict or {}).items():
            row[f"judges.{name}.{field}"] = _cell(value)
    for name, error in (record.get("judge_errors") or {}).items():
        row[f"judge_errors.{name}"] = None if error is None else _cell(error)
    return row


def _pyarrow() -> ModuleType:
    try:
        return importlib.import_module("pyarrow")
    except ImportError:
        raise UsageError("parquet needs pyarrow: pip install 'trialrun[parquet]'") from None


class Columns:
    """The columns of a run's rows, in first-seen order, with the kinds of values seen."""

    def __init__(self) -> None:
        self.kinds: dict[str, set[str]] = {}

    def see(self, row: dict[str, Any]) -> None:
        for key, value in row.items():
            seen = self.kinds.setdefault(key, set())
            if value is not None:
                seen.add("bool" if isinstance(value, bool) else type(value).__name__)

    def types(self) -> dict[str, str]:
        """Each column's arrow type: bool, int64, float64, or string (values of mixed
        kinds, or none but nulls, are written as text)."""
        return {key: _arrow_type(seen) for key, seen in self.kinds.items()}


def _arrow_type(seen: set[str]) -> str:
    if seen == {"bool"}:
        return "bool_"
    if seen == {"int"}:
        return "int64"
    if seen and seen <= {"int", "float"}:
        return "float64"
    return "string"


def _schema(types: dict[str, str]) -> Any:
    pa = _pyarrow()
    return pa.schema([(name, getattr(pa, kind)()) for name, kind in types.items()])


def _typed(row: dict[str, Any], types: dict[str, str]) -> dict[str, Any]:
    out = {}
    for name, kind in types.items():
        value = row.get(name)
        if value is not None and kind == "string" and not isinstance(value, str):
            value = json.dumps(value)
        elif value is not None and kind == "float64":
            value = float(value)
        out[name] = value
    return out


class _ParquetOut:
    """One parquet file being written in row groups of `PARQUET_BATCH` rows."""

    def __init__(self, path: Path, types: dict[str, str]) -> None:
        pq = importlib.import_module("pyarrow.parquet")
        self.types, self.schema = types, _schema(types)
        self.writer = pq.ParquetWriter(str(path), self.schema)
        self.rows: list[dict[str, Any]] = []

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(_typed(row, self.types))
        if len(self.rows) >= PARQUET_BATCH:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            table = _pyarrow().Table.from_pylist(self.rows, schema=self.schema)
            self.writer.write_table(table)
            self.rows = []

    def close(self) -> None:
        self.flush()
        self.writer.close()


def _write_parquet(store: Store, path: Path) -> int:
    """Every record as one parquet row (`flat_row`), whole or not at all; two passes over
    the store (the column types, then the rows), so memory holds one row group."""
    _pyarrow()
    columns = Columns()
    for record in _parsed(store.records()):
        columns.see(flat_row(record))
    tmp = path.with_name(f".{path.name}.tmp")
    count = 0
    try:
        out = _ParquetOut(tmp, columns.types())
        for record in _parsed(store.records()):
            out.write(flat_row(record))
            count += 1
        out.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count


def records_frame(store: Store) -> Any:
    """Every committed record as a pandas DataFrame, one row a trial, the parquet columns
    and types (through pyarrow when it is installed); pandas is optional."""
    try:
        pd = importlib.import_module("pandas")
    except ImportError:
        raise UsageError("to_pandas needs pandas: pip install 'trialrun[parquet]'") from None
    rows = [flat_row(r) for r in _parsed(store.records())]
    columns = Columns()
    for row in rows:
        columns.see(row)
    types = columns.types()
    typed = [_typed(row, types) for row in rows]
    try:
        pa = importlib.import_module("pyarrow")
    except ImportError:
        return pd.DataFrame(typed, columns=list(types))
    return pa.Table.from_pylist(typed, schema=_schema(types)).to_pandas()


def _file_stem(value: Any, taken: set[str]) -> str:
    text = "none" if value is None or value == "" else str(value)
    stem = re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("._")[:100] or "_"
    name, n = stem, 2
    while name in taken:
        name, n = f"{stem}-{n}", n + 1
    taken.add(name)
    return name


def export_partitioned(store: Store, fmt: str, folder: Path, field: str) -> dict[str, int]:
    """One file per value of the column `field` (`model`, `grid.concept`, `item.category`)
    in `folder`, named `<value>.<fmt>` (made safe for a file name), each with the columns
    of the whole run. Two passes over the store (values and columns, then rows); the files
    are written beside and moved in at the end, so a failure leaves the folder as it was.
    Returns records per file name."""
    if fmt == "parquet":
        _pyarrow()
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder}: not a folder; --partition-by writes a folder of files")
    names, columns = _partitions(store, fmt, field)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".partition-{os.getpid()}.tmp"
    tmp.mkdir(exist_ok=True)
    outs: dict[str, _PartitionOut] = {}
    try:
        for text in store.records():
            record = json.loads(text)
            row = flat_row(record)
            name = names[json.dumps(row[field], default=str)]
            if name not in outs:
                outs[name] = _PartitionOut(tmp / name, fmt, columns)
            outs[name].write(text, record, row)
        for out in outs.values():
            out.close()
        for name in outs:
            os.replace(tmp / name, folder / name)
    finally:
        for out in outs.values():
            out.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return {name: out.count for name, out in outs.items()}


def _partitions(store: Store, fmt: str, field: str) -> tuple[dict[str, str], Columns]:
    """The file name for each value of `field` (keyed by the value's JSON), and the run's
    columns (CSV: `csv_row`'s; parquet and JSONL: `flat_row`'s)."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    columns = Columns()
    for record in _parsed(store.records()):
        row = flat_row(record)
        if field not in row:
            raise UsageError(
                f"--partition-by {field}: no such column (e.g. model, status, grid.KEY, "
                "item.FIELD, scores.NAME, judge.FIELD)"
            )
        key = json.dumps(row[field], default=str)
        if key not in names:
            if len(names) >= PARTITION_LIMIT:
                raise UsageError(
                    f"--partition-by {field}: more than {PARTITION_LIMIT} values; "
                    "choose a field with fewer"
                )
            names[key] = f"{_file_stem(row[field], taken)}.{fmt}"
        columns.see(csv_row(record) if fmt == "csv" else row)
    return names, columns


class _PartitionOut:
    """One partition's file, open while the export runs."""

    def __init__(self, path: Path, fmt: str, columns: Columns) -> None:
        self.fmt, self.count, self.closed = fmt, 0, False
        self.parquet = _ParquetOut(path, columns.types()) if fmt == "parquet" else None
        self.handle = None if self.parquet else path.open("w", encoding="utf-8", newline="")
        self.csv: csv.DictWriter[str] | None = None
        if fmt == "csv" and self.handle is not None:
            fields = [*CSV_FIELDS, *(k for k in columns.kinds if k not in CSV_COLUMNS)]
            self.csv = csv.DictWriter(self.handle, fieldnames=fields, extrasaction="ignore")
            self.csv.writeheader()

    def write(self, text: str, record: dict[str, Any], row: dict[str, Any]) -> None:
        self.count += 1
        if self.parquet is not None:
            self.parquet.write(row)
        elif self.csv is not None:
            self.csv.writerow(csv_row(record))
        elif self.handle is not None:
            self.handle.write(text + "\n")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.parquet is not None:
            self.parquet.close()
        if self.handle is not None:
            self.handle.close()
