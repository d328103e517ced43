"""Requests/s, CPU and peak RSS of HTTP clients against a local fake OpenAI server.

Starts `python -m trialrun.testing` (its own process, fixed latency) and
sends the same N single-turn chat completions at the same concurrency through:

    raw-httpx      a plain asyncio loop over AsyncOpenAI with a semaphore, the SDK's default
                   HTTP transport (the floor any orchestrator pays)
    raw-aiohttp    the same loop over the SDK's aiohttp transport (DefaultAioHttpClient)
    trialrun-httpx / trialrun-aiohttp
                   `trialrun run` of an `openai/...` model with that `base_url`, every
                   record committed to the store (the response cache on and cold)

Each client runs in a fresh subprocess; wall seconds are the whole process's (interpreter
start, imports, setup and teardown included, the same for every client), CPU seconds and
peak RSS are its own (`getrusage`). Usage:

    python bench/http_clients.py                          # N=2000, C=100, 0 and 50 ms, 3 runs
    python bench/http_clients.py --n 10000 --latency-ms 0 --runs 3 --clients raw-aiohttp,trialrun-aiohttp
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAW = """
import asyncio, resource, sys, time
import openai
url, n, concurrency, transport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

async def main():
    http = openai.DefaultAioHttpClient() if transport == "aiohttp" else None
    client = openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0, http_client=http)
    gate = asyncio.Semaphore(concurrency)
    async def one(i):
        async with gate:
            r = await client.chat.completions.create(
                model="fake-model", max_tokens=64,
                messages=[{"role": "user", "content": f"Question number {i}?"}])
            return r.choices[0].message.content
    answers = await asyncio.gather(*(one(i) for i in range(n)))
    await client.close()
    assert len(answers) == n

start = time.perf_counter()
asyncio.run(main())
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_SELF)
print("BENCH", wall, usage.ru_maxrss, usage.ru_utime + usage.ru_stime, n)
"""

TRIALRUN = """
import json, resource, sys, time
from pathlib import Path
from trialrun.cli import run_cli
start = time.perf_counter()
code = run_cli(sys.argv[1:])
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_SELF)
runs = Path(sys.argv[2]).parent / "runs"
done = sum(1 for f in runs.glob("*/results.jsonl") for line in f.open() if '"status": "done"' in line or '"status":"done"' in line)
print("BENCH", wall, usage.ru_maxrss, usage.ru_utime + usage.ru_stime, done if code == 0 else -1)
"""

INSPECT = """
import resource, sys, tempfile, time
from inspect_ai import Task, eval as inspect_eval
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.solver import generate
url, n, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
task = Task(
    dataset=MemoryDataset([Sample(input=f"Question number {i}?", id=i) for i in range(n)]),
    solver=generate(),
)
logs = inspect_eval(
    task, model="openai/fake-model", model_base_url=url, max_connections=concurrency,
    display="none", log_dir=tempfile.mkdtemp(), max_tokens=64,
    model_args={"responses_api": False},  # chat completions, like the other clients
)
usage = resource.getrusage(resource.RUSAGE_SELF)
done = logs[0].results.completed_samples if logs[0].status == "success" and logs[0].results else -1
print("BENCH", 0, usage.ru_maxrss, usage.ru_utime + usage.ru_stime, done)
"""

CLIENTS = ("raw-httpx", "raw-aiohttp", "trialrun-httpx", "trialrun-aiohttp", "inspect")
BASELINE = {
    "trialrun-httpx": "raw-httpx",
    "trialrun-aiohttp": "raw-aiohttp",
    "inspect": "raw-httpx",
}


def start_server(latency_ms: float, faults: str = "") -> tuple[subprocess.Popen[str], str]:
    extra = ["--faults", faults] if faults else []
    server = subprocess.Popen(
        [sys.executable, "-m", "trialrun.testing", "--latency-ms", str(latency_ms), *extra],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    url = server.stdout.readline().strip()
    if not url.startswith("http"):
        server.kill()
        raise SystemExit("the fake server did not start")
    return server, url


def trialrun_config(folder: Path, url: str, n: int, concurrency: int, transport: str) -> Path:
    with (folder / "items.jsonl").open("w") as handle:
        for i in range(n):
            handle.write(json.dumps({"id": f"i{i:07d}", "prompt": f"Question number {i}?"}) + "\n")
    config = {
        "name": "http-bench",
        "dataset": {"path": "items.jsonl"},
        "models": [
            {"model": "openai/fake-model", "base_url": url, "options": {"transport": transport}}
        ],
        "messages": [{"role": "user", "content": "{{ item.prompt }}"}],
        "params": {"max_tokens": 64},
        "limits": {"openai": {"concurrency": concurrency}},
        "output": {"dir": str(folder / "runs")},
        "cache": {"dir": str(folder / "cache")},
    }
    path = folder / "bench.yaml"
    path.write_text(json.dumps(config))
    return path


def one_run(client: str, url: str, n: int, concurrency: int) -> dict[str, float]:
    kind, _, transport = client.partition("-")
    with tempfile.TemporaryDirectory(prefix="trialrun-http-bench-") as tmp:
        if kind == "inspect":  # Inspect AI's OpenAI provider runs on the SDK's httpx transport
            command = [sys.executable, "-c", INSPECT, url, str(n), str(concurrency)]
        elif kind == "raw":
            command = [sys.executable, "-c", RAW, url, str(n), str(concurrency), transport]
        else:
            config = trialrun_config(Path(tmp), url, n, concurrency, transport)
            command = [sys.executable, "-c", TRIALRUN, "run", str(config), "--quiet"]
        start = time.perf_counter()
        env = {**os.environ, "OPENAI_API_KEY": "bench-key"}
        result = subprocess.run(
            command, capture_output=True, text=True, cwd=tmp, check=False, env=env
        )
        wall_process = time.perf_counter() - start
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("BENCH")), None)
    if line is None:
        raise SystemExit(f"{client} failed:\n{result.stdout}\n{result.stderr[-3000:]}")
    _, _wall_inside, rss_kb, cpu, done = line.split()
    if int(float(done)) != n:
        raise SystemExit(f"{client}: {done} of {n} requests done\n{result.stderr[-3000:]}")
    return {
        "wall": wall_process,
        "rps": n / wall_process,
        "cpu": float(cpu),
        "rss": int(rss_kb) / 1024,
    }


def versions() -> str:
    """The packages whose code is measured, and the commit of trialrun's."""
    found = []
    for name in ("trialrun", "openai", "aiohttp", "httpx2", "httpx", "inspect-ai"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found.append(f"{name} {importlib.metadata.version(name)}")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return ", ".join(found) + (f"; trialrun at commit {commit}" if commit else "")


def spread(values: list[float], digits: int = 0) -> str:
    fmt = f"{{:,.{digits}f}}"
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[2000])
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 50.0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument(
        "--faults", default="", help="server fault mix, e.g. rate_limit=0.02,server_error=0.02"
    )
    args = parser.parse_args()
    clients = args.clients.split(",")
    for client in clients:
        if client not in CLIENTS:
            parser.error(f"unknown client {client!r} (known: {', '.join(CLIENTS)})")

    print(
        f"machine: {platform.machine()}, Python {platform.python_version()}, {platform.platform()}"
    )
    print(f"versions: {versions()}")
    print(f"C = {args.concurrency}; median (min–max) of {args.runs} runs, interleaved\n")
    print(
        "| latency | N | client | req/s | wall s | CPU s | peak RSS MB "
        "| req/s vs raw (same transport) | trialrun-aiohttp vs this |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for latency in args.latency_ms:
        server, url = start_server(latency, args.faults)
        try:
            for n in args.n:
                results: dict[str, list[dict[str, float]]] = {c: [] for c in clients}
                for _ in range(args.runs):  # interleaved, so drift hits every client alike
                    for client in clients:
                        results[client].append(one_run(client, url, n, args.concurrency))
                for client in clients:
                    runs = results[client]
                    rps = statistics.median(r["rps"] for r in runs)
                    base = results.get(BASELINE.get(client, ""))
                    ratio = (
                        f"{rps / statistics.median(r['rps'] for r in base):.2f}×" if base else ""
                    )
                    ours = results.get("trialrun-aiohttp")
                    versus = (
                        f"{statistics.median(r['rps'] for r in ours) / rps:.2f}×"
                        if ours and client != "trialrun-aiohttp"
                        else ""
                    )
                    print(
                        f"| {latency:g} ms | {n:,} | {client} | {spread([r['rps'] for r in runs])} | "
                        f"{spread([r['wall'] for r in runs], 1)} | {spread([r['cpu'] for r in runs], 1)} | "
                        f"{spread([r['rss'] for r in runs], 1)} | {ratio} | {versus} |",
                        flush=True,
                    )
        finally:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
