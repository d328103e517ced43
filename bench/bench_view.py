"""The dashboard's run page on a run of 100,000 records while that run is being written.

Builds (once, with --keep) the graded-mock run of bench_report.py with 6,000 items
instead of 5,000 (120,000 trials: 2 models × layer (5) × strength (2), an `exact` score,
a mock judge), stopped cleanly with SIGINT once 100,000 records are in. Then starts
`trialrun view` in its own process, lets it compute the run's first snapshot, resumes the
run (`trialrun resume`, the sweep writing the last ~20,000 trials into the same store) and,
while it writes, fetches the run page every 0.2 s with urllib, timing each answer (wall
from request to last byte). Also times the run's JSON and a filtered record-browser page.
Usage:

    python bench/bench_view.py --keep /tmp/bview2   # build once (or reuse), then time
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).parent))
import bench_report

ITEMS = 6_000
STOP_AT = 100_000


def done(run: Path) -> int:
    conn = sqlite3.connect(f"file:{run / 'trialrun.db'}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])
    finally:
        conn.close()


def listed(runs: Path) -> list[Path]:
    """Run folders (not the hidden one being created)."""
    return sorted(p for p in runs.iterdir() if not p.name.startswith(".")) if runs.is_dir() else []


def build(folder: Path) -> Path:
    """A run with >= STOP_AT records and trials still pending (stopped with SIGINT)."""
    runs = folder / "runs"
    if found := listed(runs):
        return found[-1]
    bench_report.ITEMS = ITEMS
    config = bench_report.write_config(folder)
    child = subprocess.Popen([sys.executable, "-m", "trialrun", "run", str(config), "--quiet"])
    start = time.perf_counter()
    while True:
        time.sleep(0.5)
        found = listed(runs)
        if found and done(found[-1]) >= STOP_AT:
            break
    child.send_signal(signal.SIGINT)
    child.wait(timeout=120)
    print(f"built {done(found[-1]):,} records in {time.perf_counter() - start:.0f} s, stopped")
    return found[-1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch(url: str) -> tuple[float, str]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        body = response.read().decode("utf-8")
    return time.perf_counter() - start, body


def summary(name: str, times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return (
        f"{name}: n={len(times)}, median {statistics.median(times) * 1000:.0f} ms, "
        f"p95 {p95 * 1000:.0f} ms, max {max(times) * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", type=Path, help="Build (or reuse) the run in this folder.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trialrun-bench-view-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        run = build(folder)
        print(f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
        time_page(run)


def time_page(run: Path) -> None:
    port = free_port()
    view = subprocess.Popen(
        [sys.executable, "-m", "trialrun", "view", str(run.parent), "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/runs/{quote(run.name)}"
    try:
        time.sleep(1.5)
        cold, page = fetch(base)
        while "computing statistics" in page:  # the first snapshot
            time.sleep(0.5)
            _, page = fetch(base)
        first = fetch(base)[0]
        before = done(run)
        writer = subprocess.Popen(
            [sys.executable, "-m", "trialrun", "resume", str(run), "--dir", str(run.parent)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        pages, jsons, records = [], [], []
        while writer.poll() is None:
            pages.append(fetch(base)[0])
            jsons.append(fetch(base + ".json")[0])
            records.append(fetch(base + "/records?model=mock/beta&score=exact%3Dfalse")[0])
            time.sleep(0.2)
        _, status = fetch(base + ".json")
        after = json.loads(status)["counts"]["done"]
        print(f"run {run.name}: {before:,} records at the start, {after:,} at the end")
        print(f"first page (no snapshot yet, waits up to 1 s): {cold * 1000:.0f} ms; "
              f"with a snapshot, before the sweep: {first * 1000:.0f} ms")  # fmt: skip
        print("while `trialrun resume` writes the same store:")
        print("  " + summary("run page", pages))
        print("  " + summary("run JSON", jsons))
        print("  " + summary("records page (filtered, 50 rows)", records))
    finally:
        view.send_signal(signal.SIGINT)
        view.wait(timeout=30)


if __name__ == "__main__":
    main()
