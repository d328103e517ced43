"""executor.ray against the in-process executor: the same hf/ trials on a tiny model.

    .venv/bin/python bench/bench_ray.py --trials 240 --actors 1 2

Builds a tiny random-weight model (trialrun.local.tiny: 4 layers, hidden 128), then runs the
same config (greedy, max_tokens 24, batch_size 8) in this process and on a private local
Ray cluster (`address: local`) with each number of actors (1 CPU each). It prints the wall
time of each run, the seconds its actors took to load (from the run's `ray_actor` events),
and the trials' own span (first request sent to last record committed) with trials/s. On a CPU-only machine this measures Ray's overhead per request
and how actors share the cores, not GPU scaling: one actor per GPU is what executor.ray is
for, and nothing here ran on a GPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sqlite3
import sys
import tempfile
import time
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

import trialrun
from trialrun.local.tiny import build_tiny_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def config(folder: Path, trials: int, ray: dict[str, Any] | None, runs: Path) -> dict[str, Any]:
    experiment: dict[str, Any] = {
        "name": "bench-ray",
        "dataset": {"items": [{"id": f"q{i:04d}", "prompt": f"Claim {i}?"} for i in range(trials)]},
        "models": [{"model": f"hf/{folder}", "options": {"batch_size": 8}}],
        "params": {"max_tokens": 24, "temperature": 0.0},
        "messages": [{"role": "user", "content": "{{ item.prompt }}"}],
        "cache": {"enabled": False},
        "output": {"dir": str(runs)},
    }
    if ray is not None:
        experiment["executor"] = {"ray": ray}
    return experiment


def spans(run_dir: Path) -> tuple[float, float]:
    """(seconds the actors took to load, from `ray_actor` events; seconds from the first
    request sent to the last record committed)."""
    with closing(sqlite3.connect(run_dir / "trialrun.db")) as conn:
        notes = [d for (d,) in conn.execute("SELECT detail FROM events WHERE kind='ray_actor'")]
        first = conn.execute("SELECT MIN(started_at) FROM attempts").fetchone()[0]
        last = conn.execute("SELECT MAX(finished_at) FROM records").fetchone()[0]
    found = [float(m.group(1)) for n in notes if (m := re.search(r"in ([0-9.]+) s$", n))]
    span = (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()
    return max(found, default=0.0), span


def measure(folder: Path, work: Path, trials: int, ray: dict[str, Any] | None) -> dict[str, Any]:
    path = work / f"exp-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(config(folder, trials, ray, work / "runs")))
    started = time.perf_counter()
    run = trialrun.run(str(path))
    wall = time.perf_counter() - started
    loading, span = spans(run.path)
    return {"wall_s": wall, "load_s": loading, "span_s": span, "trials_per_s": trials / span}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=240)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = build_tiny_model(work / "tiny", layers=4, hidden=128)
        rows = [("in-process", measure(folder, work, args.trials, None))]
        for actors in args.actors:
            ray = {"address": "local", "actors": actors, "cpus_per_actor": 1}
            rows.append((f"ray, {actors} actor(s)", measure(folder, work, args.trials, ray)))
    print(f"{args.trials} trials, greedy, max_tokens 24, batch_size 8")
    print(f"{'executor':<22}{'wall s':>8}{'load s':>8}{'trials s':>10}{'trials/s':>10}")
    for name, row in rows:
        print(
            f"{name:<22}{row['wall_s']:>8.1f}{row['load_s']:>8.1f}{row['span_s']:>10.2f}"
            f"{row['trials_per_s']:>10.1f}"
        )


if __name__ == "__main__":
    main()
