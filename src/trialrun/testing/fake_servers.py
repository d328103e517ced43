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

The OpenAI and Anthropic servers also take batches (OpenAI's files and batches, Anthropic's
message batches). A batch ends `batch_delay_s` after its creation, as seen by whoever reads
it next; `BatchFaults` makes some of its requests end as errors or expire unprocessed, and
`on_batch_create` runs after a batch is stored but before its creator hears of it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web

from trialrun.providers.mock import answer
from trialrun.types import Request, Response

Kind = Literal["openai", "anthropic", "google"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_FORCED = re.compile(r"\[\[status:(\d{3})\]\]")
_SIZED = re.compile(r"\[\[size:(\d+)(:chunked)?\]\]")
_CHUNK = 64 * 1024
_OUTCOMES = ("rate_limit", "server_error", "overloaded", "slow", "drop", "truncate", "malformed")
_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_DAY_S = 86400
_SERIALS = itertools.count(1)
"""Numbers every id a fake server hands out, so that no two servers in a process share one."""


@dataclass(frozen=True)
class Faults:
    """Probabilities (each in [0, 1], summing to at most 1) of each fault per request."""

    rate_limit: float = 0.0
    """429 with a Retry-After header of `retry_after_s`."""
    retry_after_s: float = 0.05
    server_error: float = 0.0
    """500."""
    overloaded: float = 0.0
    """529 from the Anthropic server, 503 from the others."""
    slow: float = 0.0
    """Answer only after `slow_s` seconds."""
    slow_s: float = 5.0
    drop: float = 0.0
    """Close the connection without sending a byte."""
    truncate: float = 0.0
    """Send the headers and half the body, then close the connection."""
    malformed: float = 0.0
    """200 with a body that is not JSON."""
    seed: int = 0

    @classmethod
    def mix(cls, rate: float, seed: int = 0, **overrides: Any) -> Faults:
        """`rate` spread evenly over every fault except `slow`."""
        share = rate / 6
        return cls(
            rate_limit=share,
            server_error=share,
            overloaded=share,
            drop=share,
            truncate=share,
            malformed=share,
            seed=seed,
            **overrides,
        )

    def pick(self, roll: float) -> str:
        for name in _OUTCOMES:
            probability = float(getattr(self, name))
            if roll < probability:
                return name
            roll -= probability
        return "ok"


@dataclass(frozen=True)
class BatchFaults:
    """Probabilities (each in [0, 1], summing to at most 1) of each fault per batch request.

    Drawn once per request, when its batch is created, from a generator seeded by `seed`,
    the batch and the request's custom_id: a batch's results never change between reads.
    """

    error: float = 0.0
    """The request's result is an error (500 server_error; Anthropic's api_error)."""
    expire: float = 0.0
    """The request is left unprocessed when its batch ends, so the batch ends as expired."""
    seed: int = 0

    def pick(self, batch: str, custom_id: str) -> str:
        """The outcome of one request of a batch: "ok", "error" or "expired"."""
        roll = random.Random(f"{self.seed}:{batch}:{custom_id}").random()
        if roll < self.error:
            return "error"
        if roll < self.error + self.expire:
            return "expired"
        return "ok"


class _Rejected(Exception):
    """A batch endpoint's refusal of a request: an error of `status` in the provider's shape."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body = body


class FakeServer:
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
        if kind not in ("openai", "anthropic", "google"):
            raise ValueError(f"unknown kind {kind!r}: openai, anthropic or google")
        self.kind: Kind = kind
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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.batch_delay_s = batch_delay_s
        """Seconds from a batch's creation until it has ended (read when a batch is read)."""
        self.batch_faults = batch_faults or BatchFaults()
        self.on_batch_create = on_batch_create
        """Called in the server's thread with a new batch's JSON, before it is answered."""
        self.batches: dict[str, dict[str, Any]] = {}
        """Every batch created, by id: its requests as sent (`requests`), each request's
        drawn outcome (`outcomes`), `created`, `cancelling_at` and `ended_at` (Unix times;
        `ended_at` is set by the first read after the end), and once ended, `results`
        (custom_id → succeeded, errored, expired or canceled) and the result `lines`."""
        self._files: dict[str, dict[str, Any]] = {}
        self._batch_serial = 0

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        root = f"http://127.0.0.1:{self.port}"
        return f"{root}/v1" if self.kind == "openai" else root

    def start(self) -> FakeServer:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._open())
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(_cancel_pending())  # handlers still asleep (slow answers)
            loop.close()

        self._thread = threading.Thread(target=serve, name=f"fake-{self.kind}", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        loop, runner = self._loop, self._runner
        if loop is None or runner is None:
            return
        asyncio.run_coroutine_threadsafe(self._close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(30)
        self._loop = self._runner = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _open(self) -> None:
        app = web.Application(client_max_size=1 << 30)
        for method, path, handler in self.routes():
            app.router.add_route(method, path, handler)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=1024)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

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
        """(method, path, handler) of every endpoint; extend to add endpoints (batches)."""
        if self.kind == "openai":
            return [
                ("POST", "/v1/chat/completions", self._endpoint(_openai_request, _openai_body)),
                ("GET", "/v1/models", self._models),
                *self._batch_routes(),
            ]
        if self.kind == "anthropic":
            return [
                ("POST", "/v1/messages", self._endpoint(_anthropic_request, _anthropic_body)),
                ("GET", "/v1/models", self._models),
                *self._batch_routes(),
            ]
        return [
            (
                "POST",
                "/{version}/models/{model}:generateContent",
                self._endpoint(_google_request, _google_body),
            ),
            ("GET", "/{version}/models", self._models),
        ]

    # -- request handling ------------------------------------------------------------------

    def _endpoint(
        self,
        parse: Callable[[dict[str, Any], web.Request], Request],
        render: Callable[[Request, Response], dict[str, Any]],
    ) -> Handler:
        async def handle(http: web.Request) -> web.StreamResponse:
            try:
                body = await http.json()
            except ValueError:
                return self._error(400, "request body is not JSON")
            refused = self._refuse(http)
            if refused is not None:
                return self._finish(http, body, "auth", refused)
            try:
                request = parse(body, http)
            except (KeyError, TypeError, ValueError) as exc:
                return self._finish(
                    http, body, "status_400", self._error(400, f"bad request: {exc}")
                )
            text = json.dumps(body)
            forced = _FORCED.search(text)
            if forced:
                status = int(forced.group(1))
                return self._finish(
                    http, body, f"status_{status}", self._error(status, f"forced {status}")
                )
            sized = _SIZED.search(text)
            if sized:
                data = _padded(request, render, int(sized.group(1)))
                return await self._send_sized(http, body, data, chunked=bool(sized.group(2)))
            with self._lock:
                outcome = self.faults.pick(self._random.random())
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            payload = (
                render(request, answer(request)) if outcome in ("ok", "slow", "truncate") else {}
            )
            return await self._deliver(http, body, outcome, payload)

        return handle

    async def _deliver(
        self, http: web.Request, body: Any, outcome: str, payload: dict[str, Any]
    ) -> web.StreamResponse:
        faults = self.faults
        if outcome == "rate_limit":
            response = self._error(429, "rate limit exceeded")
            response.headers["retry-after"] = f"{faults.retry_after_s:g}"
            return self._finish(http, body, outcome, response)
        if outcome == "server_error":
            return self._finish(http, body, outcome, self._error(500, "internal server error"))
        if outcome == "overloaded":
            status = 529 if self.kind == "anthropic" else 503
            return self._finish(http, body, outcome, self._error(status, "overloaded"))
        if outcome == "drop":
            self._note(http, body, outcome)
            if http.transport is not None:
                http.transport.abort()
            raise asyncio.CancelledError  # nothing more to send on a closed connection
        if outcome == "malformed":
            response = web.Response(
                status=200, body=b'{"id": "broken", "choices": [', content_type="application/json"
            )
            return self._finish(http, body, outcome, response)
        data = json.dumps(payload).encode()
        if outcome == "truncate":
            self._note(http, body, outcome)
            stream = web.StreamResponse(status=200, headers={"content-type": "application/json"})
            stream.content_length = len(data)
            await stream.prepare(http)
            await stream.write(data[: len(data) // 2])
            if http.transport is not None:
                http.transport.abort()
            raise asyncio.CancelledError
        self._note(http, body, outcome, payload)  # before a slow answer's wait: counts are prompt
        if outcome == "slow":
            await asyncio.sleep(faults.slow_s)
        return web.Response(body=data, content_type="application/json")

    async def _send_sized(
        self, http: web.Request, body: Any, data: bytes, *, chunked: bool
    ) -> web.StreamResponse:
        """A 200 of `data`, with its Content-Length, or chunked without one (a client then
        learns the size only by reading); a client that stops reading is no error."""
        self._note(http, body, "sized")
        if not chunked:
            return web.Response(body=data, content_type="application/json")
        stream = web.StreamResponse(status=200, headers={"content-type": "application/json"})
        stream.enable_chunked_encoding()
        try:
            await stream.prepare(http)
            for start in range(0, len(data), _CHUNK):
                await stream.write(data[start : start + _CHUNK])
            await stream.write_eof()
        except ConnectionError:
            pass
        return stream

    def _refuse(self, http: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        headers = http.headers
        given = {
            "openai": headers.get("authorization", "").removeprefix("Bearer "),
            # The SDK sends x-api-key, or since 2.x `Authorization: Bearer`.
            "anthropic": headers.get("x-api-key", "")
            or headers.get("authorization", "").removeprefix("Bearer "),
            "google": headers.get("x-goog-api-key", "") or http.query.get("key", ""),
        }[self.kind]
        if given == self.api_key:
            return None
        # Real services quote (part of) the key they refused; quoting all of it tests that
        # trialrun never stores or prints an error text as it came.
        return self._error(401, f"Incorrect API key provided: {given}")

    async def _models(self, http: web.Request) -> web.Response:
        refused = self._refuse(http)
        if refused is not None:
            return self._finish(http, None, "auth", refused)
        if self.kind == "openai":
            data: dict[str, Any] = {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "fake"}
                    for m in self.models
                ],
            }
        elif self.kind == "anthropic":
            data = {
                "data": [
                    {
                        "type": "model",
                        "id": m,
                        "display_name": m,
                        "created_at": "2025-01-01T00:00:00Z",
                    }
                    for m in self.models
                ],
                "has_more": False,
                "first_id": self.models[0],
                "last_id": self.models[-1],
            }
        else:
            data = {
                "models": [
                    {
                        "name": f"models/{m}",
                        "displayName": m,
                        "supportedGenerationMethods": ["generateContent"],
                    }
                    for m in self.models
                ]
            }
        return self._finish(http, None, "ok", web.json_response(data))

    def _note(
        self, http: web.Request, body: Any, outcome: str, response: dict[str, Any] | None = None
    ) -> None:
        with self._lock:
            self._counts[outcome] += 1
            if self.record:
                self.requests.append(
                    {
                        "path": http.path,
                        "body": body,
                        "headers": dict(http.headers),
                        "outcome": outcome,
                        "response": response,
                    }
                )

    def _finish(
        self, http: web.Request, body: Any, outcome: str, response: web.Response
    ) -> web.Response:
        self._note(http, body, outcome)
        return response

    def _error(self, status: int, message: str) -> web.Response:
        """An error body in the provider's own shape."""
        if self.kind == "anthropic":
            kind = _ANTHROPIC_ERRORS.get(status, "api_error")
            data: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
        elif self.kind == "google":
            state = {
                400: "INVALID_ARGUMENT",
                401: "UNAUTHENTICATED",
                403: "PERMISSION_DENIED",
                404: "NOT_FOUND",
                429: "RESOURCE_EXHAUSTED",
                503: "UNAVAILABLE",
            }.get(status, "INTERNAL")
            data = {"error": {"code": status, "message": message, "status": state}}
        else:
            data = {
                "error": {"message": message, "type": "fake_error", "param": None, "code": None}
            }
        return web.json_response(data, status=status)

    # -- batches ---------------------------------------------------------------------------

    def _batch_routes(self) -> list[tuple[str, str, Handler]]:
        guard = self._guarded
        if self.kind == "openai":
            return [
                ("POST", "/v1/files", guard(self._file_upload)),
                ("GET", "/v1/files/{file_id}", guard(self._file_get)),
                ("GET", "/v1/files/{file_id}/content", guard(self._file_content)),
                ("POST", "/v1/batches", guard(self._openai_batch_create)),
                ("GET", "/v1/batches", guard(self._batch_list)),
                ("GET", "/v1/batches/{batch_id}", guard(self._batch_get)),
                ("POST", "/v1/batches/{batch_id}/cancel", guard(self._batch_cancel)),
            ]
        return [
            ("POST", "/v1/messages/batches", guard(self._anthropic_batch_create)),
            ("GET", "/v1/messages/batches", guard(self._batch_list)),
            ("GET", "/v1/messages/batches/{batch_id}", guard(self._batch_get)),
            ("POST", "/v1/messages/batches/{batch_id}/cancel", guard(self._batch_cancel)),
            ("GET", "/v1/messages/batches/{batch_id}/results", guard(self._anthropic_results)),
        ]

    def _guarded(self, handle: Handler) -> Handler:
        """`handle` behind the API key check, its `_Rejected` answered as a provider error."""

        async def guarded(http: web.Request) -> web.StreamResponse:
            refused = self._refuse(http)
            if refused is not None:
                return self._finish(http, None, "auth", refused)
            try:
                return await handle(http)
            except _Rejected as exc:
                error = self._error(exc.status, exc.message)
                return self._finish(http, exc.body, f"status_{exc.status}", error)

        return guarded

    def _answer(self, http: web.Request, body: Any, data: dict[str, Any]) -> web.Response:
        """A batch endpoint's JSON answer, recorded."""
        self._note(http, body, "batch", data)
        return web.json_response(data)

    async def _file_upload(self, http: web.Request) -> web.StreamResponse:
        form = await http.post()
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, web.FileField) or not isinstance(purpose, str):
            raise _Rejected(400, "a multipart form with the fields `file` and `purpose` is needed")
        content = upload.file.read()
        with self._lock:
            file = self._add_file(upload.filename, purpose, content)
        sent = {
            "purpose": purpose,
            "filename": upload.filename,
            "content": content.decode(errors="replace"),
        }
        return self._answer(http, sent, file)

    def _add_file(self, filename: str, purpose: str, content: bytes) -> dict[str, Any]:
        """Store a file (with the lock held) and return its File object."""
        file_id = _new_id("file-")
        file: dict[str, Any] = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }
        self._files[file_id] = {"file": file, "content": content}
        return file

    def _stored_file(self, file_id: str) -> dict[str, Any]:
        with self._lock:
            stored = self._files.get(file_id)
        if stored is None:
            raise _Rejected(404, f"No such File object: {file_id}")
        return stored

    async def _file_get(self, http: web.Request) -> web.StreamResponse:
        return self._answer(http, None, self._stored_file(http.match_info["file_id"])["file"])

    async def _file_content(self, http: web.Request) -> web.StreamResponse:
        content = self._stored_file(http.match_info["file_id"])["content"]
        self._note(http, None, "batch")
        return web.Response(body=content, content_type="application/octet-stream")

    async def _openai_batch_create(self, http: web.Request) -> web.StreamResponse:
        body = await _json_object(http)
        endpoint, metadata = body.get("endpoint"), body.get("metadata")
        if endpoint != "/v1/chat/completions":
            raise _Rejected(400, f"endpoint {endpoint!r}: only /v1/chat/completions here", body)
        if body.get("completion_window") != "24h":
            raise _Rejected(400, "completion_window must be '24h'", body)
        if metadata is not None and not isinstance(metadata, dict):
            raise _Rejected(400, "metadata must be an object of strings", body)
        file_id = str(body.get("input_file_id"))
        with self._lock:
            stored = self._files.get(file_id)
        if stored is None:
            raise _Rejected(400, f"Invalid 'input_file_id': {file_id!r}: no such file", body)
        try:
            lines = _openai_batch_lines(stored["content"], endpoint)
        except _Rejected as exc:
            raise _Rejected(exc.status, exc.message, body) from None
        models = sorted({str(line["body"].get("model")) for line in lines})
        if len(models) > 1:
            raise _Rejected(400, f"a batch's requests must all use one model, not {models}", body)
        fields = {
            "input_file_id": file_id,
            "endpoint": endpoint,
            "metadata": metadata,
            "model": models[0],
            "output_file_id": None,
            "error_file_id": None,
        }
        return self._created(http, body, self._create_batch("batch_", lines, fields))

    async def _anthropic_batch_create(self, http: web.Request) -> web.StreamResponse:
        body = await _json_object(http)
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise _Rejected(400, "requests: a non-empty list is required", body)
        for number, item in enumerate(requests):
            custom_id = item.get("custom_id") if isinstance(item, dict) else None
            if not isinstance(custom_id, str) or not _CUSTOM_ID.fullmatch(custom_id):
                message = f"requests.{number}.custom_id: should match ^[a-zA-Z0-9_-]{{1,64}}$"
                raise _Rejected(400, message, body)
            if not isinstance(item.get("params"), dict):
                raise _Rejected(400, f"requests.{number}.params: an object is required", body)
        try:
            _unique([item["custom_id"] for item in requests])
        except _Rejected as exc:
            raise _Rejected(exc.status, exc.message, body) from None
        return self._created(http, body, self._create_batch("msgbatch_", requests, {}))

    def _create_batch(
        self, prefix: str, requests: list[dict[str, Any]], fields: dict[str, Any]
    ) -> dict[str, Any]:
        """Store a new batch of `requests`, each with its outcome drawn; its JSON as created."""
        with self._lock:
            self._batch_serial += 1
            faults, serial = self.batch_faults, self._batch_serial
            record: dict[str, Any] = {
                "id": _new_id(prefix),
                "created": time.time(),
                "requests": requests,
                "outcomes": {
                    item["custom_id"]: faults.pick(str(serial), item["custom_id"])
                    for item in requests
                },
                "cancelling_at": None,
                "ended_at": None,
                "read_at": None,
                "results": None,
                "lines": None,
                **fields,
            }
            self.batches[record["id"]] = record
            return self._batch_json(record, fresh=True)

    def _created(self, http: web.Request, body: Any, data: dict[str, Any]) -> web.Response:
        self._note(http, body, "batch_create", data)
        if self.on_batch_create is not None:
            self.on_batch_create(data)
        return web.json_response(data)

    def _read(self, batch_id: str) -> dict[str, Any]:
        """The stored batch `batch_id`, brought up to date (with the lock held)."""
        record = self.batches.get(batch_id)
        if record is None:
            raise _Rejected(404, f"No batch found with id '{batch_id}'.")
        self._settle(record)
        return record

    async def _batch_get(self, http: web.Request) -> web.StreamResponse:
        with self._lock:
            data = self._batch_json(self._read(http.match_info["batch_id"]))
        return self._answer(http, None, data)

    async def _batch_list(self, http: web.Request) -> web.StreamResponse:
        query = http.query
        limit = _limit(query.get("limit"), most=100 if self.kind == "openai" else 1000)
        with self._lock:
            ids = list(reversed(self.batches))  # newest first
        if self.kind == "openai":
            start, stop = _page_after(ids, query.get("after"), limit)
        elif "before_id" in query:
            stop = _index(ids, query["before_id"])
            start = max(0, stop - limit)
        else:
            start, stop = _page_after(ids, query.get("after_id"), limit)
        with self._lock:
            page = [self._batch_json(self._read(batch_id)) for batch_id in ids[start:stop]]
        data: dict[str, Any] = {
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": start > 0 if "before_id" in query else stop < len(ids),
        }
        if self.kind == "openai":
            data = {"object": "list", **data}
        return self._answer(http, None, data)

    async def _batch_cancel(self, http: web.Request) -> web.StreamResponse:
        with self._lock:
            record = self._read(http.match_info["batch_id"])
            ended = record["ended_at"] is not None
            if ended and self.kind == "openai" and record["status"] != "cancelled":
                status = record["status"]
                raise _Rejected(409, f"Cannot cancel a batch with status '{status}'.")
            if not ended and record["cancelling_at"] is None:
                record["cancelling_at"] = time.time()
            data = self._batch_json(record)
        return self._answer(http, None, data)

    async def _anthropic_results(self, http: web.Request) -> web.StreamResponse:
        batch_id = http.match_info["batch_id"]
        with self._lock:
            lines = self._read(batch_id)["lines"]
        if lines is None:
            raise _Rejected(404, f"Results of message batch {batch_id} are not ready: not ended.")
        self._note(http, None, "batch")
        content = "".join(json.dumps(line) + "\n" for line in lines).encode()
        return web.Response(body=content, content_type="application/binary")

    def _settle(self, record: dict[str, Any]) -> None:
        """End a batch (with the lock held) if it was cancelled or its delay has passed."""
        if record["ended_at"] is not None:
            return
        now = time.time()
        if record["cancelling_at"] is not None:
            self._end(record, now, canceled=True)
        elif now - record["created"] >= self.batch_delay_s:
            at = max(record["created"] + self.batch_delay_s, record["read_at"] or 0.0)
            self._end(record, at, canceled=False)
        else:
            record["read_at"] = now

    def _end(self, record: dict[str, Any], at: float, *, canceled: bool) -> None:
        """Answer every request of a batch (with the lock held) and mark the batch ended."""
        results: dict[str, str] = {}
        lines: list[dict[str, Any]] = []
        for item in record["requests"]:
            custom_id = item["custom_id"]
            outcome = "canceled" if canceled else record["outcomes"][custom_id]
            if self.kind == "openai":
                result, status, body = _batch_answer(self.kind, item["body"], outcome)
                line = _openai_batch_line(record["id"], custom_id, result, status, body)
            else:
                result, status, body = _batch_answer(self.kind, item["params"], outcome)
                line = _anthropic_batch_line(custom_id, result, status, body)
            results[custom_id] = result
            if line is not None:
                lines.append(line)
        record.update(ended_at=at, results=results, lines=lines)
        if self.kind == "openai":
            self._openai_batch_files(record)

    def _openai_batch_files(self, record: dict[str, Any]) -> None:
        """The ended batch's output and error files, and its final status."""
        answered = [line for line in record["lines"] if _line_ok(line)]
        failed = [line for line in record["lines"] if not _line_ok(line)]
        for key, lines, name in (
            ("output_file_id", answered, "output"),
            ("error_file_id", failed, "error"),
        ):
            if lines:
                content = "".join(json.dumps(line) + "\n" for line in lines).encode()
                filename = f"{record['id']}_{name}.jsonl"
                record[key] = self._add_file(filename, "batch_output", content)["id"]
        results = record["results"].values()
        record["status"] = (
            "cancelled"
            if record["cancelling_at"] is not None
            else "expired"
            if "expired" in results
            else "completed"
        )

    def _batch_json(self, record: dict[str, Any], *, fresh: bool = False) -> dict[str, Any]:
        """The batch as its provider shows it; `fresh`: as just created."""
        if self.kind == "openai":
            return _openai_batch_json(record, fresh=fresh)
        results_url = f"http://127.0.0.1:{self.port}/v1/messages/batches/{record['id']}/results"
        return _anthropic_batch_json(record, results_url)


async def _cancel_pending() -> None:
    current = asyncio.current_task()
    pending = [task for task in asyncio.all_tasks() if task is not current]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


# -- wire formats ----------------------------------------------------------------------------


def _text(content: Any) -> str:
    """A message's text whether given as a string or as a list of content blocks."""
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content if isinstance(block, dict))


def _padded(
    request: Request, render: Callable[[Request, Response], dict[str, Any]], size: int
) -> bytes:
    """The answer's body, its text padded so that the whole is at least `size` bytes."""
    response = answer(request)
    short = len(json.dumps(render(request, response)))
    padding = " " + "x" * max(size - short, 0)
    return json.dumps(render(request, replace(response, text=response.text + padding))).encode()


def _openai_request(body: dict[str, Any], http: web.Request | None = None) -> Request:
    params: dict[str, Any] = {
        key: body[key]
        for key in ("temperature", "seed", "top_logprobs", "logprobs", "max_tokens")
        if key in body
    }
    if "max_completion_tokens" in body:
        params["max_tokens"] = body["max_completion_tokens"]
    messages = [{"role": m["role"], "content": _text(m["content"])} for m in body["messages"]]
    return Request(model=str(body["model"]), messages=messages, params=params)


def _openai_body(request: Request, response: Response) -> dict[str, Any]:
    logprobs = None
    if response.logprobs is not None:
        logprobs = {
            "content": [
                {
                    "token": entry["token"],
                    "logprob": entry["logprob"],
                    "bytes": list(entry["token"].encode()),
                    "top_logprobs": [
                        {"token": t["token"], "logprob": t["logprob"], "bytes": None}
                        for t in entry["top"]
                    ],
                }
                for entry in response.logprobs
            ]
        }
    return {
        "id": f"chatcmpl-{response.request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": response.text},
                "logprobs": logprobs,
                "finish_reason": response.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": response.usage.input,
            "completion_tokens": response.usage.output,
            "total_tokens": response.usage.total,
        },
    }


def _anthropic_request(body: dict[str, Any], http: web.Request | None = None) -> Request:
    messages = [{"role": m["role"], "content": _text(m["content"])} for m in body["messages"]]
    if body.get("system"):
        messages.insert(0, {"role": "system", "content": _text(body["system"])})
    params: dict[str, Any] = {
        key: body[key] for key in ("temperature", "max_tokens") if key in body
    }
    return Request(model=str(body["model"]), messages=messages, params=params)


def _anthropic_body(request: Request, response: Response) -> dict[str, Any]:
    return {
        "id": f"msg_{response.request_id}",
        "type": "message",
        "role": "assistant",
        "model": request.model,
        "content": [{"type": "text", "text": response.text}],
        "stop_reason": "max_tokens" if response.finish_reason == "length" else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": response.usage.input, "output_tokens": response.usage.output},
    }


def _camel(config: dict[str, Any], snake: str) -> Any:
    head, *rest = snake.split("_")
    camel = head + "".join(part.title() for part in rest)
    return config.get(camel, config.get(snake))


def _google_request(body: dict[str, Any], http: web.Request) -> Request:
    messages = [
        {
            "role": "assistant" if turn.get("role") == "model" else "user",
            "content": _text(turn.get("parts", [])),
        }
        for turn in body["contents"]
    ]
    system = _camel(body, "system_instruction")
    if system:
        messages.insert(0, {"role": "system", "content": _text(system.get("parts", []))})
    config = _camel(body, "generation_config") or {}
    params: dict[str, Any] = {}
    for ours, theirs in (
        ("temperature", "temperature"),
        ("seed", "seed"),
        ("max_tokens", "max_output_tokens"),
    ):
        value = _camel(config, theirs)
        if value is not None:
            params[ours] = value
    if _camel(config, "response_logprobs"):
        params["top_logprobs"] = int(_camel(config, "logprobs") or 1)
    model = http.match_info["model"]
    return Request(model=model, messages=messages, params=params)


def _google_body(request: Request, response: Response) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "content": {"role": "model", "parts": [{"text": response.text}]},
        "finishReason": "MAX_TOKENS" if response.finish_reason == "length" else "STOP",
        "index": 0,
    }
    if response.logprobs is not None:
        candidate["logprobsResult"] = {
            "chosenCandidates": [
                {"token": e["token"], "logProbability": e["logprob"]} for e in response.logprobs
            ],
            "topCandidates": [
                {
                    "candidates": [
                        {"token": t["token"], "logProbability": t["logprob"]} for t in e["top"]
                    ]
                }
                for e in response.logprobs
            ],
        }
    return {
        "candidates": [candidate],
        "usageMetadata": {
            "promptTokenCount": response.usage.input,
            "candidatesTokenCount": response.usage.output,
            "totalTokenCount": response.usage.total,
        },
        "modelVersion": request.model,
        "responseId": str(response.request_id),
    }


# -- batch wire formats ----------------------------------------------------------------------


def _new_id(prefix: str) -> str:
    """A new id, unique in the process and the same from run to run."""
    return prefix + hashlib.sha256(f"{prefix}{next(_SERIALS)}".encode()).hexdigest()[:24]


def _rfc3339(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, tz=UTC).isoformat().replace("+00:00", "Z")


def _stamp(moment: float | None) -> int | None:
    return None if moment is None else int(moment)


async def _json_object(http: web.Request) -> dict[str, Any]:
    try:
        body = await http.json()
    except ValueError:
        raise _Rejected(400, "request body is not JSON") from None
    if not isinstance(body, dict):
        raise _Rejected(400, "request body is not a JSON object", body)
    return body


def _unique(custom_ids: list[str]) -> None:
    repeated = sorted(name for name, n in Counter(custom_ids).items() if n > 1)
    if repeated:
        raise _Rejected(400, f"custom_id must be unique within a batch; repeated: {repeated}")


def _openai_batch_lines(content: bytes, endpoint: str) -> list[dict[str, Any]]:
    """The requests of an OpenAI batch input file (JSONL), checked as the API checks them."""
    lines: list[dict[str, Any]] = []
    for number, text in enumerate(content.decode(errors="replace").splitlines(), 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except ValueError:
            raise _Rejected(400, f"line {number} of the input file is not JSON") from None
        if not (
            isinstance(line, dict)
            and isinstance(line.get("custom_id"), str)
            and isinstance(line.get("body"), dict)
        ):
            raise _Rejected(400, f"line {number}: a custom_id string and a body object are needed")
        if line.get("method") != "POST" or line.get("url") != endpoint:
            raise _Rejected(400, f"line {number}: method must be POST and url {endpoint}")
        lines.append(line)
    if not lines:
        raise _Rejected(400, "the input file holds no requests")
    _unique([line["custom_id"] for line in lines])
    return lines


def _limit(text: str | None, *, most: int) -> int:
    if text is None:
        return 20
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= most:
        raise _Rejected(400, f"limit must be an integer from 1 to {most}")
    return limit


def _index(ids: list[str], cursor: str) -> int:
    try:
        return ids.index(cursor)
    except ValueError:
        raise _Rejected(400, f"no batch with the cursor's id {cursor!r}") from None


def _page_after(ids: list[str], cursor: str | None, limit: int) -> tuple[int, int]:
    """(start, stop) of the page of `limit` ids after `cursor` (from the first when None)."""
    start = 0 if cursor is None else _index(ids, cursor) + 1
    return start, min(start + limit, len(ids))


def _batch_answer(kind: Kind, params: dict[str, Any], outcome: str) -> tuple[str, int, Any]:
    """What one request of a batch came to: (result type, HTTP status, answer or error text).

    The result type is Anthropic's: succeeded, errored, expired or canceled.
    """
    if outcome in ("expired", "canceled"):
        return outcome, 0, None
    if outcome == "error":
        return "errored", 500, "The server had an error while processing your request."
    forced = _FORCED.search(json.dumps(params))
    if forced and int(forced.group(1)) >= 400:
        status = int(forced.group(1))
        return "errored", status, f"forced {status}"
    parse, render = (
        (_openai_request, _openai_body)
        if kind == "openai"
        else (_anthropic_request, _anthropic_body)
    )
    try:
        request = parse(params)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        return "errored", 400, f"bad request: {exc}"
    return "succeeded", 200, render(request, answer(request))


def _openai_batch_line(
    batch_id: str, custom_id: str, result: str, status: int, answered: Any
) -> dict[str, Any] | None:
    """A line of an OpenAI batch's output or error file; None for a request never run."""
    if result == "canceled":
        return None
    digest = hashlib.sha256(f"{batch_id}:{custom_id}".encode()).hexdigest()[:24]
    line: dict[str, Any] = {"id": f"batch_req_{digest}", "custom_id": custom_id}
    if result == "expired":
        message = "This request could not be executed before the completion window expired."
        return {**line, "response": None, "error": {"code": "batch_expired", "message": message}}
    if result == "errored":
        kind = "server_error" if status >= 500 else "invalid_request_error"
        answered = {"error": {"message": answered, "type": kind, "param": None, "code": None}}
    response = {"status_code": status, "request_id": f"req_{digest}", "body": answered}
    return {**line, "response": response, "error": None}


def _line_ok(line: dict[str, Any]) -> bool:
    """Whether a line of an OpenAI batch belongs in its output file (else: error file)."""
    return line["response"] is not None and line["response"]["status_code"] == 200


def _anthropic_batch_line(
    custom_id: str, result: str, status: int, answered: Any
) -> dict[str, Any]:
    """A line of an Anthropic message batch's results."""
    body: dict[str, Any] = {"type": result}
    if result == "succeeded":
        body["message"] = answered
    elif result == "errored":
        error = {"type": _ANTHROPIC_ERRORS.get(status, "api_error"), "message": answered}
        body["error"] = {"type": "error", "error": error}
    return {"custom_id": custom_id, "result": body}


def _openai_batch_json(record: dict[str, Any], *, fresh: bool) -> dict[str, Any]:
    """An OpenAI Batch object; `fresh`: as just created, still validating."""
    created, ended = record["created"], record["ended_at"]
    tally = Counter((record["results"] or {}).values())
    if ended is not None:
        status = record["status"]
    elif fresh:
        status = "validating"
    else:
        status = "cancelling" if record["cancelling_at"] is not None else "in_progress"
    return {
        "id": record["id"],
        "object": "batch",
        "endpoint": record["endpoint"],
        "model": record["model"],
        "errors": None,
        "input_file_id": record["input_file_id"],
        "completion_window": "24h",
        "status": status,
        "output_file_id": record["output_file_id"],
        "error_file_id": record["error_file_id"],
        "created_at": int(created),
        "in_progress_at": None if fresh else int(created),
        "expires_at": int(created) + _DAY_S,
        "finalizing_at": None,
        "completed_at": _stamp(ended) if status == "completed" else None,
        "failed_at": None,
        "expired_at": _stamp(ended) if status == "expired" else None,
        "cancelling_at": _stamp(record["cancelling_at"]),
        "cancelled_at": _stamp(ended) if status == "cancelled" else None,
        "request_counts": {
            "total": len(record["requests"]),
            "completed": tally["succeeded"],
            "failed": tally["errored"] + tally["expired"],
        },
        "metadata": record["metadata"],
    }


def _anthropic_batch_json(record: dict[str, Any], results_url: str) -> dict[str, Any]:
    """An Anthropic MessageBatch object."""
    created, ended = record["created"], record["ended_at"]
    tally = Counter((record["results"] or {}).values())
    if ended is not None:
        status = "ended"
    else:
        status = "canceling" if record["cancelling_at"] is not None else "in_progress"
    return {
        "id": record["id"],
        "type": "message_batch",
        "processing_status": status,
        "request_counts": {
            "processing": len(record["requests"]) - sum(tally.values()),
            "succeeded": tally["succeeded"],
            "errored": tally["errored"],
            "canceled": tally["canceled"],
            "expired": tally["expired"],
        },
        "ended_at": _rfc3339(ended),
        "created_at": _rfc3339(created),
        "expires_at": _rfc3339(created + _DAY_S),
        "archived_at": None,
        "cancel_initiated_at": _rfc3339(record["cancelling_at"]),
        "results_url": results_url if ended is not None else None,
    }


# -- as a process, for benchmarks ------------------------------------------------------------


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
