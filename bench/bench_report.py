"""Wall time, peak memory and HTML size of `trialrun report` on a run of 100,000 records.

Builds the run with `trialrun run` on the graded mock: 5,000 items × 2 models × a grid of
layer (5 values) × strength (2 values), one repeat, an `exact` score and a mock judge
(pass/fail), so the report has 2 metrics, each with 20 groups, 10 paired comparisons and 6
charts (bars, 2 heatmaps, 2 line plots, a forest plot), and a trial table sampled to 5,000
of 100,000. Then
times `trialrun report RUN` in fresh subprocesses (wall from CLI entry to exit, peak RSS
the child's `ru_maxrss`) and reports the HTML file's size. Usage:

    python bench/bench_report.py                  # build a run in a temp folder, 3 timings
    python bench/bench_report.py --keep /tmp/b    # build (or reuse) the run under /tmp/b
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import resource, sys, time
from trialrun.cli import run_cli
start = time.perf_counter()
code = run_cli(sys.argv[1:])
wall = time.perf_counter() - start
print("BENCH", wall, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, code, file=sys.stderr)
"""
ITEMS = 5_000


def write_config(folder: Path) -> Path:
    with (folder / "items.jsonl").open("w") as handle:
        for i in range(ITEMS):
            item = {"id": f"i{i:06d}", "prompt": f"What is {i} + 1?", "answer": str(i + 1)}
            handle.write(json.dumps(item) + "\n")
    config = {
        "name": "bench-report",
        "seed": 1,
        "dataset": {"path": "items.jsonl"},
        "models": [
            {"model": "mock/alpha", "options": {"accuracy": 0.7}},
            {"model": "mock/beta", "options": {"accuracy": 0.65}},
        ],
        "grid": {"layer": [4, 8, 12, 16, 20], "strength": [0.5, 1.0]},
        "messages": [{"role": "user", "content": "{{ item.prompt }}"}],
        "params": {"max_tokens": 16},
        "mock": {"answer": "{{ item.answer }}"},
        "scores": {"exact": {"equals": "{{ item.answer }}"}},
        "judge": {
            "model": "mock/judge",
            "prompt": "Grade: {{ response }}",
            "schema": {"answer": ["pass", "fail"]},
        },
        "output": {"dir": str(folder / "runs")},
        "cache": {"enabled": False},
    }
    path = folder / "bench.yaml"
    path.write_text(json.dumps(config))
    return path


def timed(*args: str) -> tuple[float, float]:
    """(wall s, peak RSS MB) of `trialrun ARGS` in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=False
    )
    line = next(ln for ln in done.stderr.splitlines() if ln.startswith("BENCH"))
    _, wall, rss, code = line.split()
    assert code == "0", done.stderr
    return float(wall), int(rss) / 1024


def build(folder: Path) -> Path:
    runs = folder / "runs"
    found = sorted(runs.iterdir()) if runs.is_dir() else []
    if found:
        return found[-1]
    start = time.perf_counter()
    wall, rss = timed("run", str(write_config(folder)), "--quiet")
    print(f"built {ITEMS * 20:,} records in {wall:.1f} s (peak RSS {rss:.0f} MB, "
          f"{time.perf_counter() - start:.1f} s with start-up)")  # fmt: skip
    return sorted(runs.iterdir())[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", type=Path, help="Build (or reuse) the run in this folder.")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trialrun-bench-report-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        run = build(folder)
        print(f"{platform.machine()}, Python {platform.python_version()}, {run}")
        results = [timed("report", str(run)) for _ in range(args.runs)]
        walls, rsss = [w for w, _ in results], [r for _, r in results]
        page = (run / "report.html").read_text(encoding="utf-8")
        rows = len(re.findall(r"<tr class=t ", page))
        print(
            f"report: wall {statistics.median(walls):.2f} s ({min(walls):.2f}-{max(walls):.2f}), "
            f"peak RSS {statistics.median(rsss):.0f} MB ({min(rsss):.0f}-{max(rsss):.0f}); "
            f"report.html {len(page.encode()) / 1e6:.2f} MB, {rows:,} trial rows, "
            f"{page.count('<svg')} charts"
        )


if __name__ == "__main__":
    main()
