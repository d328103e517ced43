"""The real-time executor, end to end through `trialrun.run`: retries, failures, cache, limits, turns."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

import trialrun
from conftest import base_config, only_run, read_results
from trialrun.errors import RunIncomplete

FAST_RETRY = {"attempts": 8, "base_wait_s": 0.001, "max_wait_s": 0.01}


def items(n: int, prompt: str = "Is claim {i} true?") -> dict[str, Any]:
    return {
        "items": [
            {"id": f"q{i}", "prompt": prompt.format(i=i), "category": f"c{i % 2}"} for i in range(n)
        ]
    }


def attempts(run: trialrun.Run, where: str = "1", *args: Any) -> list[dict[str, Any]]:
    """Rows of the run's attempts table (as dicts) matching a SQL condition."""
    conn = sqlite3.connect(run.path / "trialrun.db")
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(f"SELECT * FROM attempts WHERE {where} ORDER BY id", args)
        return [dict(row) for row in rows]
    finally:
        conn.close()


def trial_states(run: trialrun.Run) -> dict[str, list[str]]:
    """Trial states by model, as the store holds them."""
    conn = sqlite3.connect(run.path / "trialrun.db")
    try:
        by_model: dict[str, list[str]] = {}
        for model, state in conn.execute("SELECT model, state FROM trials ORDER BY seq"):
            by_model.setdefault(model, []).append(state)
        return by_model
    finally:
        conn.close()


# ------------------------------------------------------------------ a plain run


def test_a_plain_run_finishes_every_trial_and_writes_results(isolated: Path) -> None:
    run = trialrun.run(base_config())
    assert run.path.resolve().parent == isolated / "runs"
    assert only_run(isolated / "runs") == run.path.resolve()
    assert run.counts() == {"pending": 0, "running": 0, "done": 16, "failed": 0}
    records = read_results(run.path)
    assert len(records) == 16
    assert records == list(run.records())
    assert all(r["status"] == "done" and len(r["turns"]) == 2 for r in records)


def test_a_run_from_a_yaml_config_file_works_like_a_dict(write_config: Any) -> None:
    run = trialrun.run(write_config(repeats=2), ["grid.temperature=[0.0]"])
    assert run.counts()["done"] == 4 * 2 * 1 * 2


RECORD_KEYS = {
    "run_id",
    "trial_id",
    "item_id",
    "item",
    "model",
    "grid",
    "repeat",
    "seed",
    "status",
    "turns",
    "params",
    "output",
    "scores",
    "score_errors",
    "judge",
    "judge_error",
    "judges",
    "judge_errors",
    "error",
    "started_at",
    "finished_at",
    "elapsed_s",
    "retries",
    "cost_usd",
    "canaries",
    "trialrun_version",
    "config_hash",
}
TURN_KEYS = {
    "response",
    "usage",
    "logprobs",
    "finish_reason",
    "latency_s",
    "attempts",
    "cache_hit",
    "cost_usd",
    "request_id",
    "served_model",
}


def test_records_follow_the_record_contract() -> None:
    run = trialrun.run(base_config())
    records = read_results(run.path)
    seen_cells = set()
    for record in records:
        assert record.keys() >= RECORD_KEYS
        assert record["run_id"] == run.run_id
        assert record["trial_id"].startswith("t_")
        assert record["item_id"] in {"q0", "q1", "q2", "q3"}
        # The item without its id field, everything else kept.
        assert record["item"] == {
            "prompt": f"Is claim {record['item_id'][1:]} true?",
            "category": f"c{int(record['item_id'][1:]) % 2}",
        }
        assert record["model"] in {"mock/alpha", "mock/beta"}
        assert record["grid"] in ({"temperature": 0.0}, {"temperature": 0.7})
        assert record["repeat"] == 0
        assert isinstance(record["seed"], int)
        assert record["status"] == "done"
        assert record["error"] is None
        assert record["output"] is None
        assert record["judge"] is None and record["judge_error"] is None
        # Params as sent: config params, grid sampling params, and the trial's seed.
        assert record["params"] == {
            "max_tokens": 32,
            "temperature": record["grid"]["temperature"],
            "seed": record["seed"],
        }
        assert record["retries"] == 0
        assert record["elapsed_s"] >= 0
        assert record["started_at"].endswith("Z") and record["finished_at"].endswith("Z")
        assert record["started_at"] <= record["finished_at"]
        assert len(record["turns"]) == 2
        for turn in record["turns"]:
            assert turn.keys() >= TURN_KEYS
            assert isinstance(turn["response"], str) and turn["response"]
            usage = turn["usage"]
            assert set(usage) == {"input", "output", "total"}
            assert usage["total"] == usage["input"] + usage["output"] > 0
            assert turn["logprobs"] is None
            assert turn["finish_reason"] in {"stop", "length"}
            assert turn["latency_s"] >= 0
            assert turn["attempts"] == 1
            assert turn["cache_hit"] is False
            assert turn["cost_usd"] == 0.0
            assert turn["request_id"].startswith("mock-")
            assert turn["served_model"] == record["model"].split("/", 1)[1]
        seen_cells.add((record["item_id"], record["model"], record["grid"]["temperature"]))
    assert len(seen_cells) == 16
    assert len({r["trial_id"] for r in records}) == 16
    assert len({r["seed"] for r in records}) == 16


def test_logprobs_asked_for_in_model_params_reach_the_record() -> None:
    config = base_config(
        models=[{"model": "mock/alpha", "params": {"top_logprobs": 3}}, {"model": "mock/beta"}],
        followups=[],
    )
    records = read_results(trialrun.run(config).path)
    for record in records:
        (turn,) = record["turns"]
        if record["model"] == "mock/alpha":
            assert record["params"]["top_logprobs"] == 3
            assert len(turn["logprobs"]) == turn["usage"]["output"]
            assert all(len(entry["top"]) == 3 for entry in turn["logprobs"])
        else:
            assert turn["logprobs"] is None


def test_max_tokens_in_the_grid_reaches_the_request_and_truncates() -> None:
    config = base_config(grid={"max_tokens": [2]}, followups=[])
    records = read_results(trialrun.run(config).path)
    assert all(r["params"]["max_tokens"] == 2 for r in records)
    assert all(r["turns"][0]["finish_reason"] == "length" for r in records)
    assert all(r["turns"][0]["usage"]["output"] == 2 for r in records)


# ------------------------------------------------------------------ retries


def test_transient_faults_are_retried_until_every_trial_is_done() -> None:
    config = base_config(
        repeats=3,
        mock={
            "errors": {"rate_limit": 0.04, "server": 0.03, "overloaded": 0.03},
            "retry_after_s": 0.001,
        },
        retry=FAST_RETRY,
    )
    run = trialrun.run(config)
    assert run.counts() == {"pending": 0, "running": 0, "done": 48, "failed": 0}
    records = read_results(run.path)
    assert all(r["status"] == "done" and r["error"] is None for r in records)
    retried = [r for r in records if r["retries"] > 0]
    assert retried
    for record in retried:
        assert record["retries"] == sum(t["attempts"] - 1 for t in record["turns"])

    failed = attempts(run, "error IS NOT NULL")
    assert failed
    assert all(row["error_kind"] == "retryable" for row in failed)
    assert all("injected" in row["error"] for row in failed)
    assert {row["error"].split()[2] for row in failed} <= {"429", "500", "529"}
    assert all(row["response"] is None for row in failed)
    # Each failed attempt is followed by a later attempt of the same request.
    for row in failed:
        later = attempts(
            run,
            "trial_id=? AND turn=? AND attempt=?",
            row["trial_id"],
            row["turn"],
            row["attempt"] + 1,
        )
        assert len(later) == 1
    # Every retried record's turn answer is the attempt that succeeded, not the failures.
    assert len(attempts(run, "response IS NOT NULL")) == 48 * 2


def test_a_request_that_keeps_failing_fails_its_trial_after_the_last_attempt() -> None:
    config = base_config(
        followups=[],
        mock={"errors": {"server": 1.0}},
        retry={"attempts": 3, "base_wait_s": 0.001, "max_wait_s": 0.001},
    )
    run = trialrun.run(config)
    records = read_results(run.path)
    assert run.counts()["failed"] == 16
    for record in records:
        assert record["status"] == "failed"
        assert "500" in record["error"]
        assert "gave up after 3 attempts" in record["error"]
        assert record["turns"] == []
        assert record["retries"] == 2  # the failed attempts count as retries too
    rows = attempts(run)
    assert len(rows) == 16 * 3
    assert {row["attempt"] for row in rows} == {1, 2, 3}


def test_a_timed_out_request_is_retried_and_recorded_as_a_timeout() -> None:
    config = base_config(
        mock={"errors": {"timeout": 0.3}},
        retry={**FAST_RETRY, "attempts": 10, "timeout_s": 0.05},
    )
    run = trialrun.run(config)
    assert run.counts()["done"] == 16
    records = read_results(run.path)
    assert any(r["retries"] > 0 for r in records)
    timed_out = attempts(run, "error IS NOT NULL")
    assert timed_out
    assert {row["error"] for row in timed_out} == {"request timed out"}
    assert {row["error_kind"] for row in timed_out} == {"retryable"}
    assert all(row["latency_s"] >= 0.05 * 0.9 for row in timed_out)


# ------------------------------------------------------------------ failures


def test_final_errors_fail_only_that_models_trials_without_retrying() -> None:
    config = base_config(
        models=[{"model": "mock/alpha", "options": {"fail": "final"}}, {"model": "mock/beta"}],
        retry=FAST_RETRY,
    )
    run = trialrun.run(config)  # the run goes on: no exception
    records = read_results(run.path)
    alpha = [r for r in records if r["model"] == "mock/alpha"]
    beta = [r for r in records if r["model"] == "mock/beta"]
    assert len(alpha) == len(beta) == 8
    for record in alpha:
        assert record["status"] == "failed"
        assert "400" in record["error"]
        assert record["turns"] == []
    assert all(r["status"] == "done" and r["error"] is None for r in beta)
    assert run.counts() == {"pending": 0, "running": 0, "done": 8, "failed": 8}
    alpha_ids = {r["trial_id"] for r in alpha}
    alpha_attempts = [row for row in attempts(run) if row["trial_id"] in alpha_ids]
    assert len(alpha_attempts) == 8  # one each: a 400 is never retried
    assert {row["error_kind"] for row in alpha_attempts} == {"final"}


def test_a_refused_prompt_fails_as_final_with_no_retry() -> None:
    data = items(3)
    data["items"][1]["prompt"] = "Please answer [[mock:refuse]] this"
    config = base_config(dataset=data, models=[{"model": "mock/alpha"}], retry=FAST_RETRY)
    run = trialrun.run(config)
    records = read_results(run.path)
    refused = [r for r in records if r["item_id"] == "q1"]
    others = [r for r in records if r["item_id"] != "q1"]
    assert len(refused) == 2 and len(others) == 4
    for record in refused:
        assert record["status"] == "failed"
        assert "content policy" in record["error"]
        assert record["retries"] == 0
        rows = attempts(run, "trial_id=?", record["trial_id"])
        assert len(rows) == 1
        assert rows[0]["error_kind"] == "final"
    assert all(r["status"] == "done" for r in others)


def _auth_config(n_items: int, limits: dict[str, Any], **changes: Any) -> dict[str, Any]:
    # Under --mock, `openai/...` is answered by the mock provider but keeps its own lane
    # (auth stops are keyed by the configured provider name; its limits are the mock's).
    return base_config(
        dataset=items(n_items),
        models=[
            {"model": "openai/alpha", "options": {"fail": "auth"}},
            {"model": "mock/beta"},
        ],
        limits=limits,
        retry=FAST_RETRY,
        **changes,
    )


def test_auth_failure_stops_its_provider_and_leaves_its_trials_pending(isolated: Path) -> None:
    config = _auth_config(10, {}, mock={"concurrency": 2})
    with pytest.raises(RunIncomplete) as info:
        trialrun.run(config, mock=True)
    message = str(info.value)
    assert "openai" in message
    assert "401" in message
    assert "resume" in message

    run = trialrun.open_run()
    states = trial_states(run)
    assert states["openai/alpha"] == ["pending"] * 20  # not failed: fix the key and resume
    assert states["mock/beta"] == ["done"] * 20
    records = read_results(run.path)
    assert {r["model"] for r in records} == {"mock/beta"}
    assert len(records) == 20

    auth_rows = attempts(run, "error_kind='auth'")
    assert 1 <= len(auth_rows) <= 2  # at most the requests already in flight
    assert all("401" in row["error"] for row in auth_rows)


def test_auth_failure_sends_no_request_that_was_still_waiting_for_the_rate_limiter() -> None:
    # One request a 0.1 s with room for one: when the first call comes back 401, the
    # other workers are queued in the rate limiter. They must not send their requests.
    config = base_config(
        dataset=items(10),
        models=[{"model": "mock/alpha", "options": {"fail": "auth"}}],
        limits={"mock": {"rpm": 600, "burst_s": 0.1, "concurrency": 8}},
        retry=FAST_RETRY,
    )
    with pytest.raises(RunIncomplete, match="mock"):
        trialrun.run(config)
    run = trialrun.open_run()
    auth_rows = attempts(run, "error_kind='auth'")
    # Each extra row is a request sent (at the rate limiter's pace) after the lane stopped.
    assert len(auth_rows) <= 2, f"{len(auth_rows)} requests got a 401"
    assert trial_states(run)["mock/alpha"] == ["pending"] * 20


def test_an_auth_stopped_run_resumes_once_the_key_is_fixed() -> None:
    config = _auth_config(2, {"openai": {"concurrency": 1}})
    with pytest.raises(RunIncomplete):
        trialrun.run(config, mock=True)
    run = trialrun.open_run()
    done_before = {r["trial_id"] for r in run.records()}
    # Resume re-reads the stored config; the failure option is still there, so it stops again,
    # without touching the finished trials.
    with pytest.raises(RunIncomplete):
        trialrun.resume(run)
    assert {r["trial_id"] for r in run.records()} == done_before
    assert run.counts()["pending"] == 4


# ------------------------------------------------------------------ response cache


def _turns(run: trialrun.Run) -> list[dict[str, Any]]:
    return [turn for record in run.records() for turn in record["turns"]]


def test_an_identical_second_run_is_answered_from_the_cache(isolated: Path) -> None:
    config = base_config(mock={"latency_s": 0.5})
    start = time.perf_counter()
    first = trialrun.run(config)
    first_s = time.perf_counter() - start
    assert first_s >= 2 * 0.5 * 0.9  # two turns, each a 0.5 s call
    assert not any(t["cache_hit"] for t in _turns(first))

    start = time.perf_counter()
    second = trialrun.run(config)
    second_s = time.perf_counter() - start
    assert second.path != first.path
    assert second.path.parent == first.path.parent

    turns = _turns(second)
    assert len(turns) == 32
    assert all(t["cache_hit"] is True for t in turns)
    assert all(t["cost_usd"] == 0.0 for t in turns)
    assert all(t["attempts"] == 0 for t in turns)
    assert all(t["latency_s"] == 0.0 for t in turns)
    assert all(r["retries"] == 0 for r in second.records())
    # Same answers as the first run, trial by trial.
    assert [t["response"] for t in turns] == [t["response"] for t in _turns(first)]
    rows = attempts(second)
    assert len(rows) == 32
    assert all(row["cache_hit"] == 1 and row["attempt"] == 0 for row in rows)
    assert second.status()["spend"]["cache_hits"] == 32
    # No provider call was made: one call alone would take 0.5 s, all of them at least 1 s.
    assert second_s < 1.0


def test_disabled_cache_gives_no_hits() -> None:
    config = base_config(cache={"enabled": False})
    trialrun.run(config)
    second = trialrun.run(config)
    turns = _turns(second)
    assert turns and not any(t["cache_hit"] for t in turns)
    assert all(t["attempts"] == 1 for t in turns)


def test_cache_dir_setting_is_used(isolated: Path) -> None:
    folder = isolated / "elsewhere"
    config = base_config(cache={"dir": str(folder)})
    trialrun.run(config)
    assert (folder / "responses.db").is_file()
    assert all(t["cache_hit"] for t in _turns(trialrun.run(config)))


def test_a_different_seed_gives_no_cache_hits() -> None:
    trialrun.run(base_config(seed=7))
    second = trialrun.run(base_config(seed=8))
    turns = _turns(second)
    assert len(turns) == 32  # 16 trials x 2 turns, every one answered
    assert not any(t["cache_hit"] for t in turns)


def test_a_different_temperature_gives_no_cache_hits() -> None:
    trialrun.run(base_config(grid={"temperature": [0.0, 0.7]}))
    second = trialrun.run(base_config(grid={"temperature": [0.3, 1.0]}))
    assert not any(t["cache_hit"] for t in _turns(second))


def test_a_different_repeat_gives_no_cache_hit() -> None:
    trialrun.run(base_config(repeats=1))
    second = trialrun.run(base_config(repeats=2))
    records = list(second.records())
    for record in records:
        hits = {t["cache_hit"] for t in record["turns"]}
        assert hits == ({True} if record["repeat"] == 0 else {False}), record["repeat"]


def test_a_different_model_gives_no_cache_hits() -> None:
    trialrun.run(base_config(models=[{"model": "mock/alpha"}]))
    second = trialrun.run(base_config(models=[{"model": "mock/gamma"}]))
    assert not any(t["cache_hit"] for t in _turns(second))


# ------------------------------------------------------------------ limits


def test_concurrency_limit_caps_calls_in_flight() -> None:
    # 24 calls of 0.1 s, 3 at a time, need 8 rounds: 0.8 s at least. Uncapped they take 0.1 s.
    config = base_config(
        dataset=items(12),
        grid={},
        followups=[],
        mock={"latency_s": 0.1},
        limits={"mock": {"concurrency": 3}},
        cache={"enabled": False},
    )
    start = time.perf_counter()
    run = trialrun.run(config)
    elapsed = time.perf_counter() - start
    assert run.counts()["done"] == 24
    assert elapsed >= 0.8 * 0.9


def test_mock_concurrency_is_the_default_when_limits_name_none() -> None:
    config = base_config(
        dataset=items(4),
        grid={},
        followups=[],
        mock={"latency_s": 0.1, "concurrency": 2},
        cache={"enabled": False},
    )
    start = time.perf_counter()
    trialrun.run(config)
    # 8 calls of 0.1 s, 2 at a time: 0.4 s at least.
    assert time.perf_counter() - start >= 0.4 * 0.9


def test_rpm_limit_spaces_calls() -> None:
    # 600 rpm is 10 a second; burst_s=0.1 leaves room for one. 8 calls need 0.7 s at least.
    config = base_config(
        dataset=items(4),
        grid={},
        followups=[],
        limits={"mock": {"rpm": 600, "burst_s": 0.1}},
        cache={"enabled": False},
    )
    start = time.perf_counter()
    trialrun.run(config)
    assert time.perf_counter() - start >= 0.7 * 0.9


# ------------------------------------------------------------------ multi-turn


def test_turn_two_sees_turn_ones_answer_and_the_rendered_followup() -> None:
    run = trialrun.run(base_config())
    records = {r["trial_id"]: r for r in run.records()}
    second_turns = attempts(run, "turn=1")
    assert len(second_turns) == 16
    for row in second_turns:
        record = records[row["trial_id"]]
        request = json.loads(row["request"])
        messages = request["messages"]
        category = record["item"]["category"]
        assert messages == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": record["item"]["prompt"]},
            {"role": "assistant", "content": record["turns"][0]["response"]},
            {"role": "user", "content": f"Sure? ({category})"},
        ]
        assert request["model"] == record["model"].split("/", 1)[1]
        assert request["params"] == record["params"]
    first_turns = attempts(run, "turn=0")
    assert all(len(json.loads(row["request"])["messages"]) == 2 for row in first_turns)


def test_followups_can_quote_earlier_turns() -> None:
    config = base_config(
        followups=[
            "You said: {{ turns[0].response }} Sure?",
            "Turn {{ turn }}; first you said {{ turns[0].response }} then {{ turns[1].response }}",
        ],
        models=[{"model": "mock/alpha"}],
        grid={},
    )
    run = trialrun.run(config)
    for record in run.records():
        first, second, third = (t["response"] for t in record["turns"])
        rows = attempts(run, "trial_id=?", record["trial_id"])
        assert [row["turn"] for row in rows] == [0, 1, 2]
        turn2 = json.loads(rows[1]["request"])["messages"]
        turn3 = json.loads(rows[2]["request"])["messages"]
        assert turn2[-1] == {"role": "user", "content": f"You said: {first} Sure?"}
        assert turn3[-2] == {"role": "assistant", "content": second}
        assert turn3[-1]["content"] == f"Turn 3; first you said {first} then {second}"
        assert third


@pytest.mark.parametrize("asked", [3600.0, 1e308, float("inf")])
def test_a_huge_retry_after_is_capped_at_max_wait_and_noted(asked: float) -> None:
    waits: list[tuple[str, float, str]] = []

    class Watch(trialrun.Observer):
        def waiting(self, run: trialrun.Run, lane: str, seconds: float, note: str) -> None:
            waits.append((lane, seconds, note))

    config = base_config(
        mock={"errors": {"rate_limit": 0.5}, "retry_after_s": asked},
        retry={"attempts": 20, "base_wait_s": 0.001, "max_wait_s": 0.05, "timeout_s": 10},
    )
    started = time.monotonic()
    run = trialrun.run(config, observer=Watch())
    assert time.monotonic() - started < 30
    assert run.counts()["done"] == 16
    store = run.store()
    try:
        notes = [detail for _, kind, detail in store.events(100) if kind == "retry_after"]
    finally:
        store.close()
    assert notes and all("capped at retry.max_wait_s" in n for n in notes)
    assert waits and all(lane == "mock" and seconds == 0.05 for lane, seconds, _ in waits)
