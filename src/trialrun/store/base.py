"""What every family of tables shares: the connection, transactions and the write buffer.

Attempts are written in one place (`write_attempts`), whether they commit with records
(`Store.flush`) or with a batch's outcomes (`BatchTables.end_batch`).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from trialrun.store.rows import Attempt, JudgmentRow, RecordRow


class Transaction:
    """`BEGIN IMMEDIATE` ... `COMMIT`, rolled back on any error."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:  # SQLite may have rolled back itself (a full disk):
            self.conn.execute("ROLLBACK")  # a second ROLLBACK would hide the real error


@dataclass
class Buffer:
    """Rows added since the last flush, committed together."""

    attempts: list[Attempt] = field(default_factory=list)
    records: list[RecordRow] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    judgments: list[JudgmentRow] = field(default_factory=list)
    patches: list[tuple[str, str]] = field(default_factory=list)
    """(trial id, record JSON): committed records rewritten with their new verdicts."""

    def __len__(self) -> int:
        return (
            len(self.attempts)
            + len(self.records)
            + len(self.events)
            + len(self.judgments)
            + len(self.patches)
        )


class StoreBase:
    """The state a `Store` and each of its table families (mixins) work on."""

    path: Path
    conn: sqlite3.Connection
    _buffer: Buffer

    def _transaction(self) -> Transaction:
        return Transaction(self.conn)

    def add_attempt(self, attempt: Attempt) -> None:
        """Buffer an attempt; it commits with the next flush (or the batch it answers)."""
        self._buffer.attempts.append(attempt)

    def write_attempts(self, attempts: list[Attempt]) -> None:
        """Insert attempts inside the caller's transaction."""
        self.conn.executemany(
            "INSERT INTO attempts (trial_id, turn, attempt, cache_key, request, response, "
            "error, error_kind, latency_s, input_tokens, output_tokens, cost_usd, cache_hit, "
            "started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [attempt.row() for attempt in attempts],
        )
