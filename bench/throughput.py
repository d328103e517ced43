"""End-to-end throughput and peak memory of `trialrun run` on the mock provider.

Runs N single-turn mock trials at zero latency in a fresh subprocess (every record
committed, results.jsonl written, the response cache on and cold), and reports
trials/s and peak RSS. Usage:

    python bench/throughput.py                 # N = 10,000 and 100,000, 3 runs each
    python bench/throughput.py --n 10000 --runs 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import resource, sys, time
from trialrun.cli import run_cli
start = time.perf_counter()
code = run_cli(sys.argv[1:])
wall = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
usage = resource.getrusage(resource.RUSAGE_SELF)
print("BENCH", wall, rss, usage.ru_utime + usage.ru_stime, code)
"""


def write_config(folder: Path, n: int, models: int, turns: int, items: int | None) -> Path:
    items_n = items or max(1, n // models)
    repeats = max(1, n // (models * items_n))
    assert items_n * models * repeats == n, "N must be items × models × repeats"
    with (folder / "items.jsonl").open("w") as handle:
        for i in range(items_n):
            handle.write(json.dumps({"id": f"i{i:07d}", "prompt": f"Question number {i}?"}) + "\n")
    config = {
        "name": "bench",
        "dataset": {"path": "items.jsonl"},
        "models": [{"model": f"mock/m{m}"} for m in range(models)],
        "repeats": repeats,
        "messages": [{"role": "user", "content": "{{ item.prompt }}"}],
        "followups": ["Again?"] * (turns - 1),
        "params": {"max_tokens": 64},
        "output": {"dir": str(folder / "runs")},
        "cache": {"dir": str(folder / "cache")},
    }
    path = folder / "bench.yaml"
    path.write_text(json.dumps(config))
    return path


def one_run(n: int, models: int, turns: int, items: int | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="trialrun-bench-") as tmp:
        folder = Path(tmp)
        config = write_config(folder, n, models, turns, items)
        out = subprocess.run(
            [sys.executable, "-c", CHILD, "run", str(config), "--quiet"],
            capture_output=True,
            text=True,
            check=False,
        )
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH")), None)
        if line is None or not line.endswith(" 0"):
            raise SystemExit(f"benchmark run failed:\n{out.stdout}\n{out.stderr}")
        _, wall, rss_kb, cpu, _ = line.split()
        run_dir = next((folder / "runs").iterdir())
        lines = sum(1 for _ in (run_dir / "results.jsonl").open())
        assert lines == n, f"expected {n} committed records, found {lines}"
        return {
            "wall_s": float(wall),
            "rss_mb": int(rss_kb) / 1024,
            "cpu_s": float(cpu),
            "trials_per_s": n / float(wall),
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, action="append", help="trials (repeatable)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", type=int, default=1)
    parser.add_argument("--turns", type=int, default=1)
    parser.add_argument(
        "--items",
        type=int,
        default=1000,
        help="dataset size; trials = items × models × repeats (0: one item a trial)",
    )
    args = parser.parse_args()
    sizes = args.n or [10_000, 100_000]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {platform.platform()}"
    )
    print(
        f"items={args.items or 'N'} models={args.models} turns={args.turns} runs={args.runs} "
        "(median, min-max)"
    )
    for n in sizes:
        results = [
            one_run(n, args.models, args.turns, args.items or None) for _ in range(args.runs)
        ]
        for key in ("trials_per_s", "wall_s", "cpu_s", "rss_mb"):
            values = [r[key] for r in results]
            print(
                f"N={n:>7,}  {key:>12}: {statistics.median(values):10.1f}  "
                f"({min(values):.1f}-{max(values):.1f})"
            )


if __name__ == "__main__":
    main()
