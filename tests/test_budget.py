"""`budget: {max_usd}` (issue 16, part 3) in real time: the spend never passes the cap, the
run stops within one request's worst-case cost of it, resumable with a higher cap; judge
calls count; an unpriced model or a missing max_tokens under a budget is refused."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import CliResult, base_config, only_run, read_results
from trialrun.executor.budget import worst_case_usd
from trialrun.pricing import Price
from trialrun.testing import FakeServer

Cli = Callable[..., CliResult]
KEY = "sk-budget-test-0123456789"
PRICE = {"input": 1000.0, "output": 2000.0}
"""USD per million tokens: a request of ~50 tokens costs cents, so caps of a dollar bite."""


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    monkeypatch.setenv("FAKE_API_KEY", KEY)
    with FakeServer("openai", api_key=KEY) as fake:
        yield fake


def config(server: FakeServer, max_usd: float, **changes: Any) -> str:
    model = {"model": "openai/fake-model", "base_url": server.url, "api_key": "${env:FAKE_API_KEY}"}
    items = [{"id": f"q{i}", "prompt": f"Is claim number {i} true?"} for i in range(40)]
    data = base_config(
        dataset={"items": items},
        models=[model],
        grid={},
        followups=[],
        params={"max_tokens": 16},
        prices={"openai/fake-model": PRICE},
        budget={"max_usd": max_usd},
        **changes,
    )
    Path("exp.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return "exp.yaml"


def spent(run: Path) -> float:
    with sqlite3.connect(run / "trialrun.db") as conn:
        row = conn.execute(
            "SELECT COALESCE(SUM(cost_usd), 0) FROM attempts WHERE response IS NOT NULL"
        ).fetchone()
    return float(row[0])


def worst_request(run: Path) -> float:
    """The largest worst-case cost among the run's requests, as the budget reserves it."""
    with sqlite3.connect(run / "trialrun.db") as conn:
        requests = [r for (r,) in conn.execute("SELECT request FROM attempts")]
    price = Price(PRICE["input"], PRICE["output"])
    worst = 0.0
    for text in requests:
        body = yaml.safe_load(text)
        worst = max(worst, worst_case_usd(price, body["messages"], body["params"]["max_tokens"]))
    return worst


def test_a_run_stops_at_its_budget_and_resumes_with_a_higher_cap(
    cli: Cli, server: FakeServer
) -> None:
    result = cli("run", config(server, 0.5))
    assert result.code == 1, result.err
    assert "budget reached" in result.err and "budget.max_usd=N" in result.err
    run = only_run(Path("runs"))
    done = read_results(run)
    assert 0 < len(done) < 40
    assert spent(run) <= 0.5
    assert 0.5 - spent(run) < worst_request(run) * 2  # within a request's worst case or so
    status = cli("status", str(run)).out
    assert "budget: $" in status and "of $0.5 spent" in status
    assert cli("resume", str(run), "budget.max_usd=0.1").code == 2  # below the spend
    again = cli("resume", str(run), "budget.max_usd=100")
    assert again.code == 0, again.err
    records = read_results(run)
    assert len(records) == 40 and all(r["status"] == "done" for r in records)
    assert len(server.requests) == 40  # nothing sent twice
    assert spent(run) <= 100


def test_judge_calls_count_against_the_budget(cli: Cli, server: FakeServer) -> None:
    judge = {
        "model": "openai/fake-model",
        "base_url": server.url,
        "api_key": "${env:FAKE_API_KEY}",
        "prompt": "Grade: {{ response }}",
        "schema": {"answer": ["pass", "fail"]},
        "params": {"max_tokens": 16},
    }
    limits = {"openai": {"concurrency": 2}}  # trials and their judges take turns
    result = cli("run", config(server, 1.0, judge=judge, limits=limits))
    assert result.code == 1, result.err
    run = only_run(Path("runs"))
    with sqlite3.connect(run / "trialrun.db") as conn:
        judge_cost = conn.execute(
            "SELECT COALESCE(SUM(cost_usd), 0) FROM attempts WHERE turn < 0"
        ).fetchone()[0]
    assert judge_cost > 0
    assert spent(run) <= 1.0
    # every committed record has its verdict: the budget stops before, never between
    records = read_results(run)
    assert records and all(r["judge"] is not None for r in records)


def test_a_mock_run_is_free_under_any_budget(cli: Cli) -> None:
    Path("exp.yaml").write_text(
        yaml.safe_dump(base_config(budget={"max_usd": 0.000001}), sort_keys=False)
    )
    assert cli("run", "exp.yaml").code == 0


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"prices": {}}, "no price known for openai/unpriced-x"),
        ({"params": {}}, "has no max_tokens"),
    ],
)
def test_a_budget_needs_prices_and_max_tokens(
    cli: Cli, server: FakeServer, changes: dict[str, Any], fragment: str
) -> None:
    model = {"model": "openai/unpriced-x", "base_url": server.url, "api_key": "${env:FAKE_API_KEY}"}
    data = base_config(
        models=[model],
        budget={"max_usd": 1},
        prices={"openai/unpriced-x": PRICE},
        params={"max_tokens": 8},
    )
    data.update(changes)
    Path("exp.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    result = cli("run", "exp.yaml")
    assert result.code == 2 and fragment in result.err, result.err
    assert not Path("runs").exists() or not list(Path("runs").iterdir())


# ------------------------------------------------------------------ batch mode


def test_batch_mode_submits_only_what_fits_and_stops_at_the_cap(
    cli: Cli, server: FakeServer
) -> None:
    fast = {"poll_min_s": 0.01, "poll_max_s": 0.05}
    name = config(server, 0.5, mode="batch", batch=fast)
    result = cli("run", name, "--wait")
    assert result.code == 1, result.err
    assert "budget reached" in result.err
    run = only_run(Path("runs"))
    assert 0 < len(read_results(run)) < 40
    assert spent(run) <= 0.5
    sent = sum(len(b["requests"]) for b in server.batches.values())
    assert sent == len(read_results(run))  # nothing submitted that was not answered
    again = cli("resume", str(run), "budget.max_usd=100", "--wait")
    assert again.code == 0, again.err
    records = read_results(run)
    assert len(records) == 40 and all(r["status"] == "done" for r in records)
    assert sum(len(b["requests"]) for b in server.batches.values()) == 40


def test_a_call_that_cannot_fit_once_all_calls_settled_stops_instead_of_waiting() -> None:
    """Float sums of reservations do not return exactly to 0 (0.1 + 0.2 - 0.1 - 0.2 is not
    0): the budget counts its reservations, so it never waits for a settle that is not
    coming (this hung a run once)."""
    import asyncio

    from trialrun.executor.budget import Budget, BudgetReached

    async def scenario() -> None:
        budget = Budget(cap=1.0, spent=0.0)
        for usd in (0.1, 0.2, 0.3):
            await budget.reserve(usd)
        for usd, actual in ((0.1, 0.1), (0.2, 0.2), (0.3, 0.3)):
            budget.settle(usd, actual)
        assert budget.outstanding == 0
        with pytest.raises(BudgetReached):
            await asyncio.wait_for(budget.reserve(0.5), timeout=2)

    asyncio.run(scenario())
