"""`python -m trialrun.testing`: serve a fake provider API as its own process (benchmarks)."""

from __future__ import annotations

import argparse
import threading
from dataclasses import fields
from typing import Any

from trialrun.testing.faults import Faults
from trialrun.testing.server import FakeServer


def _parse_faults(text: str) -> Faults:
    known = {f.name for f in fields(Faults)}
    values: dict[str, Any] = {}
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        if name not in known:
            raise argparse.ArgumentTypeError(
                f"unknown fault {name!r} (known: {', '.join(sorted(known))})"
            )
        values[name] = int(value) if name == "seed" else float(value)
    return Faults(**values)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m trialrun.testing",
        description="Serve a fake provider API on 127.0.0.1 until interrupted; prints its base URL.",
    )
    parser.add_argument("--kind", choices=["openai", "anthropic", "google"], default="openai")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument(
        "--faults",
        type=_parse_faults,
        default=Faults(),
        help="e.g. rate_limit=0.02,server_error=0.02,seed=1",
    )
    args = parser.parse_args(argv)
    server = FakeServer(
        args.kind,
        faults=args.faults,
        latency_s=args.latency_ms / 1000,
        record=False,
        port=args.port,
    ).start()
    print(server.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
