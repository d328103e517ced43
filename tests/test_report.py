"""`trialrun report`: the terminal tables and the self-contained HTML file, on runs of the
graded mock with failures, judge errors, a grid, one model or none of those; text from
the run escaped; the trial table bounded; and the page opened in a real headless chromium
(no console errors, scripts ran, a screenshot), skipped with a reason where there is none."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import CliResult, only_run, read_results
from trialrun import api
from trialrun.report import render

Cli = Callable[..., CliResult]
ATTACK = "<script>alert('x')</script><img src=x onerror=alert(1)>"


def _items(n: int) -> list[dict[str, Any]]:
    items = []
    for i in range(n):
        prompt = f"What is {i} + 1? {ATTACK}"
        if i == 3:
            prompt += " [[mock:refuse]]"  # a failed trial
        mark = "[[mock:verdict-garbage]]" if i == 5 else ""  # a judge error
        items.append({"id": f"q{i}", "prompt": prompt, "answer": f"{i + 1}{ATTACK}",
                      "jmark": mark})  # fmt: skip
    return items


def _config(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "dataset": {"items": _items(12)},
        "models": [{"model": "mock/alpha"}, {"model": "mock/beta", "options": {"accuracy": 0.4}}],
        "grid": {"layer": [1, 2], "strength": [0.5, 1.0]},
        "followups": [],
        "messages": [{"role": "user", "content": "{{ item.prompt }}"}],
        "mock": {"answer": "{{ item.answer }}", "accuracy": 0.7},
        "scores": {"exact": {"equals": "{{ item.answer }}"}},
        "judge": {
            "model": "mock/judge",
            "prompt": "Grade: {{ response }} {{ item.jmark }}",
            "schema": {"answer": ["pass", "fail"]},
        },
        "cache": {"enabled": False},
    }
    config.update(changes)
    return config


def _run(cli: Cli, write_config: Callable[..., Path], tmp_path: Path, **changes: Any) -> Path:
    write_config(**_config(**changes))
    result = cli("run", "exp.yaml")
    assert result.code in (0, 3), result.err  # 3: some trials failed (on purpose)
    return only_run(tmp_path / "runs")


def _trial_rows(page: str) -> int:
    return len(re.findall(r"<tr class=t ", page))


def test_report_prints_tables_and_writes_one_self_contained_html(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    run = _run(cli, write_config, tmp_path)
    records = read_results(run)
    assert any(r["status"] == "failed" for r in records)
    assert any(r["judge_errors"].get("judge") for r in records)
    result = cli("report", str(run))
    assert result.code == 0, result.err
    assert "metric: exact" in result.out and "metric: judge.answer=pass" in result.out
    assert "paired comparisons (model)" in result.out and "report →" in result.out
    page = (run / "report.html").read_text(encoding="utf-8")
    for section in ("Rates and comparisons", "Judges and agreement", "Scores", "Provenance",
                    "Tokens, cost, latency, errors", "paired differences"):  # fmt: skip
        assert section in page
    assert page.count("<svg class='chart'") >= 2 * 5  # per metric: bars, 2 heatmaps, 2 lines...
    assert page.count("<rect class='point'") == 2 * 4  # forest: 4 cells' pairs per metric
    assert _trial_rows(page) == len(records)
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)  # nothing fetched
    assert ATTACK not in page and "<script>alert" not in page and "<img src=x" not in page
    assert page.count("<script>") == 1  # ours only
    assert "&lt;script&gt;alert(" in page
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["run_id"] in page
    assert "content policy refusal" in page  # failures by error
    assert "Uncaught" not in page


def test_report_shows_the_statistics_of_stats_json(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    run = _run(cli, write_config, tmp_path)
    stats = json.loads(cli("stats", str(run), "--compare", "model", "--json").out)
    data = api.build_report(api.open_run(run))
    report = data.stats[0]
    assert report.metric == stats["metric"] == "exact"
    assert [g.rate for g in report.groups] == [g["rate"] for g in stats["groups"]]
    assert [c.q_value for c in report.comparisons] == [c["q_value"] for c in stats["comparisons"]]
    page = render(data)
    for group in stats["groups"]:
        if group["rate"] is not None:
            assert f"{group['rate']:.3f} n={group['n']}" in page  # the bar's label
    alpha = data.usage["mock/alpha"]
    assert alpha.done + alpha.failed == sum(r["model"] == "mock/alpha" for r in read_results(run))


def test_report_renders_one_model_no_grid_no_scores_no_judge(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    run = _run(
        cli, write_config, tmp_path, models=[{"model": "mock/alpha"}], grid={}, scores={},
        judge=None,
    )  # fmt: skip
    result = cli("report", str(run), "--html", "out.html")
    assert result.code == 0, result.err
    page = (tmp_path / "out.html").read_text(encoding="utf-8")
    assert "no scores and no judges in this run" in page and "no judges in this run" in page
    assert _trial_rows(page) == len(read_results(run))
    assert not (run / "report.html").exists()


def test_report_on_a_run_with_nothing_finished_yet(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    write_config(**_config())
    made = api.create_run(api.load("exp.yaml"), tmp_path / "runs")
    result = cli("report", str(made.path))
    assert result.code == 0, result.err
    page = (made.path / "report.html").read_text(encoding="utf-8")
    assert "0 of 0 trials" in page and "not finished" in page


def test_the_trial_table_is_an_even_sample_beyond_max_trials(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    run = _run(cli, write_config, tmp_path)
    total = len(read_results(run))
    result = cli("report", str(run), "--max-trials", "10")
    assert result.code == 0, result.err
    page = (run / "report.html").read_text(encoding="utf-8")
    shown = _trial_rows(page)
    assert 0 < shown <= 10
    assert f"{shown:,} of {total:,} trials: an even sample" in page
    assert f"{shown:,} of {total:,} trials in its table" in result.out


def test_report_refuses_an_unknown_metric_in_one_line(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    run = _run(cli, write_config, tmp_path)
    result = cli("report", str(run), "--metric", "nope")
    assert result.code == 2
    assert "no metric 'nope'" in result.err and len(result.err.strip().splitlines()) == 1
    assert not (run / "report.html").exists()
    result = cli("report", str(run), "--no-html", "--metric", "judge.answer=pass")
    assert result.code == 0 and "judge.answer=pass" in result.out
    assert not (run / "report.html").exists()


# ------------------------------------------------------------------ a real browser


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="no chromium here (CI installs Debian's)")
def test_the_report_opens_in_headless_chromium_without_console_errors(
    cli: Cli, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    run = _run(cli, write_config, tmp_path)
    assert cli("report", str(run)).code == 0
    url = (run / "report.html").resolve().as_uri()
    browser = [str(_chromium()), "--headless", "--no-sandbox", "--disable-gpu",
               "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
               "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000"]  # fmt: skip
    dom = subprocess.run(
        [*browser, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
    )
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert console == []  # the page logs nothing, so any console line is an error
    records = len(read_results(run))
    assert f'<span id="shown">{records} shown</span>' in dom.stdout  # the script ran
    assert dom.stdout.count('<svg class="chart"') >= 10
    shot = tmp_path / "report.png"
    subprocess.run(
        [*browser, f"--screenshot={shot}", "--window-size=1200,2000", url],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
