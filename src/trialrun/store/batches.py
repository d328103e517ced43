"""Batch mode's tables: `batch_requests` (one row per turn of a trial) and `batches`.

A request of a trial's turn is one `batch_requests` row (a judge's request of a trial too,
under turn -1 - the judge's index; the queries of the trial's own turns read turn >= 0): `ready` (to submit), `submitted`
(in the batch `tag`), `done` (its response stored), `failed` (a final error, or out of
attempts) or `abandoned` (left behind when the run switched to real-time). A batch row
is written `submitting` *before* the provider is called and becomes `open` with the
provider's id; results and the batch's end are committed in one transaction.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from trialrun.hashing import canonical
from trialrun.store.base import StoreBase
from trialrun.store.rows import (
    AnsweredTurn,
    BatchOutcomeRow,
    BatchRequest,
    OutstandingRequest,
    PendingTrial,
    ReadyRequest,
    TrialProgress,
    TurnOutcome,
)
from trialrun.store.schema import utcnow


@dataclass(frozen=True, slots=True)
class JudgeRequest:
    """A judge's request of a trial in batch mode, as the judge stage reads it back."""

    state: str
    cache_key: str
    request: str
    """Canonical JSON of the ask (its `messages` hold every earlier ask and reply)."""
    response: str | None
    error: str | None


BATCH_OPEN = ("submitting", "open")
"""Batch states whose requests are still out: `submitting` (written before the provider is
called, so a crash right after it accepted can be reconciled) and `open` (it has an id)."""

CHUNK = 500
"""Ids per `IN (...)` query, well under SQLite's limit on bound values."""


class BatchTables(StoreBase):
    """The queries of batch mode, mixed into `Store`."""

    # ------------------------------------------------------------ reading

    def batches(self, states: Iterable[str] | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM batches"
        args: tuple[Any, ...] = ()
        if states is not None:
            states = tuple(states)
            query += f" WHERE state IN ({','.join('?' * len(states))})"
            args = states
        self.conn.row_factory = sqlite3.Row
        try:
            rows = [dict(row) for row in self.conn.execute(query + " ORDER BY created_unix", args)]
        finally:
            self.conn.row_factory = None
        for row in rows:
            row["counts"] = orjson.loads(row["counts"]) if row["counts"] else {}
        return rows

    def known_batch_ids(self) -> set[str]:
        rows = self.conn.execute("SELECT batch_id FROM batches WHERE batch_id IS NOT NULL")
        return {row[0] for row in rows}

    def pending_without_open_request(self, after_seq: int, limit: int) -> list[TrialProgress]:
        """Pending trials (with lane, done turns and failed turns) that have no request out,
        a judge's included; the turns counted are the trial's own (turn >= 0)."""
        rows = self.conn.execute(
            "SELECT t.seq, t.trial_id, t.item_id, i.data, t.model, t.grid, t.repeat, t.seed, t.lane, "
            "(SELECT COUNT(*) FROM batch_requests r WHERE r.trial_id=t.trial_id AND r.turn>=0 "
            "AND r.state='done'), "
            "(SELECT COUNT(*) FROM batch_requests r WHERE r.trial_id=t.trial_id AND r.turn>=0 "
            "AND r.state='failed') "
            "FROM trials t JOIN items i ON i.item_id = t.item_id "
            "WHERE t.state='pending' AND t.seq>? AND NOT EXISTS (SELECT 1 FROM batch_requests r "
            "WHERE r.trial_id=t.trial_id AND r.state IN ('ready', 'submitted')) "
            "ORDER BY t.seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
        return [
            TrialProgress(
                PendingTrial(
                    r[0], r[1], r[2], orjson.loads(r[3]), r[4], orjson.loads(r[5]), r[6], r[7]
                ),
                lane=r[8],
                done_turns=r[9],
                failed_turns=r[10],
            )
            for r in rows
        ]

    def last_done_turns(self, trial_ids: list[str]) -> dict[str, AnsweredTurn]:
        """Each trial's latest answered turn of its own (a judge's requests are not turns)."""
        out: dict[str, AnsweredTurn] = {}
        for start in range(0, len(trial_ids), CHUNK):
            chunk = trial_ids[start : start + CHUNK]
            rows = self.conn.execute(
                "SELECT r.trial_id, r.turn, r.request, r.response FROM batch_requests r "
                f"WHERE r.state='done' AND r.trial_id IN ({','.join('?' * len(chunk))}) AND "
                "r.turn = (SELECT MAX(turn) FROM batch_requests x WHERE x.trial_id=r.trial_id "
                "AND x.state='done' AND x.turn>=0)",
                chunk,
            )
            out.update({row[0]: AnsweredTurn(row[1], row[2], row[3]) for row in rows})
        return out

    def trial_turns(self, trial_id: str) -> list[TurnOutcome]:
        """What each of a trial's turns came to, in order (its judges' requests left out)."""
        rows = self.conn.execute(
            "SELECT response, error, attempts FROM batch_requests WHERE trial_id=? AND turn>=0 "
            "ORDER BY turn",
            (trial_id,),
        )
        return [TurnOutcome(row[0], row[1], row[2]) for row in rows]

    def ready_requests(self, state: str = "ready") -> Iterator[ReadyRequest]:
        """Every request ready to submit (or, with `state`, in that state: `submitted`, out
        in a batch), in the order they were made ready."""
        cursor = self.conn.execute(
            "SELECT r.custom_id, t.model, r.turn, r.request FROM batch_requests r "
            "JOIN trials t ON t.trial_id = r.trial_id WHERE r.state=? ORDER BY r.rowid",
            (state,),
        )
        while rows := cursor.fetchmany(1000):
            yield from (ReadyRequest(r[0], r[1], r[2], r[3]) for r in rows)

    def batch_rows(
        self, tag: str, custom_ids: Sequence[str] | None = None
    ) -> dict[str, OutstandingRequest]:
        """A batch's requests still out, by custom id (with `custom_ids`, only those)."""
        query = (
            "SELECT custom_id, trial_id, turn, attempts, cache_key, request FROM batch_requests "
            "WHERE tag=? AND state='submitted'"
        )
        if custom_ids is None:
            return {r[0]: OutstandingRequest(*r) for r in self.conn.execute(query, (tag,))}
        # By the custom ids' index: with hundreds of ids SQLite would rather walk the whole
        # batch through the tag's index (measured 70 ms against 4 ms per 500 ids in a batch
        # of 50,000); `+tag` keeps it from using that index.
        query = query.replace("WHERE tag=?", "WHERE +tag=?")
        out: dict[str, OutstandingRequest] = {}
        for start in range(0, len(custom_ids), CHUNK):
            chunk = custom_ids[start : start + CHUNK]
            rows = self.conn.execute(
                f"{query} AND custom_id IN ({','.join('?' * len(chunk))})", (tag, *chunk)
            )
            out.update({r[0]: OutstandingRequest(*r) for r in rows})
        return out

    def batch_custom_ids(self, tag: str) -> list[str]:
        """The custom ids of a batch's requests still out."""
        rows = self.conn.execute(
            "SELECT custom_id FROM batch_requests WHERE tag=? AND state='submitted' ORDER BY rowid",
            (tag,),
        )
        return [row[0] for row in rows]

    def requests_of(self, custom_ids: Sequence[str]) -> Iterator[tuple[str, str]]:
        """(custom id, request JSON) of these requests, in the order given, read `CHUNK` at a
        time, so a submission holds one batch's ids rather than its requests."""
        for start in range(0, len(custom_ids), CHUNK):
            chunk = custom_ids[start : start + CHUNK]
            rows = self.conn.execute(
                "SELECT custom_id, request FROM batch_requests "
                f"WHERE custom_id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            found = dict(rows.fetchall())
            yield from ((custom_id, found[custom_id]) for custom_id in chunk if custom_id in found)

    def judge_requests(self, trial_ids: list[str]) -> dict[str, dict[int, JudgeRequest]]:
        """The judges' requests of these trials (turn -1 - the judge's index), by trial id
        and turn."""
        out: dict[str, dict[int, JudgeRequest]] = {}
        for start in range(0, len(trial_ids), CHUNK):
            chunk = trial_ids[start : start + CHUNK]
            rows = self.conn.execute(
                "SELECT trial_id, turn, state, cache_key, request, response, error "
                f"FROM batch_requests WHERE turn<0 AND trial_id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            for row in rows:
                out.setdefault(row[0], {})[row[1]] = JudgeRequest(*row[2:])
        return out

    def judge_requests_out(self) -> int:
        """Judges' requests waiting to be submitted or in a batch."""
        row = self.conn.execute(
            "SELECT COUNT(*) FROM batch_requests WHERE turn<0 AND state IN ('ready', 'submitted')"
        ).fetchone()
        return int(row[0])

    def batch_request_counts(self) -> dict[str, int]:
        rows = self.conn.execute("SELECT state, COUNT(*) FROM batch_requests GROUP BY state")
        return {row[0]: row[1] for row in rows}

    # ------------------------------------------------------------ writing

    def add_batch_requests(self, requests: list[BatchRequest]) -> None:
        """Insert requests, or replace those of the same trial and turn."""
        if not requests:
            return
        with self._transaction():
            self.conn.executemany(
                "INSERT INTO batch_requests (trial_id, turn, custom_id, lane, state, cache_key, "
                "request, response, attempts, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (trial_id, turn) DO UPDATE SET state=excluded.state, "
                "cache_key=excluded.cache_key, request=excluded.request, "
                "response=excluded.response, tag=NULL, error=excluded.error",
                [request.row() for request in requests],
            )

    def open_batch(
        self, tag: str, lane: str, model: str, stage: int, custom_ids: list[str]
    ) -> None:
        """Record a batch as `submitting` with its requests, before the provider is called.

        `model` is the label of the model entry whose provider client submits it."""
        now = utcnow()
        with self._transaction():
            self.conn.execute(
                "INSERT INTO batches (tag, lane, model, state, stage, requests, created_at, "
                "created_unix, updated_at) VALUES (?, ?, ?, 'submitting', ?, ?, ?, ?, ?)",
                (tag, lane, model, stage, len(custom_ids), now, time.time(), now),
            )
            self.conn.executemany(
                "UPDATE batch_requests SET state='submitted', tag=? WHERE custom_id=?",
                [(tag, custom_id) for custom_id in custom_ids],
            )

    def batch_submitted(self, tag: str, batch_id: str) -> None:
        with self._transaction():
            self.conn.execute(
                "UPDATE batches SET batch_id=?, state='open', updated_at=? WHERE tag=?",
                (batch_id, utcnow(), tag),
            )

    def batch_polled(self, tag: str, provider_state: str, counts: dict[str, int]) -> None:
        with self._transaction():
            self.conn.execute(
                "UPDATE batches SET provider_state=?, counts=?, updated_at=? WHERE tag=?",
                (provider_state, canonical(counts), utcnow(), tag),
            )

    def abandon_batch(self, tag: str, note: str, *, requests_to: str = "ready") -> int:
        """Mark a batch abandoned; its requests still out go back to `requests_to`."""
        with self._transaction():
            self.conn.execute(
                "UPDATE batches SET state='abandoned', note=?, updated_at=? WHERE tag=?",
                (note, utcnow(), tag),
            )
            cur = self.conn.execute(
                "UPDATE batch_requests SET state=?, tag=NULL WHERE tag=? AND state='submitted'",
                (requests_to, tag),
            )
        return cur.rowcount

    def abandon_unsubmitted(self) -> int:
        """Requests waiting to be submitted are dropped (the run left batch mode)."""
        with self._transaction():
            cur = self.conn.execute(
                "UPDATE batch_requests SET state='abandoned' WHERE state='ready'"
            )
        return cur.rowcount

    def store_batch_outcomes(self, tag: str, outcomes: list[BatchOutcomeRow]) -> None:
        """Store some outcomes of a finished batch, in one transaction with the attempts
        buffered for them. The batch stays open: a pass that stops before `end_batch` reads
        its results again, and the requests stored here are no longer out, so they are
        skipped then, never stored twice."""
        with self._transaction():
            self._update_outcomes(tag, outcomes)
            attempts, self._buffer.attempts = self._buffer.attempts, []
            self.write_attempts(attempts)

    def _update_outcomes(self, tag: str, outcomes: list[BatchOutcomeRow]) -> None:
        self.conn.executemany(
            "UPDATE batch_requests SET state=?, response=?, error=?, attempts=attempts+?, "
            "tag=CASE WHEN ?='ready' THEN NULL ELSE tag END "
            "WHERE custom_id=? AND tag=? AND state='submitted'",
            [
                (o.state, o.response, o.error, o.attempts_added, o.state, o.custom_id, tag)
                for o in outcomes
            ],
        )

    def end_batch(
        self,
        tag: str,
        provider_state: str,
        counts: dict[str, int],
        outcomes: list[BatchOutcomeRow],
        note: str | None = None,
    ) -> None:
        """Store a finished batch's outcomes and mark it ended, in one transaction, with the
        attempts buffered for them: they commit together, never apart."""
        with self._transaction():
            self._update_outcomes(tag, outcomes)
            # Requests of this batch with no outcome at all go back to be submitted again.
            self.conn.execute(
                "UPDATE batch_requests SET state='ready', tag=NULL WHERE tag=? AND state='submitted'",
                (tag,),
            )
            self.conn.execute(
                "UPDATE batches SET state='ended', provider_state=?, counts=?, note=?, "
                "updated_at=? WHERE tag=?",
                (provider_state, canonical(counts), note, utcnow(), tag),
            )
            attempts, self._buffer.attempts = self._buffer.attempts, []
            self.write_attempts(attempts)
