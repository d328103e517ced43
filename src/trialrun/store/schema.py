"""The run database's schema: numbered migrations, each applied in its own transaction.

Migrations are additive and never edited once released: a run folder written by an
older trialrun opens by applying the ones it lacks; one written by a newer trialrun
(a migration this one does not know) is refused rather than misread.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from trialrun.errors import StoreError

DB_NAME = "trialrun.db"
STATES = ("pending", "running", "done", "failed")
"""The states of a trial row, in the order `counts()` reports them."""

MIGRATIONS: list[tuple[str, str]] = [
    (
        "m001_initial",
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE items (item_id TEXT PRIMARY KEY, data TEXT NOT NULL);
        CREATE TABLE trials (
            seq INTEGER PRIMARY KEY,
            trial_id TEXT NOT NULL UNIQUE,
            item_id TEXT NOT NULL REFERENCES items(item_id),
            model TEXT NOT NULL,
            lane TEXT NOT NULL,
            grid TEXT NOT NULL,
            repeat INTEGER NOT NULL,
            seed INTEGER NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            updated_at TEXT
        );
        CREATE INDEX trials_by_lane_state ON trials (lane, state, seq);
        CREATE TABLE attempts (
            id INTEGER PRIMARY KEY,
            trial_id TEXT NOT NULL,
            turn INTEGER NOT NULL,
            attempt INTEGER NOT NULL,
            cache_key TEXT,
            request TEXT NOT NULL,
            response TEXT,
            error TEXT,
            error_kind TEXT,
            latency_s REAL,
            input_tokens INTEGER,
            output_tokens INTEGER,
            cost_usd REAL,
            cache_hit INTEGER NOT NULL DEFAULT 0,
            started_at TEXT NOT NULL
        );
        CREATE INDEX attempts_by_trial ON attempts (trial_id, turn);
        CREATE INDEX attempts_by_key ON attempts (cache_key) WHERE response IS NOT NULL;
        CREATE TABLE records (
            trial_id TEXT PRIMARY KEY,
            seq INTEGER NOT NULL,
            status TEXT NOT NULL,
            model TEXT NOT NULL,
            grid TEXT NOT NULL,
            tokens INTEGER NOT NULL,
            latency_s REAL NOT NULL,
            cost_usd REAL,
            finished_at TEXT NOT NULL,
            record TEXT NOT NULL
        );
        CREATE INDEX records_by_seq ON records (seq);
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            detail TEXT NOT NULL
        );
        """,
    ),
]
MIGRATIONS.append(
    (
        "m002_batches",
        """
        CREATE TABLE batches (
            tag TEXT PRIMARY KEY,
            lane TEXT NOT NULL,
            model TEXT NOT NULL,
            batch_id TEXT,
            state TEXT NOT NULL,
            provider_state TEXT,
            stage INTEGER NOT NULL,
            requests INTEGER NOT NULL,
            counts TEXT,
            created_at TEXT NOT NULL,
            created_unix REAL NOT NULL,
            updated_at TEXT NOT NULL,
            note TEXT
        );
        CREATE TABLE batch_requests (
            trial_id TEXT NOT NULL,
            turn INTEGER NOT NULL,
            custom_id TEXT NOT NULL UNIQUE,
            lane TEXT NOT NULL,
            tag TEXT,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            cache_key TEXT NOT NULL,
            request TEXT NOT NULL,
            response TEXT,
            error TEXT,
            PRIMARY KEY (trial_id, turn)
        );
        CREATE INDEX batch_requests_by_lane_state ON batch_requests (lane, state);
        CREATE INDEX batch_requests_by_tag ON batch_requests (tag)
        """,
    )
)
MIGRATIONS.append(
    (
        "m003_judgments_annotations",
        """
        CREATE TABLE judgments (
            trial_id TEXT NOT NULL,
            judge TEXT NOT NULL,
            spec_hash TEXT NOT NULL,
            state TEXT NOT NULL,
            verdict TEXT,
            error TEXT,
            error_kind TEXT,
            raw TEXT,
            request TEXT NOT NULL,
            response TEXT,
            input_tokens INTEGER,
            output_tokens INTEGER,
            cost_usd REAL,
            latency_s REAL,
            attempts INTEGER NOT NULL,
            asks INTEGER NOT NULL,
            cache_hit INTEGER NOT NULL DEFAULT 0,
            started_at TEXT NOT NULL,
            finished_at TEXT NOT NULL,
            PRIMARY KEY (trial_id, judge, spec_hash)
        );
        CREATE INDEX judgments_by_judge ON judgments (judge, spec_hash, state);
        CREATE TABLE annotation_sheets (
            sheet TEXT PRIMARY KEY,
            coder TEXT NOT NULL,
            created_at TEXT NOT NULL,
            rows TEXT NOT NULL
        );
        CREATE TABLE annotations (
            trial_id TEXT NOT NULL,
            coder TEXT NOT NULL,
            sheet TEXT,
            row_id TEXT,
            labels TEXT NOT NULL,
            imported_at TEXT NOT NULL,
            PRIMARY KEY (trial_id, coder)
        )
        """,
    )
)
MIGRATIONS.append(
    (
        # the verdict schema a sheet was written for (compact form, JSON), so its labels are
        # validated on import against what the coder was shown, not what the config says now
        "m004_annotation_sheet_schema",
        "ALTER TABLE annotation_sheets ADD COLUMN schema TEXT",
    )
)
SCHEMA_VERSION = len(MIGRATIONS)


def utcnow() -> str:
    """Now, as an ISO 8601 UTC timestamp with milliseconds (2026-11-22T10:15:02.120Z)."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    else:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives any process crash (kill -9); only an OS crash
        # or power loss can drop the last commits, never corrupt the database.
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Apply missing migrations in order, each in its own transaction; refuse newer schemas."""
    conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
    applied = {row[0] for row in conn.execute("SELECT name FROM migrations")}
    known = {name for name, _ in MIGRATIONS}
    unknown = applied - known
    if unknown:
        raise StoreError(
            f"{path}: written by a newer trialrun (schema {len(applied)}, this one knows "
            f"{SCHEMA_VERSION}: {sorted(unknown)[0]}); upgrade trialrun to open it"
        )
    for name, sql in MIGRATIONS:
        if name in applied:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in sql.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO migrations VALUES (?, ?)", (name, utcnow()))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
