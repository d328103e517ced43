"""Local HTTP servers that speak the OpenAI, Anthropic and Gemini wire formats, with faults.

A `FakeServer` listens on 127.0.0.1 on a free port, in a thread of its own (or, for
benchmarks, as its own process: `python -m trialrun.testing --help`). The
official SDKs talk to it as to the real service; its answers come from the mock
provider's `answer`, so they are deterministic and differ by model, prompt and params.

Faults are drawn per request from a seeded generator: 429 with Retry-After, 500,
overloaded (Anthropic's 529, 503 elsewhere), a slow answer (past a client's timeout),
a connection dropped before any byte, a body cut off mid-way, and a 200 whose body is
not JSON. A prompt containing `[[status:NNN]]` always gets that HTTP status, for tests
of final errors (400, 404) and authentication (401).

    with FakeServer("openai", faults=Faults(rate_limit=0.1)) as server:
        client = openai.OpenAI(base_url=server.url, api_key="x")
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from aiohttp import web

from trialrun.providers.mock import answer
from trialrun.types import Request, Response

Kind = Literal["openai", "anthropic", "google"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_FORCED = re.compile(r"\[\[status:(\d{3})\]\]")
_OUTCOMES = ("rate_limit", "server_error", "overloaded", "slow", "drop", "truncate", "malformed")


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

    def counts(self) -> Counter[str]:
        """Requests by outcome: ok, rate_limit, server_error, ..., status_NNN, auth."""
        with self._lock:
            return Counter(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self.requests.clear()

    def routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path, handler) of every endpoint; extend to add endpoints (batches)."""
        if self.kind == "openai":
            return [
                ("POST", "/v1/chat/completions", self._endpoint(_openai_request, _openai_body)),
                ("GET", "/v1/models", self._models),
            ]
        if self.kind == "anthropic":
            return [
                ("POST", "/v1/messages", self._endpoint(_anthropic_request, _anthropic_body)),
                ("GET", "/v1/models", self._models),
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
            forced = _FORCED.search(json.dumps(body))
            if forced:
                status = int(forced.group(1))
                return self._finish(
                    http, body, f"status_{status}", self._error(status, f"forced {status}")
                )
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
            kind = {
                400: "invalid_request_error",
                401: "authentication_error",
                403: "permission_error",
                404: "not_found_error",
                429: "rate_limit_error",
                529: "overloaded_error",
            }.get(status, "api_error")
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


# -- wire formats ----------------------------------------------------------------------------


def _text(content: Any) -> str:
    """A message's text whether given as a string or as a list of content blocks."""
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content if isinstance(block, dict))


def _openai_request(body: dict[str, Any], http: web.Request) -> Request:
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


def _anthropic_request(body: dict[str, Any], http: web.Request) -> Request:
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
