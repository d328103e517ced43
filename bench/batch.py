"""Batch mode's own cost: N trials × T turns through a fake OpenAI Batch API.

Starts `python -m trialrun.testing --kind openai` (its own process; batches end as soon
as they are read) and runs `trialrun run CONFIG --wait` with `mode: batch` in a fresh
subprocess, polling every 0.05 s, so that the time measured is trialrun's orchestration
(building requests, files, submissions, storing results, records) plus the fake server's
answers, not waiting. Reports submissions, wall and CPU seconds per 1,000 requests, and
peak RSS. Usage:

    python bench/batch.py                       # 10,000 trials × 3 turns, 3 runs
    python bench/batch.py --trials 2000 --turns 3 --runs 1
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from http_clients import start_server  # bench/ is on sys.path when a script here runs

CHILD = """
import resource, sys
from trialrun.cli import run_cli
code = run_cli(sys.argv[1:])
usage = resource.getrusage(resource.RUSAGE_SELF)
print("BENCH", usage.ru_maxrss, usage.ru_utime + usage.ru_stime, code)
"""


def write_config(folder: Path, url: str, trials: int, turns: int) -> Path:
    with (folder / "items.jsonl").open("w") as handle:
        for i in range(trials):
            handle.write(json.dumps({"id": f"i{i:07d}", "prompt": f"Question number {i}?"}) + "\n")
    config = {
        "name": "batch-bench",
        "mode": "batch",
        "batch": {"poll_min_s": 0.05, "poll_max_s": 0.05},
        "dataset": {"path": "items.jsonl"},
        "models": [{"model": "openai/fake-model", "base_url": url, "api_key": "${env:BENCH_KEY}"}],
        "messages": [{"role": "user", "content": "{{ item.prompt }}"}],
        "followups": [f"Follow-up {k + 1}: are you sure?" for k in range(turns - 1)],
        "params": {"max_tokens": 64},
        "prices": {"openai/fake-model": {"input": 1.0, "output": 2.0}},
        "output": {"dir": str(folder / "runs")},
        "cache": {"dir": str(folder / "cache")},
    }
    path = folder / "bench.yaml"
    path.write_text(json.dumps(config))
    return path


def one_run(url: str, trials: int, turns: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="trialrun-batch-bench-") as tmp:
        folder = Path(tmp)
        config = write_config(folder, url, trials, turns)
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-c", CHILD, "run", str(config), "--wait", "--quiet"],
            capture_output=True,
            text=True,
            cwd=tmp,
            env={**_env(), "BENCH_KEY": "bench-key-0000000000"},
            check=False,
        )
        wall = time.perf_counter() - start
        line = next((ln for ln in result.stdout.splitlines() if ln.startswith("BENCH")), None)
        if line is None or not line.endswith(" 0"):
            raise SystemExit(f"the run failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
        _, rss_kb, cpu, _ = line.split()
        (run,) = (folder / "runs").iterdir()
        conn = sqlite3.connect(run / "trialrun.db")
        done = conn.execute("SELECT COUNT(*) FROM trials WHERE state='done'").fetchone()[0]
        submissions = conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
        conn.close()
    if done != trials:
        raise SystemExit(f"{done} of {trials} trials done")
    requests = trials * turns
    return {
        "wall": wall,
        "cpu": float(cpu),
        "rss": int(rss_kb) / 1024,
        "submissions": submissions,
        "wall_per_1k": wall / requests * 1000,
        "cpu_per_1k": float(cpu) / requests * 1000,
    }


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def spread(values: list[float], digits: int = 2) -> str:
    fmt = f"{{:,.{digits}f}}"
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, Python {platform.python_version()}, {platform.platform()}"
    )
    server, url = start_server(latency_ms=0.0)  # the fake OpenAI server, as a process
    try:
        runs = [one_run(url, args.trials, args.turns) for _ in range(args.runs)]
    finally:
        server.kill()
        server.wait()
    print(f"{args.trials:,} trials × {args.turns} turns; median (min–max) of {args.runs} runs")
    print(
        "| submissions | wall s | CPU s | wall s / 1k requests | CPU s / 1k requests | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| {spread([r['submissions'] for r in runs], 0)} | {spread([r['wall'] for r in runs], 1)} | "
        f"{spread([r['cpu'] for r in runs], 1)} | {spread([r['wall_per_1k'] for r in runs])} | "
        f"{spread([r['cpu_per_1k'] for r in runs])} | {spread([r['rss'] for r in runs], 1)} |"
    )


if __name__ == "__main__":
    main()
