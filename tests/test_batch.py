"""Batch mode on the mock provider's offline batch simulation: stages, retries, expiry,
idempotent collect, the lock, the cache across modes, mode switches, limits, --detach."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import trialrun
from conftest import CliResult, base_config, read_results
from trialrun.executor import batch_collect
from trialrun.providers.batch import BatchOutcome
from trialrun.providers.mock import MockProvider
from trialrun.runs import lock_run as _lock
from trialrun.store import Store

FAST = {"poll_min_s": 0.01, "poll_max_s": 0.05}


def batch_config(**changes: Any) -> dict[str, Any]:
    config = base_config(mode="batch", batch=FAST)
    config.update(changes)
    return config


def batches(run: trialrun.Run) -> list[dict[str, Any]]:
    return list(run.status()["batches"])


def responses(run: trialrun.Run) -> dict[str, list[str]]:
    return {r["trial_id"]: [t["response"] for t in r["turns"]] for r in run.records()}


class Notes(trialrun.Observer):
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)


# ------------------------------------------------------------------ the flow


def test_run_submits_and_returns_then_collect_finishes_it() -> None:
    run = trialrun.run(batch_config())
    assert run.counts()["pending"] == 16  # submitted, not waited for
    first = batches(run)
    assert [(b["state"], b["stage"], b["requests"]) for b in first] == [("open", 0, 16)]

    trialrun.collect(run, wait=True)
    assert run.counts() == {"pending": 0, "running": 0, "done": 16, "failed": 0}
    # One submission per provider per stage: both mock models share the mock lane.
    assert [(b["state"], b["stage"], b["requests"]) for b in batches(run)] == [
        ("ended", 0, 16),
        ("ended", 1, 16),
    ]
    records = read_results(run.path)
    assert len(records) == 16
    assert all(len(r["turns"]) == 2 and r["status"] == "done" for r in records)


def test_batch_answers_equal_real_time_answers(isolated: Path) -> None:
    realtime = trialrun.run(base_config(cache={"enabled": False}))
    batch = trialrun.run(batch_config(cache={"enabled": False}), wait=True)
    assert responses(batch) == responses(realtime)  # same requests, turn by turn
    params = {r["trial_id"]: r["params"] for r in batch.records()}
    assert params == {r["trial_id"]: r["params"] for r in realtime.records()}


def test_follow_ups_see_the_same_turns_in_both_modes_with_few_shot_lines(isolated: Path) -> None:
    # A few-shot assistant line in the first messages is not a turn: `turns` holds only
    # the trial's own answers, in batch mode as in real time.
    changes = {
        "messages": [
            {"role": "user", "content": "Example question?"},
            {"role": "assistant", "content": "Example answer."},
            {"role": "user", "content": "{{ item.prompt }}"},
        ],
        "followups": ["You gave {{ turns | length }} answer(s); first: {{ turns[0].response }}"],
        "cache": {"enabled": False},
    }
    realtime = trialrun.run(base_config(**changes))
    batch = trialrun.run(batch_config(**changes), wait=True)
    # The mock's answer is drawn from the prompt: a follow-up rendered differently (a few-shot
    # line counted as a turn) would answer differently.
    assert responses(batch) == responses(realtime)


def test_per_request_errors_are_retried_in_later_batches_up_to_the_attempts() -> None:
    run = trialrun.run(batch_config(mock={"batch_errors": 0.3}, retry={"attempts": 10}), wait=True)
    assert run.counts()["done"] == 16
    assert sum(r["retries"] for r in run.records()) > 0
    assert len(batches(run)) > 2  # the failed requests went out again

    failing = trialrun.run(
        batch_config(name="fails", mock={"batch_errors": 1.0}, retry={"attempts": 2}), wait=True
    )
    records = list(failing.records())
    assert {r["status"] for r in records} == {"failed"}
    assert all("gave up after 2 attempts" in r["error"] for r in records)
    assert len(batches(failing)) == 2  # two attempts of the first turn, no second stage


def test_expired_requests_are_resubmitted_without_using_an_attempt() -> None:
    notes = Notes()
    run = trialrun.run(
        batch_config(mock={"batch_expire": 0.5}, retry={"attempts": 1}), wait=True, observer=notes
    )
    assert run.counts()["done"] == 16  # one attempt allowed, yet nothing failed
    assert any("expired" in n for n in notes.warnings)
    assert any(b["provider_state"] == "expired" for b in batches(run))


def test_collect_is_idempotent_while_batches_are_out() -> None:
    run = trialrun.run(batch_config(mock={"batch_delay_s": 3600}))
    for _ in range(3):
        trialrun.collect(run)
    assert len(batches(run)) == 1  # polled three times, submitted once
    assert run.counts()["pending"] == 16


def test_a_second_collect_leaves_a_locked_run_alone() -> None:
    run = trialrun.run(batch_config(mock={"batch_delay_s": 3600}))
    notes = Notes()
    handle = _lock(run.path)
    try:
        trialrun.collect(run, observer=notes)  # no error: cron must not fail
    finally:
        handle.close()
    assert notes.warnings and "another trialrun" in notes.warnings[0]
    assert len(batches(run)) == 1


def test_limits_split_a_stage_into_several_batches() -> None:
    run = trialrun.run(batch_config(batch={**FAST, "max_requests": 5}), wait=True)
    sizes = [(b["stage"], b["requests"]) for b in batches(run)]
    assert sizes == [(0, 5), (0, 5), (0, 5), (0, 1), (1, 5), (1, 5), (1, 5), (1, 1)]
    assert run.counts()["done"] == 16


def test_a_late_trial_never_holds_back_the_ready_ones() -> None:
    # 16 trials; the first stage splits into 4 batches. The next turns of the trials whose
    # batch ended go out while others are still out.
    run = trialrun.run(batch_config(batch={**FAST, "max_requests": 4}))
    first = batches(run)
    assert len(first) == 4
    store_path = run.path / "trialrun.db"
    # Only the first batch has ended (by moving the others' clocks forward in the mock).
    for batch in first[1:]:
        _delay_mock_batch(batch["batch_id"], 3600)
    trialrun.collect(run)
    second = [b for b in batches(run) if b["stage"] == 1]
    assert [b["requests"] for b in second] == [4]
    with Store(store_path, readonly=True) as store:
        assert store.batch_request_counts() == {"done": 4, "submitted": 16}


def test_results_read_half_way_are_stored_once_and_the_rest_at_the_next_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Outcomes are stored 5 at a time; the first read of the batch's results breaks after 7
    # (the provider unreachable mid-read: one chunk committed, as a crash after it leaves it).
    monkeypatch.setattr(batch_collect, "OUTCOME_CHUNK", 5)
    read = MockProvider.batch_results
    broken = {"left": 1}

    async def breaks_once(self: MockProvider, batch_id: str) -> AsyncIterator[BatchOutcome]:
        count = 0
        async for outcome in read(self, batch_id):
            if broken["left"] and count == 7:
                broken["left"] -= 1
                raise ConnectionError("connection reset mid-download")
            count += 1
            yield outcome

    monkeypatch.setattr(MockProvider, "batch_results", breaks_once)
    run = trialrun.run(batch_config(followups=[]))
    trialrun.collect(run)
    with Store(run.path / "trialrun.db", readonly=True) as store:
        assert store.batch_request_counts() == {"done": 5, "submitted": 11}
    assert [b["state"] for b in batches(run)] == ["open"]
    assert "batch_error" in [kind for _, kind, _ in run.status()["events"]]

    trialrun.collect(run, wait=True)
    assert run.counts()["done"] == 16
    assert [b["state"] for b in batches(run)] == ["ended"]  # read again, not resubmitted
    with sqlite3.connect(run.path / "trialrun.db") as conn:
        attempts = conn.execute("SELECT trial_id, turn, attempt FROM attempts").fetchall()
    assert len(attempts) == len(set(attempts)) == 16  # each answer stored once


def _delay_mock_batch(batch_id: str, seconds: float) -> None:
    cache = Path.cwd() / "cache" / "mock-batches" / f"{batch_id}.json"
    data = json.loads(cache.read_text())
    data["created"] = time.time() + seconds
    cache.write_text(json.dumps(data))


# ------------------------------------------------------------------ the cache across modes


def test_batch_results_fill_the_cache_so_real_time_never_pays_twice() -> None:
    trialrun.run(batch_config(), wait=True)
    again = trialrun.run(base_config())
    turns = [t for r in again.records() for t in r["turns"]]
    assert len(turns) == 32 and all(t["cache_hit"] for t in turns)


def test_real_time_answers_fill_the_cache_so_a_batch_run_submits_nothing() -> None:
    trialrun.run(base_config())
    run = trialrun.run(batch_config(), wait=True)
    assert run.counts()["done"] == 16
    assert batches(run) == []


# ------------------------------------------------------------------ switching modes


def test_resume_in_real_time_cancels_the_batches_and_says_which() -> None:
    run = trialrun.run(batch_config(mock={"batch_delay_s": 3600}))
    batch_id = batches(run)[0]["batch_id"]
    notes = Notes()
    trialrun.resume(run, mode="realtime", observer=notes)
    assert run.counts()["done"] == 16
    assert any(batch_id in n and "cancelled" in n for n in notes.warnings)
    assert batches(run)[0]["state"] == "abandoned"
    mock_batch = json.loads(
        (Path.cwd() / "cache" / "mock-batches" / f"{batch_id}.json").read_text()
    )
    assert mock_batch["cancelled"] is True
    assert run.status()["mode"] == "realtime"


def test_resume_in_batch_mode_moves_a_real_time_runs_trials_to_batches() -> None:
    prepared = trialrun.load(base_config())
    (run,) = trialrun.api.create_runs([prepared])  # planned, never run
    trialrun.resume(run, mode="batch", wait=True)
    assert run.counts()["done"] == 16
    assert len(batches(run)) == 2


# ------------------------------------------------------------------ the CLI


def test_cli_batch_run_collect_and_status(
    cli: Callable[..., CliResult], write_config: Callable[..., Path]
) -> None:
    path = write_config(mode="batch", batch=FAST)
    result = cli("run", str(path))
    assert result.code == 0, result.err
    assert "trialrun collect" in result.out
    result = cli("status")
    assert "batch mode" in result.out and "open" in result.out
    result = cli("collect", "--wait")
    assert result.code == 0, result.err
    assert "16 done, 0 failed" in result.out
    result = cli("status")
    assert "finished" in result.out and "ended" in result.out


def test_collect_on_a_real_time_run_says_what_to_do(
    cli: Callable[..., CliResult], write_config: Callable[..., Path]
) -> None:
    cli("run", str(write_config()))
    result = cli("collect")
    assert result.code == 2
    assert "trialrun resume" in result.err


def test_batch_mode_with_a_provider_that_has_no_batch_api_is_refused(
    cli: Callable[..., CliResult], write_config: Callable[..., Path]
) -> None:
    path = write_config(mode="batch", models=[{"model": "hf/tiny-model"}])
    result = cli("run", str(path))
    assert result.code == 2
    assert "no batch API" in result.err and "'hf'" in result.err
    assert not Path("runs").exists()


def test_resume_takes_only_a_mode_or_budget_override(
    cli: Callable[..., CliResult], write_config: Callable[..., Path]
) -> None:
    cli("run", str(write_config()))
    result = cli("resume", "repeats=3")
    assert result.code == 2
    assert "mode=realtime, mode=batch or budget.max_usd=N" in result.err
    assert cli("resume", "budget.max_usd=abc").code == 2


@pytest.mark.slow
def test_detach_returns_at_once_and_the_work_goes_on(isolated: Path) -> None:
    import subprocess
    import sys

    config = batch_config(mock={"batch_delay_s": 0.5})
    (isolated / "exp.yaml").write_text(yaml.safe_dump(config))
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "trialrun", "run", "exp.yaml", "--detach"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert time.monotonic() - started < 15
    assert "detached: process" in result.stdout
    run = trialrun.open_run()
    deadline = time.monotonic() + 60
    while run.counts()["done"] < 16 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run.counts()["done"] == 16
    while run.is_running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (run.path / "detached.log").exists()
