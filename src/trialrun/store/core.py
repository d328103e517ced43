"""The run tables: meta, items, trials, attempts, records and events.

A trial is `done` only in the same transaction that commits its record. Writes are
grouped: callers add rows to an in-memory buffer and `flush()` commits them in one
transaction, so commits do not cap throughput and nothing is reported done before
it is durable.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from trialrun.errors import StoreError
from trialrun.hashing import canonical
from trialrun.store.annotations import AnnotationTables
from trialrun.store.base import Buffer
from trialrun.store.batches import BatchTables
from trialrun.store.browse import BrowseQueries
from trialrun.store.judgments import JudgmentTables
from trialrun.store.rows import PendingTrial, RecordRow
from trialrun.store.schema import MIGRATIONS, STATES, connect, migrate, utcnow
from trialrun.types import Trial

LIVE_REFRESH_S = 5.0
"""A running process rewrites its unchanged `live` state this often, so `status` can tell
a live snapshot from a stale one."""


class Store(BatchTables, JudgmentTables, AnnotationTables, BrowseQueries):
    """One run's database. Writers buffer rows and `flush()` commits them together.

    `with Store(path) as store:` closes it at the end of the block."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        if not path.exists():
            raise StoreError(f"{path}: no trialrun database here")
        try:
            self.conn = connect(path, readonly=readonly)
            if readonly:
                self._check_version()
            else:
                migrate(self.conn, path)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: not a usable trialrun database ({exc})") from None
        self._buffer = Buffer()
        self._live_written: tuple[str, float] = ("", 0.0)

    @classmethod
    def create(cls, path: Path) -> Store:
        connect(path).close()
        return cls(path)

    def _check_version(self) -> None:
        applied = {row[0] for row in self.conn.execute("SELECT name FROM migrations")}
        if applied - {name for name, _ in MIGRATIONS}:
            raise StoreError(
                f"{self.path}: written by a newer trialrun; upgrade trialrun to open it"
            )

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        """Closes the connection; buffered rows not flushed are dropped, as with `close()`."""
        self.close()

    # ------------------------------------------------------------ plan

    def set_meta(self, values: dict[str, Any]) -> None:
        rows = [(k, canonical(v)) for k, v in values.items()]
        with self._transaction():
            self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", rows)

    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM meta")}

    def add_items(self, items: Iterable[tuple[str, str]]) -> None:
        """(item id, the item's canonical JSON) pairs, as `Dataset.encoded()` gives them."""
        with self._transaction():
            self.conn.executemany("INSERT INTO items VALUES (?, ?)", items)

    def items(self) -> dict[str, dict[str, Any]]:
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT item_id, data FROM items")}

    def add_trials(self, trials: Iterable[tuple[Trial, str]], chunk: int = 5000) -> int:
        """Insert (trial, lane) pairs in chunks inside one transaction; returns the count."""
        count = 0
        with self._transaction():
            batch: list[tuple[Any, ...]] = []
            for trial, lane in trials:
                batch.append(
                    (
                        trial.seq,
                        trial.trial_id,
                        trial.item_id,
                        trial.model,
                        lane,
                        canonical(trial.grid),
                        trial.repeat,
                        trial.seed,
                    )
                )
                if len(batch) >= chunk:
                    count += self._insert_trials(batch)
                    batch = []
            count += self._insert_trials(batch)
        return count

    def _insert_trials(self, rows: list[tuple[Any, ...]]) -> int:
        try:
            self.conn.executemany(
                "INSERT INTO trials (seq, trial_id, item_id, model, lane, grid, repeat, seed) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"{self.path}: two trials share an id ({exc})") from None
        return len(rows)

    # ------------------------------------------------------------ scheduling

    def lanes(self) -> list[str]:
        return [
            row[0] for row in self.conn.execute("SELECT DISTINCT lane FROM trials ORDER BY lane")
        ]

    def reset_running(self, *, include_failed: bool = False) -> int:
        """Make trials left `running` by a stopped process pending again (and failed ones, if asked)."""
        states = ("running", "failed") if include_failed else ("running",)
        marks = ",".join("?" * len(states))
        with self._transaction():
            cur = self.conn.execute(
                f"UPDATE trials SET state='pending', updated_at=? WHERE state IN ({marks})",
                (utcnow(), *states),
            )
            if include_failed:
                self.conn.execute("DELETE FROM records WHERE status='failed'")
        return cur.rowcount

    def claim_pending(self, lane: str, after_seq: int, limit: int) -> list[PendingTrial]:
        """The next pending trials of a lane in plan order (with their items), marked `running`."""
        rows = self.conn.execute(
            "SELECT t.seq, t.trial_id, t.item_id, i.data, t.model, t.grid, t.repeat, t.seed "
            "FROM trials t JOIN items i ON i.item_id = t.item_id "
            "WHERE t.lane=? AND t.state='pending' AND t.seq>? ORDER BY t.seq LIMIT ?",
            (lane, after_seq, limit),
        ).fetchall()
        if rows:
            with self._transaction():
                self.conn.executemany(
                    "UPDATE trials SET state='running', updated_at=? WHERE seq=?",
                    [(utcnow(), row[0]) for row in rows],
                )
        return [
            PendingTrial(r[0], r[1], r[2], orjson.loads(r[3]), r[4], orjson.loads(r[5]), r[6], r[7])
            for r in rows
        ]

    # ------------------------------------------------------------ buffered writes

    def add_record(self, record: RecordRow) -> None:
        """Buffer a finished trial's record; the trial is `done` (or `failed`) at the flush
        that commits it, never before."""
        self._buffer.records.append(record)

    def add_event(self, kind: str, detail: str) -> None:
        self._buffer.events.append((utcnow(), kind, detail))

    def buffered(self) -> int:
        return len(self._buffer)

    def flush(self, live: dict[str, Any] | None = None) -> list[tuple[str, str]]:
        """Commit everything buffered in one transaction; returns the (status, record) committed.

        `live` is what the running process is doing now (requests in flight, waits), kept in
        meta under `live` for `status`; it is written with the rows, or alone when it
        changed or is a few seconds old."""
        buffer, self._buffer = self._buffer, Buffer()
        live_row = self._live_row(live)
        if not len(buffer) and live_row is None:
            return []
        try:
            self._commit(buffer, live_row)
        except BaseException:
            self._restore(buffer)  # nothing is lost: the rows wait for the next flush
            raise
        return [(row.status, row.record) for row in buffer.records]

    def _live_row(self, live: dict[str, Any] | None) -> str | None:
        if live is None:
            return None
        state = canonical({k: v for k, v in live.items() if k != "at"})
        last_state, last_at = self._live_written
        if state == last_state and time.monotonic() - last_at < LIVE_REFRESH_S:
            return None
        self._live_written = (state, time.monotonic())
        return canonical(live)

    def clear_live(self) -> None:
        """The process stops running this store: nothing is in flight any more."""
        with self._transaction():
            self.conn.execute("DELETE FROM meta WHERE key='live'")

    def _restore(self, buffer: Buffer) -> None:
        self._buffer.attempts[:0] = buffer.attempts
        self._buffer.records[:0] = buffer.records
        self._buffer.events[:0] = buffer.events
        self._buffer.judgments[:0] = buffer.judgments
        self._buffer.patches[:0] = buffer.patches

    def _commit(self, buffer: Buffer, live_row: str | None = None) -> None:
        now = utcnow()
        with self._transaction():
            if live_row is not None:
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('live', ?)", (live_row,))
            self.write_attempts(buffer.attempts)
            self.conn.executemany(
                "INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [record.row() for record in buffer.records],
            )
            self.conn.executemany(
                "UPDATE trials SET state=?, updated_at=? WHERE trial_id=?",
                [(record.status, now, record.trial_id) for record in buffer.records],
            )
            self.write_judgments(buffer.judgments, buffer.patches)
            self.conn.executemany(
                "INSERT INTO events (at, kind, detail) VALUES (?, ?, ?)", buffer.events
            )

    def replace_records(self, records: Iterable[tuple[str, str]], meta: dict[str, Any]) -> int:
        """Replace committed records' JSON, (trial id, record) pairs, and set `meta`, all in
        one transaction (`trialrun score` rewriting scores); returns the records replaced."""
        with self._transaction():
            cursor = self.conn.executemany(
                "UPDATE records SET record=? WHERE trial_id=?",
                ((record, trial_id) for trial_id, record in records),
            )
            self.conn.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [(k, canonical(v)) for k, v in meta.items()],
            )
        return cursor.rowcount

    # ------------------------------------------------------------ reading

    def stored_response(self, cache_key: str) -> str | None:
        """A response this run already committed for the same request (used after a crash)."""
        row = self.conn.execute(
            "SELECT response FROM attempts WHERE cache_key=? AND response IS NOT NULL LIMIT 1",
            (cache_key,),
        ).fetchone()
        return row[0] if row else None

    def has_attempts(self) -> bool:
        return self.conn.execute("SELECT 1 FROM attempts LIMIT 1").fetchone() is not None

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for state, n in self.conn.execute("SELECT state, COUNT(*) FROM trials GROUP BY state"):
            counts[state] = n
        return counts

    def records(self) -> Iterator[str]:
        """Every committed record's JSON, in plan order, streamed."""
        cursor = self.conn.execute("SELECT record FROM records ORDER BY seq")
        while rows := cursor.fetchmany(1000):
            yield from (row[0] for row in rows)

    def spend(self) -> dict[str, Any]:
        """Answered calls of the trials so far (a judge's are in `judge_counts`); `cost_usd` sums the known costs only (SQL skips NULLs), so
        `cost_unknown` counts the answers whose cost is not known (an unpriced model)."""
        row = self.conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), "
            "SUM(cost_usd), COALESCE(SUM(cache_hit), 0), COALESCE(SUM(cost_usd IS NULL), 0) "
            "FROM attempts WHERE response IS NOT NULL AND turn >= 0"
        ).fetchone()
        return {
            "calls": row[0],
            "input_tokens": row[1],
            "output_tokens": row[2],
            "cost_usd": row[3],
            "cache_hits": row[4],
            "cost_unknown": row[5],
        }

    def trial_ids(self) -> set[str]:
        """Every planned trial's id, as the trials table holds them."""
        return {row[0] for row in self.conn.execute("SELECT trial_id FROM trials")}

    def total_spend(self) -> float:
        """The known cost of every answered call so far, the judges' included (batch lines
        at their batch price): what a budget counts as spent."""
        row = self.conn.execute(
            "SELECT COALESCE(SUM(cost_usd), 0) FROM attempts WHERE response IS NOT NULL"
        ).fetchone()
        return float(row[0])

    def recent_rate(self, window_s: float = 60.0) -> float:
        """Trials finished per second over the last window (for ETAs)."""
        since = datetime.fromtimestamp(time.time() - window_s, UTC)
        stamp = since.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        row = self.conn.execute(
            "SELECT COUNT(*) FROM records WHERE finished_at >= ?", (stamp,)
        ).fetchone()
        return float(row[0]) / window_s

    def summary(self) -> list[dict[str, Any]]:
        """Per model and grid cell: done, failed, tokens, mean latency, the known cost and how
        many trials' costs are unknown (SUM skips NULLs), and turns answered from the cache."""
        rows = self.conn.execute(
            "SELECT model, grid, SUM(status='done'), SUM(status='failed'), SUM(tokens), "
            "AVG(CASE WHEN status='done' THEN latency_s END), SUM(cost_usd), "
            "SUM(cost_usd IS NULL) FROM records GROUP BY model, grid ORDER BY MIN(seq)"
        ).fetchall()
        keys = ("model", "grid", "done", "failed", "tokens", "mean_latency_s", "cost_usd")
        hits = self.cache_hits_by_cell()
        return [
            {
                **dict(zip(keys, row[:7], strict=True)),
                "cost_unknown": row[7],
                "cache_hits": hits.get((row[0], row[1]), 0),
            }
            for row in rows
        ]

    def events(self, limit: int = 20) -> list[tuple[str, str, str]]:
        rows = self.conn.execute(
            "SELECT at, kind, detail FROM events ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [tuple(r) for r in reversed(rows)]

    def cache_hits_by_cell(self) -> dict[tuple[str, str], int]:
        """Turns answered from the cache per (model, grid): an attempts scan joined to trials
        by id. Measured at 100k trials x 2 turns: 0.05 s with no hit, 0.33-0.49 s when all
        200k turns are hits; counting `"cache_hit":true` in the records' JSON took 0.7 s."""
        rows = self.conn.execute(
            "SELECT t.model, t.grid, COUNT(*) FROM attempts a JOIN trials t "
            "ON t.trial_id = a.trial_id WHERE a.cache_hit = 1 AND a.turn >= 0 GROUP BY t.model, t.grid"
        )
        return {(model, grid): n for model, grid, n in rows}

    def score_counts(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """Per score name over the committed records: how many are true, false, a number
        (with their mean) and null (a scorer that could not decide, or a failed trial)."""
        out = {}
        for name in names:
            path = "$.scores." + json.dumps(name)
            row = self.conn.execute(
                "SELECT SUM(t = 'true'), SUM(t = 'false'), SUM(t IN ('integer', 'real')), "
                "AVG(CASE WHEN t IN ('integer', 'real') THEN v END), "
                "SUM(t IS NULL OR t = 'null') FROM (SELECT json_type(record, ?) AS t, "
                "json_extract(record, ?) AS v FROM records)",
                (path, path),
            ).fetchone()
            keys = ("true", "false", "numbers", "mean", "null")
            out[name] = {
                k: (v if k == "mean" else int(v or 0)) for k, v in zip(keys, row, strict=True)
            }
        return out

    def missing_logprobs(self) -> dict[str, int]:
        """Answered requests per model id that asked for logprobs and got none."""
        rows = self.conn.execute(
            "SELECT json_extract(request, '$.model'), COUNT(*) FROM attempts "
            "WHERE response IS NOT NULL AND turn >= 0 AND "
            "json_extract(response, '$.logprobs') IS NULL AND "
            "(json_extract(request, '$.params.top_logprobs') > 0 OR "
            "json_extract(request, '$.params.logprobs') = 1) GROUP BY 1"
        )
        return {str(row[0]): int(row[1]) for row in rows}

    def integrity_ok(self) -> bool:
        result: str = self.conn.execute("PRAGMA integrity_check").fetchone()[0]
        return result == "ok"
