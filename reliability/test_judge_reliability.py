"""Trying to break online LLM judges (issue 12): a 10% fault mix on the trials and the
judges (the mock's injected faults, and a judge behind the fake OpenAI server), kill -9
storms while trials are judged, and judge replies that are not verdicts.

What must hold every time: each done trial ends with exactly one outcome per judge, a
verdict or a judge_error, never both and never none; the record shows what the
`judgments` table holds; a verdict is the judge's answer to the request sent, never a
default; a judge_error comes only from a marker that asked for one or a fault that used up
every retry; and no trial's judge is paid twice (a crash between a judge's answer and the
commit is answered from the stored attempt on resume).

Quick versions run in CI (`make test`); `TRIALRUN_RELIABILITY=long make reliability` runs
more trials and 10 kills.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import trialrun
from trialrun.plan import expand
from trialrun.testing import FakeServer, Faults

LONG = os.environ.get("TRIALRUN_RELIABILITY") == "long"
KILLS = 10 if LONG else 4
KEY = "sk-reliability-0123456789"
MOCK_FAULTS = {"rate_limit": 0.03, "server": 0.03, "overloaded": 0.02, "timeout": 0.02}
"""A 10% mix of the mock's injected faults, on every mock call (trials and judges)."""
RETRY = {"attempts": 20, "base_wait_s": 0.002, "max_wait_s": 0.02, "timeout_s": 0.25}
SCHEMA = {"answer": ["pass", "fail"], "coherent": "bool", "reasoning": "str"}
PLAIN = "Q: {{ item.question }}\nA: {{ response }}\nIs A right?"
"""A judge prompt without the item's marker."""
MARKERS = {
    "invalid": ("failed", "schema", 3),
    "garbage": ("failed", "parse", 3),
    "refuse": ("failed", "refusal", 1),
    "truncate": ("failed", "truncated", 1),
    "invalid-once": ("done", None, 2),
    "garbage-once": ("done", None, 2),
}
"""Each `[[mock:verdict-...]]` marker: the judgment's state, error kind and asks (reasks: 2)."""


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TRIALRUN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FAKE_API_KEY", KEY)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer("openai", api_key=KEY, record=False) as fake:
        yield fake


# ------------------------------------------------------------------ configs and runs


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "trialrun", *args],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def items(n: int, marked: dict[int, str] | None = None) -> list[dict[str, str]]:
    """`n` graded items; item i carries the marker `marked[i]` (for a judge prompt only)."""
    marked = marked or {}
    return [
        {
            "id": f"q{i:04d}",
            "question": f"What is {i} plus {i}?",
            "answer": str(2 * i),
            "marker": f"[[mock:verdict-{marked[i]}]]" if i in marked else "",
        }
        for i in range(n)
    ]


def judge_entry(name: str, model: str, prompt: str | None = None, **changes: Any) -> dict[str, Any]:
    """A `judge:` entry; its default prompt shows the item's marker."""
    judge: dict[str, Any] = {
        "name": name,
        "model": model,
        "prompt": prompt
        or "Question: {{ item.question }} {{ item.marker }}\nAnswer: {{ response }}\nGrade it.",
        "schema": SCHEMA,
        "when": "online",
    }
    judge.update(changes)
    return judge


def server_judge(
    server: FakeServer, name: str = "wire", prompt: str | None = None
) -> dict[str, Any]:
    return judge_entry(
        name,
        "openai/fake-model",
        prompt,
        base_url=server.url,
        api_key="${env:FAKE_API_KEY}",
    )


def config(
    dataset: list[dict[str, str]], judges: list[dict[str, Any]], **changes: Any
) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "judged",
        "seed": 5,
        "dataset": {"items": dataset},
        "models": [{"model": "mock/alpha"}],
        "grid": {"temperature": [0.0, 0.7]},
        "messages": [{"role": "user", "content": "{{ item.question }}"}],
        "params": {"max_tokens": 32},
        "mock": {"answer": "{{ item.answer }}", "accuracy": 0.7},
        "limits": {"mock": {"concurrency": 16}, "openai": {"concurrency": 16}},
        "retry": RETRY,
        "judge": judges,
    }
    base.update(changes)
    return base


def with_mock(settings: dict[str, Any], **mock: Any) -> dict[str, Any]:
    return {**settings, "mock": {**settings["mock"], **mock}}


def run_to_end(settings: dict[str, Any], name: str) -> Path:
    """Run a config to the end with `trialrun run` in a process of its own; its run folder."""
    path = Path(f"{name}.yaml")
    out = Path(f"runs-{name}")
    path.write_text(yaml.safe_dump({**settings, "output": {"dir": str(out)}}))
    process = spawn("run", str(path), "--quiet")
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    (found,) = [p for p in out.iterdir() if not p.name.startswith(".")]
    return found


# ------------------------------------------------------------------ reading a run


@dataclass(frozen=True)
class Judgment:
    state: str
    verdict: Any
    error: str | None
    error_kind: str | None
    asks: int
    attempts: int


def read_run(run_dir: Path) -> tuple[dict[str, dict[str, Any]], dict[tuple[str, str], Judgment]]:
    """(the records by trial id, the judgments by (trial id, judge name)), through a second
    connection; a (trial, judge) pair with two rows (two spec hashes) fails here."""
    with closing(sqlite3.connect(run_dir / "trialrun.db")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        records = {
            tid: json.loads(rec)
            for tid, rec in conn.execute("SELECT trial_id, record FROM records")
        }
        rows = conn.execute(
            "SELECT trial_id, judge, state, verdict, error, error_kind, asks, attempts FROM judgments"
        ).fetchall()
    pairs = Counter((row[0], row[1]) for row in rows)
    assert max(pairs.values(), default=1) == 1, pairs.most_common(3)
    judgments = {
        (tid, judge): Judgment(
            state, json.loads(verdict) if verdict else None, error, kind, asks, attempts
        )
        for tid, judge, state, verdict, error, kind, asks, attempts in rows
    }
    return records, judgments


def check_judged(run_dir: Path, judges: list[str]) -> dict[tuple[str, str], Judgment]:
    """Every done trial has exactly one outcome per judge, a verdict xor an error, and its
    record (in the store and in results.jsonl) shows exactly that; no other trial is judged."""
    records, judgments = read_run(run_dir)
    done = {tid for tid, record in records.items() if record["status"] == "done"}
    assert done, "no trial is done"
    assert set(judgments) == {(tid, judge) for tid in done for judge in judges}
    results = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert Counter(r["trial_id"] for r in results) == Counter(records.keys())  # each once
    lines = {r["trial_id"]: r for r in results}
    for tid in done:
        for record in (records[tid], lines[tid]):
            assert set(record["judges"]) == set(judges) == set(record["judge_errors"])
            for judge in judges:
                j = judgments[tid, judge]
                assert (j.verdict is None) != (j.error is None), (tid, judge, j)
                assert j.state == ("done" if j.verdict is not None else "failed")
                assert (j.error_kind is None) == (j.error is None)
                assert record["judges"][judge] == j.verdict
                assert record["judge_errors"][judge] == j.error
            assert record["judge"] == record["judges"][judges[0]]
            assert record["judge_error"] == record["judge_errors"][judges[0]]
    return judgments


@dataclass
class Calls:
    """A judge's calls logged in `attempts` (turn -1) per (trial id, judge name)."""

    paid: Counter[tuple[str, str]]
    """Answered by the judge's model (not from the cache or the store)."""
    cached: Counter[tuple[str, str]]
    """Answered from the response cache or the run's stored attempts, free."""
    failed: Counter[tuple[str, str]]
    """Unanswered: an error, retried or final."""

    def check(self, pair: tuple[str, str], judgment: Judgment) -> None:
        """Each ask answered once (paid or free), but an ask whose calls all failed; every
        call the judgment counts is logged."""
        answered = judgment.asks - (judgment.error_kind == "api")
        assert self.paid[pair] + self.cached[pair] == answered, (pair, judgment, self.of(pair))
        assert self.paid[pair] + self.failed[pair] == judgment.attempts, (
            pair,
            judgment,
            self.of(pair),
        )

    def of(self, pair: tuple[str, str]) -> tuple[int, int, int]:
        return self.paid[pair], self.cached[pair], self.failed[pair]


def judge_calls(run_dir: Path) -> Calls:
    calls = Calls(Counter(), Counter(), Counter())
    with closing(sqlite3.connect(run_dir / "trialrun.db")) as conn:
        rows = conn.execute(
            "SELECT trial_id, json_extract(request, '$.judge'), response IS NOT NULL, cache_hit "
            "FROM attempts WHERE turn = -1"
        )
        for tid, judge, answered, cache_hit in rows:
            tally = calls.failed if not answered else calls.cached if cache_hit else calls.paid
            tally[tid, judge] += 1
    return calls


def planned_ids(path: Path) -> set[str]:
    prepared = trialrun.load(path)
    return {t.trial_id for t in expand(prepared.experiment, prepared.dataset.ids)}


def outcomes(
    judgments: dict[tuple[str, str], Judgment],
) -> dict[tuple[str, str], tuple[Any, str | None]]:
    """What each judgment came to, less how many calls it took."""
    return {
        pair: (j.verdict, j.error_kind if j.error is None or "gave up" not in j.error else "api")
        for pair, j in judgments.items()
    }


# ------------------------------------------------------------------ a 10% fault mix


def test_online_judges_under_a_ten_percent_fault_mix_give_each_trial_one_true_outcome() -> None:
    """Trials and two mock judges, every call under the mock's 10% fault mix (429, 500, 529,
    hangs past the timeout): each done trial gets one verdict or one judge_error per judge,
    the verdicts are those of the same run without faults, and the only judge_errors are the
    ones a marker asked for."""
    n = 400 if LONG else 150
    marked = {i: marker for i, marker in zip(range(3, n, 17), list(MARKERS) * n, strict=False)}
    judges = [judge_entry("strict", "mock/judge"), judge_entry("lenient", "mock/judge2", PLAIN)]
    clean = config(items(n, marked), judges)
    faulty = with_mock(clean, errors=MOCK_FAULTS, retry_after_s=0.002)

    faulty_dir = run_to_end(faulty, "faulty")
    clean_dir = run_to_end({**clean, "cache": {"dir": "cache-clean"}}, "clean")

    names = ["strict", "lenient"]
    under_faults = check_judged(faulty_dir, names)
    without = check_judged(clean_dir, names)
    assert outcomes(under_faults) == outcomes(without)  # no verdict is a default, no error made up
    calls = judge_calls(faulty_dir)
    assert calls.failed.total() > 0.05 * calls.paid.total()  # the faults did hit the judges
    failed_pairs = {pair for pair, j in under_faults.items() if j.state == "failed"}
    marker_pairs = {
        (tid, "strict")
        for tid, record in read_run(faulty_dir)[0].items()
        if record["item"]["marker"] and not record["item"]["marker"].endswith("-once]]")
    }
    assert failed_pairs == marker_pairs  # every judge_error asked for by a marker, and no other
    for pair, j in under_faults.items():
        calls.check(pair, j)


def test_a_judge_behind_a_faulty_server_errs_only_where_its_retries_ran_out(
    server: FakeServer,
) -> None:
    """A judge on the fake OpenAI server (10% of its answers 429, 500, 503, dropped, cut off
    or not JSON) beside a mock judge, the trials under the mock's fault mix: one outcome per
    judge; items whose wire-judge prompt forces a 500 end as API judge_errors after every
    retry, with the trial itself done; no other judge_error than those and the markers'."""
    server.set_faults(Faults.mix(0.10, seed=3, retry_after_s=0.002))
    n = 240 if LONG else 90
    marked = {i: "invalid" for i in range(5, n, 23)}
    forced = set(range(7, n, 29))
    dataset = [
        {**item, "status": "[[status:500]]" if i in forced else ""}
        for i, item in enumerate(items(n, marked))
    ]
    wire_prompt = "Question: {{ item.question }} {{ item.status }}\nAnswer: {{ response }}"
    judges = [server_judge(server, "wire", wire_prompt), judge_entry("local", "mock/judge")]
    settings = with_mock(
        config(dataset, judges, retry={**RETRY, "attempts": 6}),
        errors=MOCK_FAULTS,
        retry_after_s=0.002,
    )
    run_dir = run_to_end(settings, "wire")

    judgments = check_judged(run_dir, ["wire", "local"])
    records, _ = read_run(run_dir)
    assert {r["status"] for r in records.values()} == {"done"}
    calls = judge_calls(run_dir)
    for (tid, judge), j in judgments.items():
        calls.check((tid, judge), j)
        item = records[tid]["item"]
        if judge == "wire" and item["status"]:
            assert (j.state, j.error_kind, j.asks, j.attempts) == ("failed", "api", 1, 6), j
            assert j.error is not None and "gave up after 6 attempts" in j.error
        elif judge == "local" and item["marker"]:
            assert (j.state, j.error_kind, j.asks) == ("failed", "schema", 3), j
        elif j.state == "failed":
            # Faults that use up six attempts in a row are possible (0.1^6 a call): such an
            # error says so and shows six failed calls; anything else must be a verdict.
            assert j.error is not None and "gave up after 6 attempts" in j.error, j
            assert (j.error_kind, calls.failed[tid, judge]) == ("api", 6), j
    wire_failures = sum(n for (_, judge), n in calls.failed.items() if judge == "wire")
    assert wire_failures > 6 * len(forced)  # the server's random faults were retried too


# ------------------------------------------------------------------ kill -9 storms


def the_run() -> Path:
    (found,) = [p for p in Path("runs").iterdir() if not p.name.startswith(".")]
    return found


def kill_storm(first: list[str], then: list[str], rng: random.Random, kills: int) -> int:
    """Start `first`, kill -9 it at a random moment once its run folder exists, then `then`
    (a resume) again and again, each killed at a random moment too."""
    args, killed = first, 0
    for _ in range(kills):
        process = spawn(*args)
        deadline = time.monotonic() + 60
        while not list(Path("runs").glob("*/trialrun.db")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.2, 1.2))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed += 1
        process.communicate(timeout=60)
        args = then
    return killed


@pytest.mark.slow
def test_kill_storm_while_judging_online_judges_each_trial_once_per_judge() -> None:
    """`trialrun run` with two online mock judges, latency and the 10% fault mix, killed with
    SIGKILL at random moments and resumed each time, then finished: every trial done once,
    one outcome per judge, and no judge call paid twice for a trial (the stored attempts
    answer a judge whose answer came before the crash but whose judgment did not commit)."""
    n = 600 if LONG else 250
    marked = {i: marker for i, marker in zip(range(2, n, 13), list(MARKERS) * n, strict=False)}
    judges = [judge_entry("strict", "mock/judge"), judge_entry("lenient", "mock/judge2", PLAIN)]
    settings = with_mock(
        config(items(n, marked), judges),
        latency_s=0.01,
        jitter_s=0.03,
        errors=MOCK_FAULTS,
        retry_after_s=0.002,
    )
    path = Path("storm.yaml")
    path.write_text(yaml.safe_dump(settings))
    killed = kill_storm(
        ["run", str(path), "--quiet"], ["resume", "--quiet"], random.Random(7), KILLS
    )
    assert killed == KILLS  # each one died mid-run, not after finishing
    final = spawn("resume", "--quiet")
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err

    run_dir = the_run()
    records, _ = read_run(run_dir)
    assert records.keys() == planned_ids(path)
    assert {r["status"] for r in records.values()} == {"done"}
    judgments = check_judged(run_dir, ["strict", "lenient"])
    paid = judge_calls(run_dir).paid
    twice = {pair: (paid[pair], j.asks) for pair, j in judgments.items() if paid[pair] > j.asks}
    assert not twice, f"{len(twice)} judgments paid more calls than asks: {list(twice.items())[:5]}"
    strays = set(paid) - set(judgments)
    assert not strays  # no judge call for a trial that has no judgment
    # The storm did hit the window: judge answers committed before a kill, their judgments
    # not, answered on resume from the stored attempt (same trial, same request), not paid.
    assert resumed_from_store(run_dir) > 0


def resumed_from_store(run_dir: Path) -> int:
    """(trial, judge) pairs with a paid judge answer and a later free one to the same request."""
    with closing(sqlite3.connect(run_dir / "trialrun.db")) as conn:
        return int(
            conn.execute(
                "SELECT COUNT(DISTINCT paid.trial_id || json_extract(paid.request, '$.judge')) "
                "FROM attempts paid JOIN attempts free ON free.trial_id = paid.trial_id "
                "AND free.cache_key = paid.cache_key AND free.id > paid.id "
                "WHERE paid.turn = -1 AND free.turn = -1 AND paid.cache_hit = 0 "
                "AND paid.response IS NOT NULL AND free.cache_hit = 1"
            ).fetchone()[0]
        )


# ------------------------------------------------------------------ replies that are not verdicts


@pytest.mark.parametrize("where", ["mock", "openai-wire"])
def test_bad_judge_replies_end_as_judge_errors_with_their_kind(
    where: str, server: FakeServer
) -> None:
    """Invalid, non-JSON, refused and cut-off verdicts (markers in an item field the judge's
    prompt shows) end as judge_errors of kind schema, parse, refusal and truncated; a reply
    invalid only the first time is asked again and gives a verdict on the second ask."""
    marked = {i: marker for i, marker in enumerate(MARKERS)}
    n = len(MARKERS) + 2  # and two items with no marker
    judge = judge_entry("j", "mock/judge") if where == "mock" else server_judge(server, "j")
    # No faults here: a generous timeout, since an SDK judge's first calls (the client made,
    # connections opened) take 0.2-0.5 s on this VM and would time out at RETRY's 0.25 s.
    settings = config(items(n, marked), [judge], retry={**RETRY, "timeout_s": 10})
    run_dir = run_to_end(settings, where)

    judgments = check_judged(run_dir, ["j"])
    records, _ = read_run(run_dir)
    calls = judge_calls(run_dir)
    seen: Counter[str] = Counter()
    for (tid, _), j in judgments.items():
        marker = records[tid]["item"]["marker"].removeprefix("[[mock:verdict-").removesuffix("]]")
        state, kind, asks = MARKERS.get(marker, ("done", None, 1))
        assert (j.state, j.error_kind, j.asks) == (state, kind, asks), (marker, j)
        assert calls.failed[tid, "j"] == 0
        calls.check((tid, "j"), j)
        if state == "done":
            assert set(j.verdict) == set(SCHEMA) and j.verdict["answer"] in ("pass", "fail")
        seen[marker or "none"] += 1
    assert seen == {**dict.fromkeys(MARKERS, 2), "none": 4}  # two temperatures each
