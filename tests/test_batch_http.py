"""Batch mode against fake OpenAI Batch and Anthropic Message Batches servers over real
HTTP, through the official SDKs: staged conversations, per-request failures, expiry,
batch-discount costs, and a `collect` killed between the provider accepting a batch and
the store recording it."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import trialrun
from conftest import base_config, read_results, trialrun_subprocess
from test_executor import items
from trialrun.testing import BatchFaults, FakeServer

KEY = "sk-batch-test-0123456789"
FAST = {"poll_min_s": 0.01, "poll_max_s": 0.05}


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, FakeServer]]:
    monkeypatch.setenv("FAKE_API_KEY", KEY)
    with FakeServer("openai", api_key=KEY) as oa, FakeServer("anthropic", api_key=KEY) as an:
        yield {"openai": oa, "anthropic": an}


def model(server: FakeServer) -> dict[str, Any]:
    return {
        "model": f"{server.kind}/fake-model",
        "base_url": server.url,
        "api_key": "${env:FAKE_API_KEY}",
    }


def config(
    servers: dict[str, FakeServer], n: int = 4, followups: int = 1, **changes: Any
) -> dict[str, Any]:
    result = base_config(
        mode="batch",
        batch=FAST,
        dataset=items(n),
        grid={},
        models=[model(s) for s in servers.values()],
        followups=[
            f"Follow-up {k + 1}: are you sure? ({{{{ item.category }}}})" for k in range(followups)
        ],
        prices={f"{k}/fake-model": {"input": 3.0, "output": 15.0} for k in servers},
    )
    result.update(changes)
    return result


def test_a_49_stage_conversation_takes_exactly_49_submissions_per_provider(
    servers: dict[str, FakeServer],
) -> None:
    # 1 question + 48 follow-ups over 200 trials (100 items × 2 providers).
    run = trialrun.run(config(servers, n=100, followups=48), wait=True)
    assert run.counts() == {"pending": 0, "running": 0, "done": 200, "failed": 0}
    for server in servers.values():
        assert len(server.batch_creates()) == 49
        sizes = {len(b["requests"]) for b in server.batches.values()}
        assert sizes == {100}
    records = read_results(run.path)
    assert all(len(r["turns"]) == 49 for r in records)
    # Turn k+1 was built from the answer to turn k: the last request holds the whole talk.
    last = servers["anthropic"].batches[servers["anthropic"].batch_creates()[-1]]
    by_id = {request["custom_id"]: request for request in last["requests"]}
    trial = next(
        r for r in records if r["model"] == "anthropic/fake-model" and r["item_id"] == "q0"
    )
    messages = by_id[f"{trial['trial_id']}_t48"]["params"]["messages"]
    assert len(messages) == 49 * 2 - 1
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    assert answers == [t["response"] for t in trial["turns"][:-1]]
    assert messages[-1]["content"] == "Follow-up 48: are you sure? (c0)"


def test_costs_use_the_batch_discount(servers: dict[str, FakeServer]) -> None:
    run = trialrun.run(config(servers), wait=True)
    turns = [t for r in read_results(run.path) for t in r["turns"]]
    assert len(turns) == 16
    for turn in turns:
        full = (turn["usage"]["input"] * 3.0 + turn["usage"]["output"] * 15.0) / 1e6
        assert turn["cost_usd"] == pytest.approx(full / 2)
    assert run.status()["spend"]["cost_usd"] == pytest.approx(sum(t["cost_usd"] for t in turns))


def test_per_request_failures_and_expiry_are_resubmitted_until_done(
    servers: dict[str, FakeServer],
) -> None:
    for server in servers.values():
        server.set_batch(faults=BatchFaults(error=0.2, expire=0.2, seed=5))
    run = trialrun.run(config(servers, n=10, retry={"attempts": 10}), wait=True)
    assert run.counts()["done"] == 20
    for server in servers.values():
        assert len(server.batch_creates()) > 2  # failed and expired requests went out again
    states = {b["provider_state"] for b in run.status()["batches"]}
    assert "expired" in states or any("expired" in str(b["note"]) for b in run.status()["batches"])


def test_final_errors_inside_a_batch_fail_their_trial_only(servers: dict[str, FakeServer]) -> None:
    dataset = items(4)
    dataset["items"][2]["prompt"] = "[[status:400]] a bad request"
    run = trialrun.run(config(servers, dataset=dataset), wait=True)
    records = {(r["model"], r["item_id"]): r for r in read_results(run.path)}
    failed = [key for key, r in records.items() if r["status"] == "failed"]
    assert sorted(failed) == [("anthropic/fake-model", "q2"), ("openai/fake-model", "q2")]
    assert all(
        "400" in records[key]["error"] or "invalid_request" in records[key]["error"]
        for key in failed
    )
    assert sum(1 for r in records.values() if r["status"] == "done") == 6


def test_resume_in_real_time_finishes_the_stragglers_of_a_slow_batch(
    servers: dict[str, FakeServer],
) -> None:
    for server in servers.values():
        server.set_batch(delay_s=3600)
    run = trialrun.run(config(servers))
    out = {s.kind: s.batch_creates() for s in servers.values()}
    assert all(len(ids) == 1 for ids in out.values())
    trialrun.resume(run, mode="realtime")
    assert run.counts()["done"] == 8
    for server in servers.values():
        (batch,) = server.batches.values()
        assert batch["cancelling_at"] is not None  # cancelled at the provider


@pytest.mark.slow
def test_collect_killed_after_the_provider_accepted_a_batch_never_submits_it_twice(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_API_KEY", KEY)
    victim: dict[str, subprocess.Popen[str]] = {}

    def kill_the_client(batch: dict[str, Any]) -> None:
        process = victim.get("collect")
        if process is not None:
            os.kill(process.pid, signal.SIGKILL)

    with FakeServer("openai", api_key=KEY, on_batch_create=kill_the_client) as server:
        cfg = config({"openai": server}, n=5)
        path = isolated / "exp.yaml"
        path.write_text(yaml.safe_dump(cfg))
        # Plan the run without submitting anything, then submit from a process that dies
        # the moment the server has stored the batch, before it reads the answer.
        (run,) = trialrun.api.create_runs([trialrun.load(path)])
        victim["collect"] = trialrun_subprocess("collect", str(run.path), cwd=isolated)
        victim["collect"].communicate(timeout=60)  # waits, and closes its pipes
        assert victim["collect"].returncode == -signal.SIGKILL
        assert len(server.batch_creates()) == 1
        rows = (
            sqlite3.connect(run.path / "trialrun.db")
            .execute("SELECT state, batch_id FROM batches")
            .fetchall()
        )
        assert rows == [("submitting", None)]  # the id never reached the store

        victim.clear()
        trialrun.collect(run, wait=True)
        assert run.counts()["done"] == 5
        first_stage = [
            b for b in server.batches.values() if b["requests"][0]["custom_id"].endswith("_t0")
        ]
        assert len(first_stage) == 1  # reconciled by its metadata, not submitted again
        assert len(server.batch_creates()) == 2  # stage 1 and stage 2, once each
        events = [kind for _, kind, _ in run.status()["events"]]
        assert "batch_reconciled" in events


def test_a_lost_submission_the_provider_never_got_is_resubmitted(
    servers: dict[str, FakeServer],
) -> None:
    run = trialrun.run(config(servers))
    conn = sqlite3.connect(run.path / "trialrun.db")
    # As if a submission had been written and the process died before calling the provider.
    conn.execute(
        "INSERT INTO batches (tag, lane, model, state, stage, requests, created_at, "
        "created_unix, updated_at) VALUES ('bghost', 'openai', 'openai/fake-model', "
        "'submitting', 0, 1, '2026-01-01T00:00:00Z', ?, '2026-01-01T00:00:00Z')",
        (time.time(),),
    )
    conn.commit()
    conn.close()
    trialrun.collect(run, wait=True)
    assert run.counts()["done"] == 8
    ghost = next(b for b in run.status()["batches"] if b["tag"] == "bghost")
    assert ghost["state"] == "abandoned"


def test_an_unreachable_provider_stops_the_run_with_a_message_instead_of_looping(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_API_KEY", KEY)
    with FakeServer("openai", api_key=KEY) as server:
        path = isolated / "exp.yaml"
        path.write_text(yaml.safe_dump(config({"openai": server}, retry={"attempts": 3})))
        (run,) = trialrun.api.create_runs([trialrun.load(path)])
    # The server is gone: every submission and every lookup fails to connect.
    with pytest.raises(trialrun.RunIncomplete, match="3 calls to its batch API in a row failed"):
        trialrun.collect(run, wait=True)
    assert run.counts()["pending"] == 4
    kinds = [kind for _, kind, _ in run.status()["events"]]
    assert "batch_submit_error" in kinds and "batch_error" in kinds
