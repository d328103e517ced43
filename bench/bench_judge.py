"""Trials/s and peak RSS of the same sweep with and without an online LLM judge (issue 12).

Starts the fake OpenAI server (`python -m trialrun.testing`, its own process, a fixed
latency) and runs `trialrun run` of N single-turn trials of `openai/fake-model` against
it, each in a fresh subprocess, twice: unjudged, and with one online judge (the same
server, a structured verdict `{answer: [pass, fail], coherent: bool, reasoning: str}`, so
every trial makes two calls, through one `openai` limiter of C slots). Every record is
committed, `results.jsonl` written, the response cache on and cold; the script checks N
done records and, judged, N judgments with a verdict. The runs are interleaved
(unjudged, judged, unjudged, ...) so drift on the machine hits both alike.

Wall seconds are measured inside the child from CLI entry to exit; CPU seconds and peak
RSS (`ru_maxrss`) are the child's own; server CPU seconds are the fake server's over the
child's life (from /proc; Linux only), since both share the machine, and `load` the
1-minute load average right after each run (this client and the server make about 1.3 of
it; more means other work on the machine was taking CPU from the run). Usage:

    python bench/bench_judge.py                       # N = 2,000 and 4,000, 30 ms, C = 64, 3 runs
    python bench/bench_judge.py --n 2000 --runs 1 --latency-ms 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from contextlib import closing
from pathlib import Path
from typing import Any

CHILD = """
import resource, sys, time
from trialrun.cli import run_cli
start = time.perf_counter()
code = run_cli(sys.argv[1:])
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_SELF)
print("BENCH", wall, usage.ru_maxrss, usage.ru_utime + usage.ru_stime, code)
"""

JUDGE = {
    "name": "grader",
    "model": "openai/fake-model",
    "prompt": "Question: {{ item.prompt }}\nAnswer: {{ response }}\nGrade the answer.",
    "schema": {"answer": ["pass", "fail"], "coherent": "bool", "reasoning": "str"},
    "when": "online",
}


def start_server(latency_ms: float) -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "trialrun.testing", "--latency-ms", str(latency_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    url = server.stdout.readline().strip()
    if not url.startswith("http"):
        server.kill()
        raise SystemExit("the fake server did not start")
    return server, url


def cpu_s(pid: int) -> float:
    """A process's CPU seconds so far (user + system), from /proc; NaN where there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_config(folder: Path, url: str, n: int, concurrency: int, judged: bool) -> Path:
    with (folder / "items.jsonl").open("w") as handle:
        for i in range(n):
            handle.write(json.dumps({"id": f"i{i:07d}", "prompt": f"Question number {i}?"}) + "\n")
    config: dict[str, Any] = {
        "name": "judge-bench",
        "dataset": {"path": "items.jsonl"},
        "models": [{"model": "openai/fake-model", "base_url": url}],
        "messages": [{"role": "user", "content": "{{ item.prompt }}"}],
        "params": {"max_tokens": 64},
        "limits": {"openai": {"concurrency": concurrency}},
        "output": {"dir": str(folder / "runs")},
        "cache": {"dir": str(folder / "cache")},
    }
    if judged:
        config["judge"] = {**JUDGE, "base_url": url}
    path = folder / "bench.yaml"
    path.write_text(json.dumps(config))
    return path


def check_run(run_dir: Path, n: int, judged: bool) -> None:
    """N done records; judged, N judgments, each a verdict, shown in its record."""
    with closing(sqlite3.connect(run_dir / "trialrun.db")) as conn:
        done = conn.execute("SELECT COUNT(*) FROM records WHERE status = 'done'").fetchone()[0]
        verdicts = conn.execute(
            "SELECT COUNT(*) FROM judgments WHERE state = 'done' AND verdict IS NOT NULL"
        ).fetchone()[0]
        shown = conn.execute(
            "SELECT COUNT(*) FROM records WHERE json_extract(record, '$.judge') IS NOT NULL"
        ).fetchone()[0]
    lines = sum(1 for _ in (run_dir / "results.jsonl").open())
    expected = n if judged else 0
    if (done, lines, verdicts, shown) != (n, n, expected, expected):
        raise SystemExit(
            f"{run_dir}: {done} done records, {lines} lines, {verdicts} verdicts, {shown} "
            f"records with a verdict; expected {n}, {n}, {expected}, {expected}"
        )


def one_run(
    server: subprocess.Popen[str], url: str, n: int, concurrency: int, judged: bool
) -> dict[str, float]:
    server_before = cpu_s(server.pid)
    with tempfile.TemporaryDirectory(prefix="trialrun-judge-bench-") as tmp:
        folder = Path(tmp)
        config = write_config(folder, url, n, concurrency, judged)
        env = {**os.environ, "OPENAI_API_KEY": "bench-key"}
        out = subprocess.run(
            [sys.executable, "-c", CHILD, "run", str(config), "--quiet"],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp,
            env=env,
        )
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH")), None)
        if line is None or not line.endswith(" 0"):
            raise SystemExit(f"benchmark run failed:\n{out.stdout}\n{out.stderr[-3000:]}")
        server_cpu = cpu_s(server.pid) - server_before
        _, wall, rss_kb, cpu, _ = line.split()
        check_run(next((folder / "runs").iterdir()), n, judged)
    return {
        "trials_per_s": n / float(wall),
        "wall_s": float(wall),
        "cpu_s": float(cpu),
        "server_cpu_s": server_cpu,
        "rss_mb": int(rss_kb) / 1024,
        "load": os.getloadavg()[0],
    }


def spread(values: list[float], digits: int = 0) -> str:
    fmt = f"{{:,.{digits}f}}"
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{fmt.format(mid)} ({fmt.format(low)}–{fmt.format(high)})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, nargs="+", default=[2000, 4000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {platform.platform()}"
    )
    print(
        f"fake OpenAI server at {args.latency_ms:g} ms, C = {args.concurrency}; "
        f"median (min–max) of {args.runs} runs, interleaved\n"
    )
    print(
        "| N | judge | trials/s | calls/s | wall s | CPU s | server CPU s | peak RSS MB "
        "| load | judged ÷ unjudged |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    server, url = start_server(args.latency_ms)
    try:
        for n in args.n:
            results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
            for _ in range(args.runs):
                for judged in (False, True):
                    results[judged].append(one_run(server, url, n, args.concurrency, judged))
            base = statistics.median(r["trials_per_s"] for r in results[False])
            for judged in (False, True):
                runs = results[judged]
                rate = [r["trials_per_s"] for r in runs]
                calls = [x * (2 if judged else 1) for x in rate]
                ratio = f"{statistics.median(rate) / base:.2f}×" if judged else ""
                print(
                    f"| {n:,} | {'online' if judged else 'none'} | {spread(rate)} | "
                    f"{spread(calls)} | {spread([r['wall_s'] for r in runs], 1)} | "
                    f"{spread([r['cpu_s'] for r in runs], 1)} | "
                    f"{spread([r['server_cpu_s'] for r in runs], 1)} | "
                    f"{spread([r['rss_mb'] for r in runs], 1)} | "
                    f"{spread([r['load'] for r in runs], 1)} | {ratio} |",
                    flush=True,
                )
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
