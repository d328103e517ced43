"""Batch mode's own cost: N trials × T turns through a fake OpenAI Batch API.

Starts `python -m trialrun.testing --kind openai` (its own process; batches end as soon
as they are read) and runs `trialrun run CONFIG --wait` with `mode: batch` in a fresh
subprocess, polling every 0.05 s, so that the time measured is trialrun's orchestration
(building requests, files, submissions, storing results, records) plus the fake server's
answers, not waiting. Reports submissions, wall and CPU seconds per 1,000 requests, and
peak RSS. Usage:

    python bench/batch.py                       # 10,000 trials × 3 turns, 3 runs
    python bench/batch.py --trials 2000 --turns 3 --runs 1

`--sizes` measures instead what one batch costs in memory as it grows: for each size N, N
one-turn trials planned (`trialrun.api.create_runs`), then submitted (`trialrun collect`:
build the requests, write and upload one batch of N) and collected (`trialrun collect`
again: read the ended batch's results, store them, commit the N records), each step in a
fresh process, with its peak RSS (`ru_maxrss`: interpreter, imports and all), through the
fake OpenAI server (or `--provider anthropic` or `google`: Gemini batches over 2 MiB go
as a file) or the offline `mock` provider (`--provider mock`):

    python bench/batch.py --sizes 5000,20000,50000 --provider openai --prompt-chars 1000
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

CHILD = """
import resource, sys
from trialrun.cli import run_cli
code = run_cli(sys.argv[1:])
usage = resource.getrusage(resource.RUSAGE_SELF)
print("BENCH", usage.ru_maxrss, usage.ru_utime + usage.ru_stime, code)
"""


def write_config(
    folder: Path, url: str, trials: int, turns: int, provider: str = "openai", prompt_chars: int = 0
) -> Path:
    padding = ("lorem ipsum " * (prompt_chars // 12 + 1))[:prompt_chars]
    with (folder / "items.jsonl").open("w") as handle:
        for i in range(trials):
            prompt = f"Question number {i}? {padding}".strip()
            handle.write(json.dumps({"id": f"i{i:07d}", "prompt": prompt}) + "\n")
    model = {"model": f"{provider}/fake-model", "base_url": url, "api_key": "${env:BENCH_KEY}"}
    if provider == "mock":
        model = {"model": "mock/fake-model"}
    config = {
        "name": "batch-bench",
        "mode": "batch",
        "batch": {"poll_min_s": 0.05, "poll_max_s": 0.05},
        "dataset": {"path": "items.jsonl"},
        "models": [model],
        "messages": [{"role": "user", "content": "{{ item.prompt }}"}],
        "followups": [f"Follow-up {k + 1}: are you sure?" for k in range(turns - 1)],
        "params": {"max_tokens": 64},
        "prices": {model["model"]: {"input": 1.0, "output": 2.0}},
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


def child(args: list[str], cwd: Path, code: str = CHILD) -> tuple[float, float, float]:
    """`trialrun ARGS --quiet` (or `code` with ARGS) in a fresh process: (wall s, CPU s, peak
    RSS MB)."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", code, *args, *(["--quiet"] if code == CHILD else [])],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**_env(), "BENCH_KEY": "bench-key-0000000000"},
        check=False,
    )
    wall = time.perf_counter() - start
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("BENCH")), None)
    if line is None or not line.endswith(" 0"):
        raise SystemExit(
            f"trialrun {args[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        )
    _, rss_kb, cpu, _ = line.split()
    return wall, float(cpu), int(rss_kb) / 1024


PLAN = """
import resource, sys
import trialrun
trialrun.api.create_runs([trialrun.load(sys.argv[1])])
usage = resource.getrusage(resource.RUSAGE_SELF)
print("BENCH", usage.ru_maxrss, usage.ru_utime + usage.ru_stime, 0)
"""


def one_batch(url: str, size: int, provider: str, prompt_chars: int) -> dict[str, float]:
    """Plan, submit one stage of `size` requests (one batch where the provider's limits take
    it), collect it: each step in its own process."""
    with tempfile.TemporaryDirectory(prefix="trialrun-batch-bench-") as tmp:
        folder = Path(tmp)
        config = write_config(folder, url, size, 1, provider, prompt_chars)
        plan = child([str(config)], folder, PLAN)
        (run,) = (folder / "runs").iterdir()
        submit = child(["collect", str(run)], folder)
        collect = child(["collect", str(run)], folder)
        conn = sqlite3.connect(run / "trialrun.db")
        done = conn.execute("SELECT COUNT(*) FROM trials WHERE state='done'").fetchone()[0]
        batches = conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
        conn.close()
    if done != size:
        raise SystemExit(f"{done} of {size} trials done")
    return {
        "batches": batches,
        "plan_rss": plan[2],
        "submit_wall": submit[0],
        "submit_rss": submit[2],
        "collect_wall": collect[0],
        "collect_rss": collect[2],
    }


def sizes_table(url: str, sizes: list[int], provider: str, prompt_chars: int) -> None:
    print(f"one batch of N one-turn requests via {provider}, prompts of ~{prompt_chars} chars")
    print(
        "| N | batches | plan peak RSS MB | submit wall s | submit peak RSS MB "
        "| collect wall s | collect peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|")
    for size in sizes:
        r = one_batch(url, size, provider, prompt_chars)
        print(
            f"| {size:,} | {r['batches']:.0f} | {r['plan_rss']:.1f} | {r['submit_wall']:.1f} | {r['submit_rss']:.1f} "
            f"| {r['collect_wall']:.1f} | {r['collect_rss']:.1f} |",
            flush=True,
        )


def serve(kind: str) -> tuple[subprocess.Popen[str], str]:
    """`python -m trialrun.testing --kind KIND` (answers at once, records nothing) and its URL."""
    server = subprocess.Popen(
        [sys.executable, "-m", "trialrun.testing", "--kind", kind, "--latency-ms", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    url = server.stdout.readline().strip()
    if not url.startswith("http"):
        server.kill()
        raise SystemExit("the fake server did not start")
    return server, url


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
    parser.add_argument("--sizes", help="comma-separated batch sizes: one batch's memory each")
    parser.add_argument(
        "--provider", choices=["openai", "anthropic", "google", "mock"], default="openai"
    )
    parser.add_argument("--prompt-chars", type=int, default=0, help="padding of each prompt")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, Python {platform.python_version()}, {platform.platform()}"
    )
    kind = args.provider if args.sizes and args.provider != "mock" else "openai"
    server, url = serve(kind)  # the fake server, as a process
    try:
        if args.sizes:
            sizes = [int(size) for size in args.sizes.split(",")]
            sizes_table(url, sizes, args.provider, args.prompt_chars)
            return
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
