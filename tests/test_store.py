"""The run's SQLite store: schema and migrations, atomic flushes, scheduling queries, summaries."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from trialrun.errors import StoreError
from trialrun.hashing import canonical
from trialrun.store import DB_NAME, MIGRATIONS, Attempt, RecordRow, Store, utcnow
from trialrun.types import Trial


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / DB_NAME


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    with Store.create(db_path) as s:
        yield s


def make_trials(lanes: list[str], models: dict[str, str] | None = None) -> list[tuple[Trial, str]]:
    """One trial per entry of `lanes`, in plan order (seq 0, 1, ...), all on item i0 or i1."""
    rows = []
    for seq, lane in enumerate(lanes):
        model = (models or {}).get(lane, f"{lane}/m")
        trial = Trial(
            seq=seq,
            trial_id=f"t_{seq:04d}",
            item_id=f"i{seq % 2}",
            model=model,
            grid={"temperature": 0.0 if seq % 3 else 0.7},
            repeat=0,
            seed=1000 + seq,
        )
        rows.append((trial, lane))
    return rows


def populate(store: Store, lanes: list[str]) -> list[Trial]:
    store.add_items(
        [
            ("i0", canonical({"id": "i0", "prompt": "zero"})),
            ("i1", canonical({"id": "i1", "prompt": "one"})),
        ]
    )
    pairs = make_trials(lanes)
    assert store.add_trials(pairs) == len(pairs)
    return [t for t, _ in pairs]


def add_record(
    store: Store,
    trial: Trial,
    status: str = "done",
    tokens: int = 10,
    latency: float = 1.0,
    cost: float | None = 0.5,
) -> None:
    record = {"trial_id": trial.trial_id, "status": status, "seq": trial.seq}
    store.add_record(
        RecordRow(
            trial.trial_id,
            trial.seq,
            status,
            trial.model,
            canonical(trial.grid),
            tokens,
            latency,
            cost,
            utcnow(),
            json.dumps(record),
        )
    )


def add_attempt(
    store: Store,
    trial_id: str,
    *,
    response: str | None = '{"response": "ok"}',
    error: str | None = None,
    tokens: tuple[int, int] = (3, 4),
    cost: float | None = 0.01,
    cache_hit: bool = False,
    request: str = '{"messages": []}',
) -> None:
    store.add_attempt(
        Attempt(
            trial_id,
            0,
            1,
            "key",
            request,
            response,
            error=error,
            error_kind="retryable" if error else None,
            latency_s=0.1,
            input_tokens=tokens[0] if response else None,
            output_tokens=tokens[1] if response else None,
            cost_usd=cost if response else None,
            cache_hit=cache_hit,
            started_at=utcnow(),
        )
    )


def states(path: Path) -> dict[str, str]:
    """Trial states as a second, independent connection sees them."""
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT trial_id, state FROM trials"))
    finally:
        conn.close()


def record_ids(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("SELECT trial_id FROM records")]
    finally:
        conn.close()


# ------------------------------------------------------------------ schema


def test_new_database_uses_wal_journal_mode(store: Store, db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_new_database_records_every_migration(store: Store, db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    try:
        applied = [row[0] for row in conn.execute("SELECT name FROM migrations ORDER BY name")]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert applied == [name for name, _ in MIGRATIONS]
    assert {"meta", "items", "trials", "attempts", "records", "events", "migrations"} <= tables


def test_reopening_a_database_does_not_reapply_migrations(store: Store, db_path: Path) -> None:
    populate(store, ["a"])
    store.close()
    again = Store(db_path)
    try:
        assert again.counts()["pending"] == 1
        count = again.conn.execute("SELECT COUNT(*) FROM migrations").fetchone()[0]
        assert count == len(MIGRATIONS)
    finally:
        again.close()


def test_opening_a_missing_database_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no trialrun database"):
        Store(tmp_path / "nope.db")


def test_opening_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    path.write_bytes(b"this is not sqlite at all, just some bytes" * 100)
    with pytest.raises(StoreError, match="not a usable trialrun database"):
        Store(path)


def _add_future_migration(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("INSERT INTO migrations VALUES ('m999_from_the_future', '2099-01-01')")
        conn.commit()
    finally:
        conn.close()


def test_database_from_a_newer_trialrun_is_refused_read_write(store: Store, db_path: Path) -> None:
    store.close()
    _add_future_migration(db_path)
    with pytest.raises(StoreError, match="upgrade"):
        Store(db_path)


def test_database_from_a_newer_trialrun_is_refused_read_only(store: Store, db_path: Path) -> None:
    store.close()
    _add_future_migration(db_path)
    with pytest.raises(StoreError, match="upgrade"):
        Store(db_path, readonly=True)


def test_refusing_a_newer_database_leaves_it_untouched(store: Store, db_path: Path) -> None:
    populate(store, ["a", "a"])
    store.close()
    _add_future_migration(db_path)
    with pytest.raises(StoreError):
        Store(db_path)
    assert states(db_path) == {"t_0000": "pending", "t_0001": "pending"}


def test_read_only_store_cannot_write(store: Store, db_path: Path) -> None:
    populate(store, ["a"])
    reader = Store(db_path, readonly=True)
    try:
        assert reader.counts()["pending"] == 1
        with pytest.raises(sqlite3.OperationalError):
            reader.set_meta({"x": 1})
    finally:
        reader.close()


def test_meta_and_items_round_trip(store: Store) -> None:
    store.set_meta({"run_id": "r1", "experiment": {"name": "t", "seed": 7}})
    store.add_items([("i0", canonical({"id": "i0", "prompt": "ünïcode"}))])
    assert store.meta() == {"run_id": "r1", "experiment": {"name": "t", "seed": 7}}
    assert store.items() == {"i0": {"id": "i0", "prompt": "ünïcode"}}


def test_duplicate_trial_ids_are_a_store_error(store: Store) -> None:
    store.add_items([("i0", canonical({"id": "i0"}))])
    trial = Trial(0, "t_same", "i0", "a/m", {}, 0, 1)
    twin = Trial(1, "t_same", "i0", "a/m", {}, 1, 2)
    with pytest.raises(StoreError, match="share an id"):
        store.add_trials([(trial, "a"), (twin, "a")])
    assert store.counts()["pending"] == 0  # all or nothing


# ------------------------------------------------------------------ flush: records and states together


def test_buffered_record_is_invisible_and_trial_stays_running_until_flush(
    store: Store, db_path: Path
) -> None:
    trials = populate(store, ["a", "a"])
    store.claim_pending("a", -1, 10)
    add_attempt(store, trials[0].trial_id)
    add_record(store, trials[0])
    assert store.buffered() == 2

    assert states(db_path) == {"t_0000": "running", "t_0001": "running"}
    assert record_ids(db_path) == []

    committed = store.flush()
    assert [status for status, _ in committed] == ["done"]
    assert states(db_path) == {"t_0000": "done", "t_0001": "running"}
    assert record_ids(db_path) == ["t_0000"]
    assert store.buffered() == 0


def test_flush_sets_each_trial_to_its_records_status(store: Store, db_path: Path) -> None:
    trials = populate(store, ["a", "a", "a"])
    store.claim_pending("a", -1, 10)
    add_record(store, trials[0], "done")
    add_record(store, trials[1], "failed")
    store.flush()
    assert states(db_path) == {"t_0000": "done", "t_0001": "failed", "t_0002": "running"}
    assert store.counts() == {"pending": 0, "running": 1, "done": 1, "failed": 1}


def test_failed_flush_commits_neither_the_record_nor_the_trial_state(
    store: Store, db_path: Path
) -> None:
    trials = populate(store, ["a"])
    store.claim_pending("a", -1, 10)
    add_record(store, trials[0])
    # The event is written last in the transaction; a NOT NULL violation there must roll
    # back the record and the state change written before it.
    store.add_event("note", None)  # type: ignore[arg-type]
    with pytest.raises(sqlite3.IntegrityError):
        store.flush()
    assert states(db_path) == {"t_0000": "running"}
    assert record_ids(db_path) == []


def test_flush_of_an_empty_buffer_commits_nothing(store: Store) -> None:
    assert store.flush() == []


def test_flush_writes_events(store: Store) -> None:
    store.add_event("lane_stopped", "mock: 401")
    store.add_event("cache_error", "disk full")
    assert store.events() == []  # buffered
    store.flush()
    assert [(kind, detail) for _, kind, detail in store.events()] == [
        ("lane_stopped", "mock: 401"),
        ("cache_error", "disk full"),
    ]
    assert [kind for _, kind, _ in store.events(limit=1)] == ["cache_error"]


def test_stored_response_finds_a_committed_response_by_cache_key(store: Store) -> None:
    populate(store, ["a"])
    assert store.stored_response("key") is None
    assert not store.has_attempts()
    add_attempt(store, "t_0000", response=None, error="mock: 500")
    store.flush()
    assert store.has_attempts()
    assert store.stored_response("key") is None  # failed attempts are not answers
    add_attempt(store, "t_0000", response='{"response": "hi"}')
    store.flush()
    assert store.stored_response("key") == '{"response": "hi"}'


# ------------------------------------------------------------------ scheduling


def test_claim_pending_pages_in_plan_order_per_lane_and_marks_running(store: Store) -> None:
    populate(store, ["a", "b", "a", "a", "b", "a"])  # lane a: seq 0, 2, 3, 5; lane b: 1, 4
    first = store.claim_pending("a", -1, 2)
    assert [t.seq for t in first] == [0, 2]
    assert all(t.model == "a/m" for t in first)
    second = store.claim_pending("a", first[-1].seq, 2)
    assert [t.seq for t in second] == [3, 5]
    assert store.claim_pending("a", second[-1].seq, 2) == []
    assert store.counts() == {"pending": 2, "running": 4, "done": 0, "failed": 0}
    assert [t.seq for t in store.claim_pending("b", -1, 10)] == [1, 4]


def test_claim_pending_skips_trials_already_claimed(store: Store) -> None:
    populate(store, ["a", "a", "a"])
    assert [t.seq for t in store.claim_pending("a", -1, 2)] == [0, 1]
    assert [t.seq for t in store.claim_pending("a", -1, 10)] == [2]
    assert store.claim_pending("a", -1, 10) == []


def test_claim_pending_returns_trials_with_their_items(store: Store) -> None:
    populate(store, ["a", "a"])
    claimed = store.claim_pending("a", -1, 10)
    first, second = claimed
    assert first.trial_id == "t_0000"
    assert first.item_id == "i0"
    assert first.item == {"id": "i0", "prompt": "zero"}
    assert second.item == {"id": "i1", "prompt": "one"}
    assert first.grid == {"temperature": 0.7}
    assert (first.repeat, first.seed) == (0, 1000)


def test_lanes_lists_each_lane_once(store: Store) -> None:
    populate(store, ["openai", "mock", "openai"])
    assert store.lanes() == ["mock", "openai"]


def test_reset_running_makes_running_trials_pending_again(store: Store) -> None:
    trials = populate(store, ["a", "a", "a"])
    store.claim_pending("a", -1, 10)
    add_record(store, trials[0], "done")
    add_record(store, trials[1], "failed")
    store.flush()
    assert store.reset_running() == 1
    assert store.counts() == {"pending": 1, "running": 0, "done": 1, "failed": 1}
    assert [t.seq for t in store.claim_pending("a", -1, 10)] == [2]


def test_reset_running_with_failed_retries_failed_trials_and_drops_their_records(
    store: Store,
) -> None:
    trials = populate(store, ["a", "a", "a"])
    store.claim_pending("a", -1, 10)
    add_record(store, trials[0], "done")
    add_record(store, trials[1], "failed")
    store.flush()
    assert store.reset_running(include_failed=True) == 2
    assert store.counts() == {"pending": 2, "running": 0, "done": 1, "failed": 0}
    assert [json.loads(r)["trial_id"] for r in store.records()] == ["t_0000"]


# ------------------------------------------------------------------ reading


def test_records_stream_in_plan_order_whatever_the_commit_order(store: Store) -> None:
    trials = populate(store, ["a"] * 5)
    store.claim_pending("a", -1, 10)
    for index in (3, 0, 4):
        add_record(store, trials[index])
    store.flush()
    add_record(store, trials[1])
    store.flush()
    assert [json.loads(r)["seq"] for r in store.records()] == [0, 1, 3, 4]


def test_records_streams_more_than_one_fetch_page(store: Store) -> None:
    trials = populate(store, ["a"] * 1205)
    for trial in reversed(trials):
        add_record(store, trial)
    store.flush()
    assert [json.loads(r)["seq"] for r in store.records()] == list(range(1205))


def test_counts_reports_every_state_even_when_zero(store: Store) -> None:
    assert store.counts() == {"pending": 0, "running": 0, "done": 0, "failed": 0}
    populate(store, ["a", "b"])
    assert store.counts() == {"pending": 2, "running": 0, "done": 0, "failed": 0}


def test_summary_groups_by_model_and_cell(store: Store) -> None:
    store.add_items([("i0", canonical({"id": "i0"}))])
    cold, warm = {"temperature": 0.0}, {"temperature": 0.7}
    trials = [
        Trial(0, "t0", "i0", "mock/a", cold, 0, 1),
        Trial(1, "t1", "i0", "mock/a", cold, 1, 2),
        Trial(2, "t2", "i0", "mock/a", cold, 2, 3),
        Trial(3, "t3", "i0", "mock/a", warm, 0, 4),
        Trial(4, "t4", "i0", "mock/b", cold, 0, 5),
    ]
    store.add_trials((t, "mock") for t in trials)
    add_record(store, trials[0], "done", tokens=10, latency=1.0, cost=0.1)
    add_record(store, trials[1], "done", tokens=20, latency=3.0, cost=0.2)
    add_record(store, trials[2], "failed", tokens=5, latency=100.0, cost=0.05)
    add_record(store, trials[3], "done", tokens=7, latency=0.5, cost=None)
    add_record(store, trials[4], "failed", tokens=0, latency=0.0, cost=0.0)
    store.flush()
    summary = store.summary()
    assert [(row["model"], json.loads(row["grid"])) for row in summary] == [
        ("mock/a", cold),
        ("mock/a", warm),
        ("mock/b", cold),
    ]
    first, second, third = summary
    assert (first["done"], first["failed"], first["tokens"]) == (2, 1, 35)
    assert first["mean_latency_s"] == pytest.approx(2.0)  # failed trials do not count
    assert first["cost_usd"] == pytest.approx(0.35)
    assert (second["done"], second["failed"], second["cost_usd"]) == (1, 0, None)
    assert (third["done"], third["failed"], third["mean_latency_s"]) == (0, 1, None)


def test_spend_sums_successful_calls_only(store: Store) -> None:
    populate(store, ["a"])
    assert store.spend() == {
        "calls": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": None,
        "cache_hits": 0,
        "cost_unknown": 0,
    }
    add_attempt(store, "t_0000", tokens=(10, 5), cost=0.25)
    add_attempt(store, "t_0000", tokens=(20, 7), cost=0.5)
    add_attempt(store, "t_0000", tokens=(20, 7), cost=0.0, cache_hit=True)
    add_attempt(store, "t_0000", response=None, error="mock: 500")
    store.flush()
    spend = store.spend()
    assert spend["calls"] == 3
    assert spend["input_tokens"] == 50
    assert spend["output_tokens"] == 19
    assert spend["cost_usd"] == pytest.approx(0.75)
    assert spend["cache_hits"] == 1


def test_integrity_check_tells_a_sound_store_from_a_corrupted_one(
    store: Store, db_path: Path
) -> None:
    populate(store, ["a", "b"] * 50)
    assert store.integrity_ok()
    store.close()
    # Corrupt it the way a bad disk or a foreign writer can: an index whose entries no
    # longer match its table (its declared columns changed under it).
    conn = sqlite3.connect(db_path)
    try:
        conn.execute("PRAGMA writable_schema=ON")
        conn.execute(
            "UPDATE sqlite_master SET sql='CREATE INDEX trials_by_lane_state ON trials "
            "(seed, state, seq)' WHERE name='trials_by_lane_state'"
        )
        conn.commit()
    finally:
        conn.close()
    with Store(db_path, readonly=True) as reopened:
        assert not reopened.integrity_ok()


def test_with_block_closes_the_store(db_path: Path) -> None:
    with Store.create(db_path) as store:
        assert store.counts()["pending"] == 0
    with pytest.raises(sqlite3.ProgrammingError):
        store.counts()


def test_utcnow_is_iso_8601_with_milliseconds_and_z() -> None:
    import re

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", utcnow())
