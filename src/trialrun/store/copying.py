"""Copies of run databases: consistent snapshots (for sync) and merging shard runs.

`snapshot` copies a live database with SQLite's online backup API on a connection of
its own, in one step under one read transaction: the copy is the database as of one
commit, whatever the writer does meanwhile (WAL readers never block the writer), so it
can run on a thread beside the run. `merge_into` folds one shard's database into a
merged one by trial id; `planned_item_ids` and `recorded` read what a merge compares.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from trialrun.store.schema import connect

TRIAL_COLUMNS = "trial_id, item_id, model, lane, grid, repeat, seed, state, updated_at"
ATTEMPT_COLUMNS = (
    "trial_id, turn, attempt, cache_key, request, response, error, error_kind, latency_s, "
    "input_tokens, output_tokens, cost_usd, cache_hit, started_at"
)
RECORD_TAIL = "status, model, grid, tokens, latency_s, cost_usd, finished_at, record"


def snapshot(source: Path, dest: Path) -> None:
    """Write a consistent copy of the database at `source` to `dest` (replaced)."""
    dest.unlink(missing_ok=True)
    src = connect(source, readonly=True)
    try:
        out = sqlite3.connect(dest)
        try:
            src.backup(out)  # pages=-1: the whole database in one step, one read snapshot
        finally:
            out.close()
    finally:
        src.close()


def item_ids(conn: sqlite3.Connection) -> list[str]:
    """The run's item ids in dataset order (the order they were stored)."""
    return [row[0] for row in conn.execute("SELECT item_id FROM items ORDER BY rowid")]


def recorded_ids(conn: sqlite3.Connection) -> set[str]:
    """The ids of the trials with a committed record."""
    return {row[0] for row in conn.execute("SELECT trial_id FROM records")}


def overlapping_records(merged: Path, shard: Path) -> list[tuple[str, str, str]]:
    """(trial id, merged record, shard record) for trials with a record in both databases."""
    conn = connect(merged, readonly=True)
    try:
        conn.execute("ATTACH DATABASE ? AS shard", (f"file:{shard}?mode=ro",))
        return list(
            conn.execute(
                "SELECT m.trial_id, m.record, s.record FROM main.records m "
                "JOIN shard.records s ON s.trial_id = m.trial_id ORDER BY m.trial_id"
            )
        )
    finally:
        conn.close()


def merge_into(merged: Path, shard: Path) -> int:
    """Fold `shard`'s run database into `merged`: its items, and every trial the merged
    database lacks or has without a record while the shard has one (with its attempts,
    record and judgments). Returns how many trials were taken. Batch tables stay behind:
    their jobs belong to the shard run that submitted them."""
    conn = connect(merged)
    try:
        conn.execute("ATTACH DATABASE ? AS shard", (str(shard),))  # only read
        conn.execute("BEGIN IMMEDIATE")
        try:
            taken = _take(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("DETACH DATABASE shard")
        return taken
    finally:
        conn.close()


def _take(conn: sqlite3.Connection) -> int:
    conn.execute("INSERT OR IGNORE INTO main.items SELECT item_id, data FROM shard.items")
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS take (trial_id TEXT PRIMARY KEY)")
    conn.execute("DELETE FROM temp.take")
    conn.execute(
        "INSERT INTO temp.take SELECT t.trial_id FROM shard.trials t WHERE NOT EXISTS "
        "(SELECT 1 FROM main.trials m WHERE m.trial_id = t.trial_id) OR (EXISTS "
        "(SELECT 1 FROM shard.records r WHERE r.trial_id = t.trial_id) AND NOT EXISTS "
        "(SELECT 1 FROM main.records r WHERE r.trial_id = t.trial_id))"
    )
    for table in ("trials", "attempts", "judgments"):
        conn.execute(f"DELETE FROM main.{table} WHERE trial_id IN (SELECT trial_id FROM take)")
    conn.execute(
        f"INSERT INTO main.trials ({TRIAL_COLUMNS}) SELECT {TRIAL_COLUMNS} FROM shard.trials "
        "WHERE trial_id IN (SELECT trial_id FROM take) ORDER BY seq"
    )
    conn.execute(
        f"INSERT INTO main.attempts ({ATTEMPT_COLUMNS}) SELECT {ATTEMPT_COLUMNS} FROM "
        "shard.attempts WHERE trial_id IN (SELECT trial_id FROM take) ORDER BY id"
    )
    conn.execute(
        f"INSERT INTO main.records (trial_id, seq, {RECORD_TAIL}) SELECT r.trial_id, t.seq, "
        f"{', '.join('r.' + c for c in RECORD_TAIL.split(', '))} FROM shard.records r "
        "JOIN main.trials t ON t.trial_id = r.trial_id "
        "WHERE r.trial_id IN (SELECT trial_id FROM take)"
    )
    conn.execute(
        "INSERT OR IGNORE INTO main.judgments SELECT * FROM shard.judgments "
        "WHERE trial_id IN (SELECT trial_id FROM take)"
    )
    return int(conn.execute("SELECT count(*) FROM temp.take").fetchone()[0])


def empty_copy(source: Path, dest: Path) -> None:
    """`dest`: a database with `source`'s schema and meta and nothing else (the start of a
    merge; the caller rewrites the meta)."""
    snapshot(source, dest)
    conn = connect(dest)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for table in (
            "items",
            "trials",
            "attempts",
            "records",
            "events",
            "judgments",
            "batches",
            "batch_requests",
            "annotation_sheets",
            "annotations",
        ):
            conn.execute(f"DELETE FROM {table}")
        conn.execute("COMMIT")
        conn.execute("VACUUM")
    finally:
        conn.close()
