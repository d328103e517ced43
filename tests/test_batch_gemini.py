"""Batch mode on Gemini through google-genai's batches API, against the fake Gemini server
over real HTTP: staged conversations, per-request errors and expiry, a judge's verdicts
through `response_schema`, real time taking over, a lost submission found again by its
display name, also after a kill -9 right after the job was created, and jobs from an
uploaded input file with their results read from a file."""

from __future__ import annotations

import asyncio
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
from trialrun.errors import ProviderError
from trialrun.providers import google
from trialrun.providers.google import GoogleProvider, display_name
from trialrun.testing import BatchFaults, FakeServer

KEY = "gm-batch-test-0123456789"
FAST = {"poll_min_s": 0.01, "poll_max_s": 0.05}
SCHEMA = {"answer": ["pass", "fail"], "reasoning": "str"}


@pytest.fixture
def gemini(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    monkeypatch.setenv("FAKE_API_KEY", KEY)
    with FakeServer("google", api_key=KEY) as server:
        yield server


def on_server(server: FakeServer) -> dict[str, Any]:
    return {"model": "google/fake-model", "base_url": server.url, "api_key": "${env:FAKE_API_KEY}"}


def config(server: FakeServer, n: int = 4, **changes: Any) -> dict[str, Any]:
    result = base_config(
        mode="batch",
        batch=FAST,
        dataset=items(n),
        grid={},
        models=[on_server(server)],
        prices={"google/fake-model": {"input": 3.0, "output": 15.0}},
    )
    result.update(changes)
    return result


def sent(server: FakeServer, batch_id: str) -> list[dict[str, Any]]:
    """The inline requests a batch job was created with."""
    return [item["request"] for item in server.batches[batch_id]["requests"]]


def test_a_two_turn_run_takes_two_batch_jobs_at_the_batch_price(gemini: FakeServer) -> None:
    run = trialrun.run(config(gemini), wait=True)
    assert run.counts() == {"pending": 0, "running": 0, "done": 4, "failed": 0}
    first, second = gemini.batch_creates()
    assert [len(sent(gemini, b)) for b in (first, second)] == [4, 4]
    records = read_results(run.path)
    # Turn 2 was built from turn 1's answer: user, model, user, with the system apart.
    record = next(r for r in records if r["item_id"] == "q0")
    by_key = dict(zip(gemini.batches[second]["outcomes"], sent(gemini, second), strict=True))
    request = by_key[f"{record['trial_id']}_t1"]
    assert [c["role"] for c in request["contents"]] == ["user", "model", "user"]
    assert request["contents"][1]["parts"][0]["text"] == record["turns"][0]["response"]
    assert request["systemInstruction"]["parts"][0]["text"] == "Be brief."
    for turn in (t for r in records for t in r["turns"]):
        full = (turn["usage"]["input"] * 3.0 + turn["usage"]["output"] * 15.0) / 1e6
        assert turn["cost_usd"] == pytest.approx(full / 2)
    assert {b["provider_state"] for b in run.status()["batches"]} == {"JOB_STATE_SUCCEEDED"}


def test_per_request_errors_and_expired_requests_go_out_again(gemini: FakeServer) -> None:
    gemini.set_batch(faults=BatchFaults(error=0.25, expire=0.25, seed=3))
    run = trialrun.run(config(gemini, n=8, retry={"attempts": 10}), wait=True)
    assert run.counts()["done"] == 8
    assert len(gemini.batch_creates()) > 2
    states = {b["provider_state"] for b in run.status()["batches"]}
    assert "JOB_STATE_EXPIRED" in states
    # An expiry used no attempt; an error used one.
    with sqlite3.connect(run.path / "trialrun.db") as conn:
        errors = conn.execute("SELECT count(*) FROM attempts WHERE error IS NOT NULL").fetchone()
    drawn = [
        outcome
        for batch in gemini.batches.values()
        for outcome in batch["outcomes"].values()
        if outcome != "ok"
    ]
    assert errors[0] == drawn.count("error") > 0
    assert drawn.count("expired") > 0


def test_a_bad_request_fails_its_trial_only(gemini: FakeServer) -> None:
    dataset = items(3)
    dataset["items"][1]["prompt"] = "[[status:400]] a bad request"
    run = trialrun.run(config(gemini, dataset=dataset), wait=True)
    records = {r["item_id"]: r for r in read_results(run.path)}
    assert records["q1"]["status"] == "failed" and "code 3" in records["q1"]["error"]
    assert records["q0"]["status"] == records["q2"]["status"] == "done"
    assert len(gemini.batch_creates()) == 2  # INVALID_ARGUMENT is final: never sent again


def test_a_judge_on_gemini_gets_its_verdicts_from_a_batch_job(gemini: FakeServer) -> None:
    judge = {
        **on_server(gemini),
        "prompt": "Question: {{ item.prompt }}\nAnswer: {{ response }}\nGrade the answer.",
        "schema": SCHEMA,
    }
    run = trialrun.run(config(gemini, judge=judge), wait=True)
    assert run.counts()["done"] == 4
    *_, last = gemini.batch_creates()
    asks = sent(gemini, last)
    assert len(asks) == 4
    schema = asks[0]["generationConfig"]["responseSchema"]
    assert schema["type"] == "OBJECT" and schema["properties"]["answer"]["enum"] == [
        "pass",
        "fail",
    ]
    assert asks[0]["generationConfig"]["responseMimeType"] == "application/json"
    for record in run.records():
        assert record["judge"]["answer"] in ("pass", "fail") and record["judge"]["reasoning"]
        assert record["judge_error"] is None


def test_resume_in_real_time_cancels_the_open_job(gemini: FakeServer) -> None:
    gemini.set_batch(delay_s=3600)
    run = trialrun.run(config(gemini))
    (batch_id,) = gemini.batch_creates()
    trialrun.resume(run, mode="realtime")
    assert run.counts()["done"] == 4
    assert gemini.batches[batch_id]["cancelling_at"] is not None


def test_a_lost_submission_is_found_by_its_display_name(gemini: FakeServer) -> None:
    gemini.set_batch(delay_s=3600)
    provider = GoogleProvider(api_key=KEY, base_url=gemini.url)
    metadata = {"trialrun_run": "r1", "trialrun_tag": "bmine"}
    other = {"trialrun_run": "r1", "trialrun_tag": "bother"}
    request = trialrun.types.Request("fake-model", [{"role": "user", "content": "hi"}], {})

    async def submit_and_find() -> list[str | None]:
        ours = await provider.submit_batch([provider.batch_entry("c0", request)], metadata)
        await provider.submit_batch([provider.batch_entry("c0", request)], other)
        found = [
            ours,
            await provider.find_batch(metadata, 1, time.time() - 60, set()),
            await provider.find_batch(metadata, 1, time.time() - 60, {ours}),
            await provider.find_batch(metadata, 1, time.time() + 3600, set()),
        ]
        await provider.aclose()
        return found

    ours, found, known, too_old = asyncio.run(submit_and_find())
    assert found == ours and known is None and too_old is None
    assert gemini.batches[ours]["display_name"] == display_name(metadata)


@pytest.mark.slow
def test_collect_killed_after_the_job_was_created_never_submits_it_twice(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_API_KEY", KEY)
    victim: dict[str, subprocess.Popen[str]] = {}

    def kill_the_client(batch: dict[str, Any]) -> None:
        process = victim.get("collect")
        if process is not None:
            os.kill(process.pid, signal.SIGKILL)

    with FakeServer("google", api_key=KEY, on_batch_create=kill_the_client) as server:
        path = isolated / "exp.yaml"
        path.write_text(yaml.safe_dump(config(server, n=3)))
        # Plan without submitting, then submit from a process that dies the moment the
        # server has stored the job, before it reads the answer.
        (run,) = trialrun.api.create_runs([trialrun.load(path)])
        victim["collect"] = trialrun_subprocess("collect", str(run.path), cwd=isolated)
        victim["collect"].communicate(timeout=60)
        assert victim["collect"].returncode == -signal.SIGKILL
        assert len(server.batch_creates()) == 1

        victim.clear()
        trialrun.collect(run, wait=True)
        assert run.counts()["done"] == 3
        assert len(server.batch_creates()) == 2  # turn 1 (found by name), turn 2
        events = [kind for _, kind, _ in run.status()["events"]]
        assert "batch_reconciled" in events


# ------------------------------------------------------------------ jobs from a file


def test_a_batch_over_the_inline_size_goes_as_a_file_job(
    gemini: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(GoogleProvider, "inline_max_bytes", 1000)  # 8 requests weigh more
    gemini.set_batch(faults=BatchFaults(error=0.25, expire=0.25, seed=3))
    run = trialrun.run(config(gemini, n=8, retry={"attempts": 10}), wait=True)
    assert run.counts()["done"] == 8
    jobs = [gemini.batches[b] for b in gemini.batch_creates()]
    files = [job for job in jobs if job["input_file"]]
    assert files and all(len(job["requests"]) > 1 for job in files)
    assert all(job["responses_file"] for job in files)  # results came as a file...
    downloads = [r for r in gemini.requests if r["path"].endswith(":download")]
    assert len(downloads) == len(files)  # ...and were read from it
    states = {b["provider_state"] for b in run.status()["batches"]}
    assert "JOB_STATE_EXPIRED" in states
    with sqlite3.connect(run.path / "trialrun.db") as conn:
        errors = conn.execute("SELECT count(*) FROM attempts WHERE error IS NOT NULL").fetchone()
    drawn = [o for job in jobs for o in job["outcomes"].values()]
    assert errors[0] == drawn.count("error") > 0  # an error used an attempt, an expiry none
    # Turn 2 was built from turn 1's answer, as inline.
    record = next(r for r in read_results(run.path) if r["item_id"] == "q0")
    turn_2 = f"{record['trial_id']}_t1"
    (request,) = [i["request"] for job in jobs for i in job["requests"] if i["custom_id"] == turn_2]
    assert request["contents"][1]["parts"][0]["text"] == record["turns"][0]["response"]


def test_a_file_line_holds_the_request_the_sdk_sends_inline(gemini: FakeServer) -> None:
    provider = GoogleProvider(api_key=KEY, base_url=gemini.url)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Grade it."},
    ]
    params = {"temperature": 0.5, "max_tokens": 9, "stop": "x", "seed": 3, "top_logprobs": 2}
    schema = {"type": "object", "properties": {"answer": {"enum": ["pass", "fail"]}}}
    requests = [
        trialrun.types.Request("fake-model", messages, params, response_schema=schema),
        trialrun.types.Request("fake-model", messages[1:2], {}),
    ]
    entries = [provider.batch_entry(f"c{i}", r) for i, r in enumerate(requests)]

    async def submit_both() -> tuple[str, str]:
        inline = await provider.submit_batch(entries, {"trialrun_run": "r", "trialrun_tag": "a"})
        provider.inline_max_bytes = 0
        as_file = await provider.submit_batch(entries, {"trialrun_run": "r", "trialrun_tag": "b"})
        await provider.aclose()
        return inline, as_file

    inline, as_file = asyncio.run(submit_both())
    assert gemini.batches[inline]["input_file"] is None
    assert gemini.batches[as_file]["input_file"] is not None
    assert gemini.batches[as_file]["requests"] == gemini.batches[inline]["requests"]


def test_a_file_over_the_input_limit_is_refused_in_one_line(
    gemini: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(google, "FILE_MAX", 3000)
    monkeypatch.setattr(GoogleProvider, "inline_max_bytes", 100)
    provider = GoogleProvider(api_key=KEY, base_url=gemini.url)
    request = trialrun.types.Request(
        "fake-model", [{"role": "user", "content": "long " * 1000}], {}
    )
    entry = provider.batch_entry("c0", request)
    with pytest.raises(ProviderError, match=r"batch file of 5,\d+ bytes is over the 3,000"):
        asyncio.run(provider.submit_batch([entry], {"trialrun_run": "r", "trialrun_tag": "t"}))
    assert gemini.batches == {} and gemini.requests == []  # refused before any call
