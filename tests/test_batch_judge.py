"""Batch mode's judge stage: online judges as one more stage through the judge provider's
batch API (a judge on another provider than the trials included), re-asks as repeated
stages, failures as judge errors, `when: after` once every trial is done, batch errors
and a kill -9 storm during collect: every done trial ends with exactly one judgment per
judge, and no judge call is paid twice."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml

import trialrun
from conftest import base_config, read_results, trialrun_subprocess
from test_executor import items
from trialrun.executor.batch import CollectReport
from trialrun.testing import BatchFaults, FakeServer

KEY = "sk-batch-judge-0123456789"
FAST = {"poll_min_s": 0.01, "poll_max_s": 0.05}
SCHEMA = {"answer": ["pass", "fail"], "reasoning": "str"}


@pytest.fixture
def openai(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    monkeypatch.setenv("FAKE_API_KEY", KEY)
    with FakeServer("openai", api_key=KEY) as server:
        yield server


def on_server(server: FakeServer) -> dict[str, Any]:
    return {
        "model": f"{server.kind}/fake-model",
        "base_url": server.url,
        "api_key": "${env:FAKE_API_KEY}",
    }


def judge(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "model": "mock/judge",
        "prompt": "Question: {{ item.prompt }}\nAnswer: {{ response }}\nGrade the answer.",
        "schema": SCHEMA,
    }
    entry.update(changes)
    return entry


def batch_config(**changes: Any) -> dict[str, Any]:
    config = base_config(mode="batch", batch=FAST, judge=judge())
    config.update(changes)
    return config


def db_rows(run: trialrun.Run, query: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(run.path / "trialrun.db")) as conn:
        return conn.execute(query).fetchall()


def judgment_rows(run: trialrun.Run) -> list[dict[str, Any]]:
    with run.store() as store:
        return store.judgments()


def stages(run: trialrun.Run) -> list[tuple[int, str, int]]:
    """(stage, model label, requests) of each batch, in submission order."""
    return [(b["stage"], b["model"], b["requests"]) for b in run.status()["batches"]]


def judgments_by_trial(run: trialrun.Run) -> Counter[tuple[str, str]]:
    return Counter(
        (trial, name) for trial, name in db_rows(run, "SELECT trial_id, judge FROM judgments")
    )


def assert_judged_once(run: trialrun.Run, names: list[str]) -> list[dict[str, Any]]:
    """Every done record has exactly one judgment per judge, the same as its verdict fields."""
    records = [r for r in run.records() if r["status"] == "done"]
    assert records
    judged = judgments_by_trial(run)
    done_ids = {r["trial_id"] for r in records}
    assert set(judged) == {(t, n) for t in done_ids for n in names}
    assert set(judged.values()) == {1}
    for record in records:
        for name in names:
            outcomes = (record["judges"][name], record["judge_errors"][name])
            assert sum(value is not None for value in outcomes) == 1, record["trial_id"]
    return records


# ------------------------------------------------------------------ the stage


def test_a_two_turn_protocol_plus_an_online_judge_takes_three_stages() -> None:
    run = trialrun.run(batch_config(), wait=True)
    assert run.counts() == {"pending": 0, "running": 0, "done": 16, "failed": 0}
    # Two models share the mock lane; the judge's stage is its own batch, numbered after
    # the trials' last turn.
    assert stages(run) == [(0, "mock/alpha", 16), (1, "mock/alpha", 16), (2, "judge:judge", 16)]
    records = assert_judged_once(run, ["judge"])
    for record in records:
        assert record["judge"]["answer"] in ("pass", "fail") and record["judge"]["reasoning"]
        assert record["judge_error"] is None
        assert len(record["turns"]) == 2  # the judge's reply is no turn of the trial
    assert read_results(run.path) == records  # results.jsonl carries the verdicts too
    # The judge's calls are logged under turn -1 (judge 0), apart from the trials' spend.
    turns = Counter(turn for (turn,) in db_rows(run, "SELECT turn FROM attempts"))
    assert turns == {0: 16, 1: 16, -1: 16}
    assert run.status()["spend"]["calls"] == 32
    (status,) = run.judges()
    assert (status["verdicts"], status["errors"], status["calls"]) == (16, 0, 16)


def test_no_record_commits_before_its_judgments(isolated: Path) -> None:
    # One pass at a time: after the last turn's answers are stored, the trials wait for
    # their judge (pending, no record) and commit with the verdict, never without it.
    run = trialrun.run(batch_config(cache={"enabled": False}))
    seen = []
    for _ in range(6):
        trialrun.collect(run)
        seen.append(run.counts()["done"])
        for record in run.records():
            assert record["judge"] is not None, "a record committed before its judgment"
    assert seen[:3] == [0, 0, 16]  # turn 1 out, judge out, then done with verdicts
    assert_judged_once(run, ["judge"])


def test_re_asks_and_refusals_go_through_batches_as_in_real_time(isolated: Path) -> None:
    dataset = items(4)
    dataset["items"][1]["prompt"] = "[[mock:verdict-invalid-once]] claim 1"
    dataset["items"][2]["prompt"] = "[[mock:verdict-refuse]] claim 2"
    dataset["items"][3]["prompt"] = "[[mock:verdict-garbage]] claim 3"
    config = batch_config(dataset=dataset, grid={}, models=[{"model": "mock/alpha"}])
    config["judge"] = judge(reasks=1)
    run = trialrun.run(config, wait=True)
    records = {r["item_id"]: r for r in assert_judged_once(run, ["judge"])}
    rows = {row["trial_id"]: row for row in judgment_rows(run)}
    asks = {item: rows[r["trial_id"]]["asks"] for item, r in records.items()}
    assert asks == {"q0": 1, "q1": 2, "q2": 1, "q3": 2}
    assert records["q0"]["judge"] is not None and records["q1"]["judge"] is not None
    assert rows[records["q1"]["trial_id"]]["attempts"] == 2  # one call per ask
    refused = rows[records["q2"]["trial_id"]]
    assert (refused["state"], refused["error_kind"]) == ("failed", "refusal")
    assert records["q2"]["judge"] is None and "refused" in records["q2"]["judge_error"]
    garbage = rows[records["q3"]["trial_id"]]
    assert (garbage["error_kind"], records["q3"]["judge"]) == ("parse", None)
    assert "no valid verdict after 2 asks" in records["q3"]["judge_error"]
    # The re-asks were one more stage: 2 turns, the judge, its re-ask.
    assert [s[0] for s in stages(run)] == [0, 1, 2, 2]
    assert [s[2] for s in stages(run)] == [4, 4, 4, 2]
    assert {r["status"] for r in records.values()} == {"done"}  # a judge error fails no trial


def test_batch_errors_still_end_with_one_judgment_per_judge_per_done_trial() -> None:
    config = batch_config(mock={"batch_errors": 0.2}, retry={"attempts": 10})
    config["judge"] = [judge(name="first"), judge(name="second", prompt="Rate: {{ response }}")]
    run = trialrun.run(config, wait=True)
    assert run.counts()["done"] == 16
    records = assert_judged_once(run, ["first", "second"])
    assert all(r["judges"]["first"] and r["judges"]["second"] for r in records)
    rows = judgment_rows(run)
    assert sum(row["attempts"] for row in rows) > 32  # some judge requests were retried
    # Judge 1's requests are turn -2, apart from judge 0's.
    turns = {turn for (turn,) in db_rows(run, "SELECT turn FROM batch_requests WHERE turn < 0")}
    assert turns == {-1, -2}


# ------------------------------------------------------------------ providers and prices


def test_judges_on_other_providers_than_the_trials_are_batched_at_the_batch_price(
    openai: FakeServer,
) -> None:
    # Trials on the mock; one judge on the fake OpenAI Batch API (priced), one on the mock.
    config = batch_config(
        prices={"openai/fake-model": {"input": 3.0, "output": 15.0}},
        judge=[judge(name="gpt", **on_server(openai)), judge(name="mock")],
    )
    run = trialrun.run(config, wait=True)
    records = assert_judged_once(run, ["gpt", "mock"])
    assert all(r["judges"]["gpt"]["answer"] in ("pass", "fail") for r in records)
    assert len(openai.batch_creates()) == 1  # one batch of the judge's 16 asks, nothing else
    (batch,) = openai.batches.values()
    assert len(batch["requests"]) == 16
    body = batch["requests"][0]["body"]
    assert body["response_format"]["type"] == "json_schema"  # structured output in the line
    assert batch["requests"][0]["custom_id"].endswith("_j0")
    for row in judgment_rows(run):
        if row["judge"] != "gpt":
            assert row["cost_usd"] == 0.0
            continue
        full = (row["input_tokens"] * 3.0 + row["output_tokens"] * 15.0) / 1e6
        assert row["cost_usd"] == pytest.approx(full / 2)  # the batch price
        assert row["cost_usd"] > 0
    assert run.status()["spend"]["cost_usd"] == 0.0  # the trials' own spend: the mock's


def test_a_judge_on_the_mock_grades_trials_on_a_fake_server(openai: FakeServer) -> None:
    config = batch_config(models=[on_server(openai)], grid={}, judge=judge())
    run = trialrun.run(config, wait=True)
    records = assert_judged_once(run, ["judge"])
    assert len(records) == 4
    assert len(openai.batch_creates()) == 2  # the two turns; the judge went to the mock
    assert stages(run)[-1] == (2, "judge:judge", 4)


def test_a_judge_request_that_fails_leaves_a_judge_error_and_the_trial_done(
    openai: FakeServer,
) -> None:
    openai.set_batch(faults=BatchFaults(error=1.0, seed=1))
    config = batch_config(judge=judge(**on_server(openai)), retry={"attempts": 2})
    run = trialrun.run(config, wait=True)
    assert run.counts()["done"] == 16
    records = assert_judged_once(run, ["judge"])
    assert all(r["judge"] is None and r["judge_error"] for r in records)
    assert "gave up after 2 attempts" in records[0]["judge_error"]
    rows = judgment_rows(run)
    assert {(row["state"], row["error_kind"], row["attempts"]) for row in rows} == {
        ("failed", "api", 2)
    }
    assert len(openai.batch_creates()) == 2  # the judge's asks, then their retry


# ------------------------------------------------------------------ after, and gaps


def test_after_judges_run_once_every_trial_is_done_and_patch_the_records() -> None:
    config = batch_config(cache={"enabled": False})
    later = judge(name="later", when="after", prompt="Is this right? {{ response }}")
    config["judge"] = [judge(name="online"), later]
    run = trialrun.run(config)
    passes = []
    for _ in range(8):
        trialrun.collect(run)
        records = list(run.records())
        passes.append(
            (
                len(records),
                sum(r["judges"]["online"] is not None for r in records),
                sum(r["judges"]["later"] is not None for r in records),
            )
        )
    # Turn 1 out, online judge out, then 16 records with the online verdict while the
    # `after` judge's batch is out, then patched with it.
    assert passes[:4] == [(0, 0, 0), (0, 0, 0), (16, 16, 0), (16, 16, 16)]
    records = assert_judged_once(run, ["online", "later"])
    assert read_results(run.path) == records  # results.jsonl shows the patched records
    assert [s[0] for s in stages(run)] == [0, 1, 2, 2]
    assert stages(run)[-1] == (2, "judge:later", 16)


def test_records_committed_before_a_judge_was_added_are_judged_in_batch_mode() -> None:
    plain = trialrun.run(base_config(mode="batch", batch=FAST), wait=True)
    assert all(r["judge"] is None for r in plain.records())
    with plain.store(readonly=False) as store:  # as if the config had had the judge
        store.conn.execute(
            "UPDATE meta SET value=json_set(value, '$.judge', json(?)) WHERE key='experiment'",
            (json.dumps(judge()),),
        )
        store.conn.commit()
    trialrun.collect(plain, wait=True)
    assert_judged_once(plain, ["judge"])


def test_the_collect_line_counts_judge_requests_out() -> None:
    report = CollectReport(open_batches=1, judge_requests=16)
    assert report.line() == "1 batch out; 16 judge requests out"
    assert "judge" not in CollectReport(open_batches=1).line()


# ------------------------------------------------------------------ kill -9


@pytest.mark.slow
def test_kill_storm_during_collect_judges_every_trial_once_and_pays_each_ask_once(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_API_KEY", KEY)
    victim: dict[str, subprocess.Popen[str]] = {}
    judge_batches: list[str] = []

    def kill_at_the_first_judge_batch(batch: dict[str, Any]) -> None:
        # Killed after the provider accepted the judge's batch, before the id is stored.
        stored = server.batches[batch["id"]]  # called after the server's lock is released
        is_judge = stored["requests"][0]["custom_id"].endswith("_j0")
        process = victim.get("collect")
        if process is not None and is_judge and not judge_batches:
            judge_batches.append(batch["id"])
            os.kill(process.pid, signal.SIGKILL)

    with FakeServer(
        "openai",
        api_key=KEY,
        record=False,
        batch_delay_s=0.2,
        on_batch_create=kill_at_the_first_judge_batch,
    ) as server:
        config = batch_config(
            models=[on_server(server)],
            grid={},
            dataset=items(40),
            judge=judge(**on_server(server)),
            batch={"poll_min_s": 0.05, "poll_max_s": 0.1},
        )
        path = isolated / "exp.yaml"
        path.write_text(yaml.safe_dump(config))
        (run,) = trialrun.api.create_runs([trialrun.load(path)])
        rng = random.Random(3)
        killed = 0
        for _ in range(5):
            seen = len(server.batch_creates())
            process = trialrun_subprocess(
                "collect", str(run.path), "--wait", "--quiet", cwd=isolated
            )
            victim["collect"] = process  # the one that submits the judge's first batch dies
            deadline = time.monotonic() + 60
            while len(server.batch_creates()) == seen and process.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.02)  # killed once it has made progress, never while importing
            time.sleep(rng.uniform(0.0, 0.3))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.communicate(timeout=60)
            killed += process.returncode == -signal.SIGKILL
            victim.clear()
        assert killed >= 3  # most died mid-collect, not after finishing
        trialrun.collect(run, wait=True)
        assert run.counts()["done"] == 40
        assert_judged_once(run, ["judge"])
        assert judge_batches  # a judge batch was accepted by a process that died
        events = [kind for _, kind, _ in run.status()["events"]]
        assert "batch_reconciled" in events
        # Each judge ask succeeded in exactly one batch, and was paid once in the store.
        succeeded: Counter[str] = Counter()
        for batch in server.batches.values():
            for custom_id, outcome in batch["outcomes"].items():
                if outcome == "ok" and batch.get("results", {}).get(custom_id) != "canceled":
                    succeeded[custom_id] += 1
        judged = [c for c in succeeded if c.endswith("_j0")]
        assert len(judged) == 40 and max(succeeded.values()) == 1
        paid = db_rows(
            run,
            "SELECT trial_id, cache_key, COUNT(*) FROM attempts WHERE turn < 0 AND "
            "response IS NOT NULL AND attempt > 0 GROUP BY 1, 2",
        )
        assert len(paid) == 40 and {n for _, _, n in paid} == {1}


def test_a_49_turn_protocol_plus_a_judge_is_50_stages() -> None:
    followups = [f"Follow-up {k + 1}: sure?" for k in range(48)]
    config = batch_config(followups=followups, grid={}, models=[{"model": "mock/alpha"}])
    run = trialrun.run(config, wait=True)
    assert [s[0] for s in stages(run)] == list(range(50))
    assert stages(run)[-1] == (49, "judge:judge", 4)
    records = assert_judged_once(run, ["judge"])
    assert all(len(r["turns"]) == 49 for r in records)
