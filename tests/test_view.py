"""`trialrun view`: the dashboard on 127.0.0.1 over a runs folder, fetched with urllib: the
runs list, a run's page with the report's sections, its JSON, the record browser's
filters and pages, escaping; a page that follows a run being written by another process;
and the run page in a real headless chromium (skipped with a reason where there is none).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from conftest import CliResult, only_run, read_results, trialrun_subprocess
from test_report import ATTACK, _chromium, _config
from trialrun import api
from trialrun.view import HOST, Dashboard

Cli = Callable[..., CliResult]


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[Dashboard]:
    server = api.serve_view(tmp_path / "runs", 0)
    server.poll_ms = 200
    server.live.min_interval_s = 0.2
    server.live.first_wait_s = 10.0  # tests read the first snapshot, not the placeholder
    server.start()
    yield server
    server.shutdown()
    server.server_close()


def get(server: Dashboard, path: str) -> str:
    with urllib.request.urlopen(server.url.rstrip("/") + path, timeout=30) as response:
        assert response.headers["Content-Type"].endswith("charset=utf-8")
        return str(response.read().decode("utf-8"))


def get_json(server: Dashboard, path: str) -> Any:
    return json.loads(get(server, path))


def finished_run(cli: Cli, write_config: Callable[..., Path], tmp_path: Path) -> Path:
    write_config(**_config())
    result = cli("run", "exp.yaml")
    assert result.code in (0, 3), result.err  # 3: a trial fails on purpose
    return only_run(tmp_path / "runs")


def run_url(run: Path, suffix: str = "") -> str:
    return f"/runs/{quote(run.name)}{suffix}"


def test_the_dashboard_lists_runs_and_shows_a_run_with_the_reports_sections(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path, dashboard: Dashboard
) -> None:
    assert dashboard.server_address[0] == HOST == "127.0.0.1"
    run = finished_run(cli, write_config, tmp_path)
    records = read_results(run)
    home = get(dashboard, "/")
    assert run.name in home and "finished" in home and f"{len(records)}/{len(records)}" in home
    assert get_json(dashboard, "/runs.json")[0]["counts"]["done"] == sum(
        r["status"] == "done" for r in records
    )
    page = get(dashboard, run_url(run))
    for section in ("Rates and comparisons", "Judges and agreement", "Scores",
                    "Tokens, cost, latency, errors", "paired differences"):  # fmt: skip
        assert section in page
    assert page.count("<svg class='chart'") >= 10
    assert f"statistics over {len(records)} records" in page
    assert "inflates false positives" not in page  # the run is finished: no live peeking
    assert ATTACK not in page and "<script>alert" not in page
    status = get_json(dashboard, run_url(run, ".json"))
    failed = sum(r["status"] == "failed" for r in records)
    assert status["counts"]["failed"] == failed > 0 and status["stats_records"] == len(records)
    assert "judges" in status and "spend" in status  # Run.status(), computed in the background


def test_the_record_browser_filters_and_pages(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path, dashboard: Dashboard
) -> None:
    run = finished_run(cli, write_config, tmp_path)
    records = read_results(run)

    def rows(**params: str) -> tuple[int, str]:
        params.setdefault("n", "200")  # the most a page holds
        page = get(dashboard, run_url(run, "/records?" + urlencode(params)))
        assert ATTACK not in page and "<script>alert" not in page
        return len(re.findall(r"<tr class=t ", page)), page

    assert rows()[0] == len(records) == 96
    assert len(re.findall(r"<tr class=t ", get(dashboard, run_url(run, "/records")))) == 50
    beta = [r for r in records if r["model"] == "mock/beta"]
    assert rows(model="mock/beta")[0] == len(beta)
    assert rows(status="failed")[0] == sum(r["status"] == "failed" for r in records) > 0
    exact_false = [r for r in records if (r.get("scores") or {}).get("exact") is False]
    assert rows(score="exact=false")[0] == len(exact_false) > 0
    passed = [r for r in records if (r.get("judge") or {}).get("answer") == "pass"]
    assert rows(verdict="judge.answer=pass")[0] == len(passed) > 0
    cell = json.dumps({"layer": 2, "strength": 0.5}, separators=(",", ":"))
    in_cell = [r for r in beta if r["grid"] == {"layer": 2, "strength": 0.5}]
    assert rows(model="mock/beta", cell=cell)[0] == len(in_cell) == 12
    n, page = rows(model="mock/beta", n="10")
    assert n == 10 and "id=next" in page
    seen = 10
    while (found := re.search(r"id=next href='([^']+)'", page)) is not None:
        page = get(dashboard, found.group(1).replace("&amp;", "&"))
        seen += len(re.findall(r"<tr class=t ", page))
    assert seen == len(beta)  # pages follow one another with nothing lost or repeated
    n, page = rows(verdict="judge.nope=1")
    assert n == 0 and "filter-error" in page and "no metric" in page


def test_unknown_pages_and_runs_are_404_and_nothing_outside_the_folder_is_served(
    dashboard: Dashboard,
) -> None:
    for path in ("/nope", "/runs/nope", "/runs/..%2F..%2Fetc", "/runs/.hidden/records"):
        with pytest.raises(urllib.error.HTTPError) as found:
            get(dashboard, path)
        assert found.value.code == 404
        found.value.close()
    assert "no runs here yet" in get(dashboard, "/")


def test_a_run_page_follows_a_run_written_by_another_process(
    write_config: Callable[..., Path], tmp_path: Path, dashboard: Dashboard
) -> None:
    items = [{"id": f"q{i}", "prompt": f"p{i}", "answer": "a"} for i in range(40)]
    write_config(
        dataset={"items": items}, models=[{"model": "mock/alpha"}, {"model": "mock/beta"}],
        grid={}, followups=[], mock={"latency_s": 0.1, "answer": "a"},
        limits={"mock": {"concurrency": 2}}, scores={"exact": {"equals": "{{ item.answer }}"}},
        cache={"enabled": False},
    )  # fmt: skip
    dashboard.live.first_wait_s = 0.0  # poll at a steady pace; statistics come when ready
    writer = trialrun_subprocess("run", "exp.yaml", "--quiet", cwd=tmp_path)
    try:
        seen = _poll_while_running(dashboard, tmp_path / "runs", writer)
    finally:
        writer.kill() if writer.poll() is None else None
        writer.communicate(timeout=30)
    done = [s["done"] for s in seen]
    assert len(set(done)) >= 3 and done == sorted(done)  # it grew, a few times, never back
    assert any(s["running"] for s in seen)
    assert any(s["peeking"] for s in seen)  # the warning beside live comparisons
    final = get_json(dashboard, run_url(only_run(tmp_path / "runs"), ".json"))
    assert final["counts"]["done"] == 80 and not final["running"]


def _poll_while_running(
    server: Dashboard, runs: Path, writer: subprocess.Popen[str]
) -> list[dict[str, Any]]:
    """The run's JSON (and whether its live part warns about peeking) every 0.3 s until the
    writer exits."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while writer.poll() is None and time.monotonic() < deadline:
        time.sleep(0.3)
        found = [p for p in runs.iterdir() if not p.name.startswith(".")] if runs.is_dir() else []
        if not found:
            continue
        status = get_json(server, run_url(found[0], ".json"))
        live = get(server, run_url(found[0], "/live"))
        seen.append(
            {"done": status["counts"]["done"], "running": status["running"],
             "peeking": "inflates false positives" in live}
        )  # fmt: skip
    assert writer.poll() is not None, "the run did not finish in 60 s"
    return seen


@pytest.mark.skipif(_chromium() is None, reason="no chromium here (CI installs Debian's)")
def test_the_run_page_opens_in_headless_chromium_without_console_errors(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path, dashboard: Dashboard
) -> None:
    run = finished_run(cli, write_config, tmp_path)
    url = dashboard.url.rstrip("/") + run_url(run)
    browser = [str(_chromium()), "--headless", "--no-sandbox", "--disable-gpu",
               "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
               "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000"]  # fmt: skip
    dom = subprocess.run(
        [*browser, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
    )
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert console == []
    assert dom.stdout.count('<svg class="chart"') >= 10 and 'id="live"' in dom.stdout
