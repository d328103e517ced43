"""Wall time and peak memory of `trialrun stats` on a run of 200,000 records.

Builds the run with `trialrun run` on the graded mock (10,000 items × 2 models × 2
temperatures × 5 repeats, a `correct` score, the models right 70% and 65% of the time),
then times, each in a fresh subprocess, `trialrun stats RUN` and
`trialrun stats RUN --compare model` (and `--by item.category`). Wall time is measured
inside the child from CLI entry to exit; peak RSS is the child's `ru_maxrss`. Usage:

    python bench/bench_stats.py                  # build a run in a temp folder, 3 timings each
    python bench/bench_stats.py --keep /tmp/b    # build (or reuse) the run under /tmp/b
"""

from __future__ import annotations

import argparse
import json
import platform
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
ITEMS, REPEATS = 10_000, 5


def write_config(folder: Path) -> Path:
    with (folder / "items.jsonl").open("w") as handle:
        for i in range(ITEMS):
            item = {"id": f"i{i:06d}", "prompt": f"What is {i} + 1?", "answer": str(i + 1),
                    "category": f"c{i % 4}"}  # fmt: skip
            handle.write(json.dumps(item) + "\n")
    config = {
        "name": "bench-stats",
        "seed": 1,
        "dataset": {"path": "items.jsonl"},
        "models": [
            {"model": "mock/alpha", "options": {"accuracy": 0.7}},
            {"model": "mock/beta", "options": {"accuracy": 0.65}},
        ],
        "grid": {"temperature": [0.0, 0.7]},
        "repeats": REPEATS,
        "messages": [{"role": "user", "content": "{{ item.prompt }}"}],
        "params": {"max_tokens": 16},
        "mock": {"answer": "{{ item.answer }}"},
        "scores": {"correct": {"equals": "{{ item.answer }}"}},
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
    print(f"built 200,000 records in {wall:.1f} s (peak RSS {rss:.0f} MB, "
          f"{time.perf_counter() - start:.1f} s with start-up)")  # fmt: skip
    return sorted(runs.iterdir())[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", type=Path, help="Build (or reuse) the run in this folder.")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trialrun-bench-stats-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        run = build(folder)
        print(f"{platform.machine()}, Python {platform.python_version()}, {run}")
        for extra in ([], ["--compare", "model"], ["--compare", "model", "--by", "item.category"]):
            results = [timed("stats", str(run), *extra) for _ in range(args.runs)]
            walls, rsss = [w for w, _ in results], [r for _, r in results]
            print(
                f"stats {' '.join(extra) or '(groups only)'}: wall {statistics.median(walls):.2f} s "
                f"({min(walls):.2f}-{max(walls):.2f}), peak RSS {statistics.median(rsss):.0f} MB "
                f"({min(rsss):.0f}-{max(rsss):.0f})"
            )


if __name__ == "__main__":
    main()
