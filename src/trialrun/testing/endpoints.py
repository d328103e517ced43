"""The request path every fake server shares: the key check, forced statuses and sizes,
the fault drawn for each request and its delivery, and the record of what came in."""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web

from trialrun.providers.mock import answer
from trialrun.testing.faults import FORCED, SIZED, Faults
from trialrun.testing.lifecycle import Handler, ThreadedServer
from trialrun.testing.wire import Kind, Wire, padded
from trialrun.types import Request, Response

CHUNK = 64 * 1024


class Endpoints(ThreadedServer):
    """The answering endpoint and the model list of one wire format, with faults."""

    kind: Kind
    wire: Wire
    faults: Faults
    latency_s: float
    api_key: str | None
    models: tuple[str, ...]
    record: bool
    requests: list[dict[str, Any]]
    _counts: Counter[str]
    _lock: threading.Lock
    _random: random.Random

    def _generate_routes(self) -> list[tuple[str, str, Handler]]:
        """The answering endpoint and the model list, in this server's wire format."""
        answering, listing = self.wire.generate
        return [
            ("POST", answering, self._endpoint(self.wire.parse, self.wire.render)),
            ("GET", listing, self._models),
        ]

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
            forced = FORCED.search(text)
            if forced:
                status = int(forced.group(1))
                return self._finish(
                    http, body, f"status_{status}", self._error(status, f"forced {status}")
                )
            sized = SIZED.search(text)
            if sized:
                data = padded(request, render, int(sized.group(1)))
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
            return self._finish(
                http, body, outcome, self._error(self.wire.overloaded, "overloaded")
            )
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
            for start in range(0, len(data), CHUNK):
                await stream.write(data[start : start + CHUNK])
            await stream.write_eof()
        except ConnectionError:
            pass
        return stream

    def _refuse(self, http: web.Request) -> web.Response | None:
        """A 401 if the server wants a key and the request's is another; else None."""
        if self.api_key is None:
            return None
        given = self.wire.given_key(http)
        if given == self.api_key:
            return None
        # Real services quote (part of) the key they refused; quoting all of it tests that
        # trialrun never stores or prints an error text as it came.
        return self._error(401, f"Incorrect API key provided: {given}")

    async def _models(self, http: web.Request) -> web.Response:
        refused = self._refuse(http)
        if refused is not None:
            return self._finish(http, None, "auth", refused)
        return self._finish(http, None, "ok", web.json_response(self.wire.models(self.models)))

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
        return web.json_response(self.wire.error(status, message), status=status)
