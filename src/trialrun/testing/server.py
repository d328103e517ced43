"""Local HTTP servers that speak the OpenAI, Anthropic and Gemini wire formats, with faults.

A `FakeServer` listens on 127.0.0.1 on a free port, in a thread of its own (or, for
benchmarks, as its own process: `python -m trialrun.testing --help`). The
official SDKs talk to it as to the real service; its answers come from the mock
provider's `answer`, so they are deterministic and differ by model, prompt and params.

Faults are drawn per request from a seeded generator: 429 with Retry-After, 500,
overloaded (Anthropic's 529, 503 elsewhere), a slow answer (past a client's timeout),
a connection dropped before any byte, a body cut off mid-way, and a 200 whose body is
not JSON. A prompt containing `[[status:NNN]]` always gets that HTTP status, for tests
of final errors (400, 404) and authentication (401); one containing `[[size:NNN]]` gets
its answer padded to a body of at least NNN bytes (`[[size:NNN:chunked]]`: sent chunked,
with no Content-Length), for tests of the response size limit.

    with FakeServer("openai", faults=Faults(rate_limit=0.1)) as server:
        client = openai.OpenAI(base_url=server.url, api_key="x")

Every server also takes batches (OpenAI's files and batches, Anthropic's message batches,
Gemini's batch jobs with inline requests). A batch ends `batch_delay_s` after its creation,
as seen by whoever reads it next; `BatchFaults` makes some of its requests end as errors or
expire unprocessed, and `on_batch_create` runs after a batch is stored but before its
creator hears of it.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from trialrun.testing import anthropic_wire, gemini_wire, openai_wire
from trialrun.testing.batch_endpoints import BatchEndpoints
from trialrun.testing.faults import BatchFaults, Faults
from trialrun.testing.lifecycle import Handler
from trialrun.testing.wire import Kind, Wire

WIRES: dict[str, Wire] = {
    "openai": Wire(
        openai_wire.parse,
        openai_wire.render,
        openai_wire.error,
        openai_wire.models,
        openai_wire.given_key,
        ("/v1/chat/completions", "/v1/models"),
        url_suffix="/v1",
    ),
    "anthropic": Wire(
        anthropic_wire.parse,
        anthropic_wire.render,
        anthropic_wire.error,
        anthropic_wire.models,
        anthropic_wire.given_key,
        ("/v1/messages", "/v1/models"),
        overloaded=529,
    ),
    "google": Wire(
        gemini_wire.parse,
        gemini_wire.render,
        gemini_wire.error,
        gemini_wire.models,
        gemini_wire.given_key,
        ("/{version}/models/{model}:generateContent", "/{version}/models"),
    ),
}
"""Each fake server kind's wire format."""


class FakeServer(BatchEndpoints):
    """A provider's HTTP API on 127.0.0.1; `url` is the base URL to give its SDK."""

    def __init__(
        self,
        kind: Kind = "openai",
        *,
        faults: Faults | None = None,
        latency_s: float = 0.0,
        api_key: str | None = None,
        models: tuple[str, ...] = ("fake-model",),
        record: bool = True,
        port: int = 0,
        batch_delay_s: float = 0.0,
        batch_faults: BatchFaults | None = None,
        on_batch_create: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        if kind not in WIRES:
            raise ValueError(f"unknown kind {kind!r}: openai, anthropic or google")
        self.kind: Kind = kind
        self.wire = WIRES[kind]
        self.thread_name = f"fake-{kind}"
        self.faults = faults or Faults()
        self.latency_s = latency_s
        self.api_key = api_key
        self.models = models
        self.record = record
        self.port = port
        self.requests: list[dict[str, Any]] = []
        """Every request as {path, body, headers, outcome}, when `record` is on."""
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._random = random.Random(self.faults.seed)
        self._init_batches(batch_delay_s, batch_faults, on_batch_create)

    def _init_batches(
        self,
        delay_s: float,
        faults: BatchFaults | None,
        on_create: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        self.batch_delay_s = delay_s
        """Seconds from a batch's creation until it has ended (read when a batch is read)."""
        self.batch_faults = faults or BatchFaults()
        self.on_batch_create = on_create
        """Called in the server's thread with a new batch's JSON, before it is answered."""
        self.batches: dict[str, dict[str, Any]] = {}
        """Every batch created, by id: its requests as sent (`requests`), each request's
        drawn outcome (`outcomes`), `created`, `cancelling_at` and `ended_at` (Unix times;
        `ended_at` is set by the first read after the end), and once ended, `results`
        (custom_id → succeeded, errored, expired or canceled) and the result `lines`."""
        self._files: dict[str, dict[str, Any]] = {}
        self._uploads: dict[str, dict[str, Any]] = {}
        """Gemini's resumable uploads in progress, by session id."""
        self._batch_serial = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.wire.url_suffix}"

    # -- control and inspection ------------------------------------------------------------

    def set_faults(self, faults: Faults | None = None, **changes: Any) -> None:
        """Replace the fault mix (or change some of its fields) from now on."""
        with self._lock:
            self.faults = replace(faults or self.faults, **changes)
            self._random = random.Random(self.faults.seed)

    def set_batch(self, delay_s: float | None = None, faults: BatchFaults | None = None) -> None:
        """Change the batch delay (for every batch not yet ended) or the batch faults (for
        batches created from now on)."""
        with self._lock:
            if delay_s is not None:
                self.batch_delay_s = delay_s
            if faults is not None:
                self.batch_faults = faults

    def counts(self) -> Counter[str]:
        """Requests by outcome: ok, rate_limit, server_error, ..., status_NNN, auth, and for
        the batch endpoints batch_create (a batch created) and batch (any other call)."""
        with self._lock:
            return Counter(self._counts)

    def batch_creates(self) -> list[str]:
        """The ids of the batches created, oldest first."""
        with self._lock:
            return list(self.batches)

    def reset(self) -> None:
        """Forget the requests, counts, batches and files so far."""
        with self._lock:
            self._counts.clear()
            self.requests.clear()
            self.batches.clear()
            self._files.clear()

    def routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path, handler) of every endpoint; extend to add endpoints."""
        return [*self._generate_routes(), *self._batch_routes()]
