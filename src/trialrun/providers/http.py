"""HTTP helpers the adapters share: which errors are the transport's, what an HTTP status
means to the executor, Retry-After, a JSON POST read within the body limit, and connection
failures named (refused, unknown host) where the SDKs' own messages hide them."""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from trialrun.errors import ErrorKind, ProviderError
from trialrun.types import Response

MB = 1024 * 1024
DEFAULT_MAX_RESPONSE_BYTES = 32 * MB
"""`limits.<provider>.max_response_mb`'s default: far above any chat answer, far below a
body that would crowd out the rest of the run's memory."""


@dataclass(frozen=True, slots=True)
class BodyLimit:
    """The most bytes one response body may have: a body past it fails its attempt, finally
    (the same request would get the same body), before it is held whole."""

    provider: str
    max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES

    def exceeded(self, detail: str) -> ProviderError:
        """The error for a body over the limit; `detail` says how far over (as far as known)."""
        return ProviderError(
            f"response body over limits.{self.provider}.max_response_mb "
            f"({self.max_bytes / MB:g} MB): {detail}",
            kind="final",
        )

    def check(self, size: int, what: str) -> None:
        """Raise `exceeded` if `size` bytes (described by `what`) are over the limit."""
        if size > self.max_bytes:
            raise self.exceeded(f"{what} {size} bytes")


# Transport errors of the HTTP clients the SDKs run on (dropped connections, bodies cut off,
# resets): the request may not have been answered, so it is retried.
_TRANSPORT_ERRORS = (
    ("aiohttp", "ClientError"),
    ("httpx", "TransportError"),
    ("httpx2", "TransportError"),
)


def is_transport_error(exc: BaseException) -> bool:
    for module_name, class_name in _TRANSPORT_ERRORS:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        if isinstance(cls, type) and isinstance(exc, cls):
            return True
    return False


def kind_of_status(status: int) -> ErrorKind:
    """How the executor treats an HTTP status: auth stops the provider, retryable waits."""
    if status in (401, 403):
        return "auth"
    if status in (408, 409, 425, 429) or status >= 500:
        return "retryable"
    return "final"


def retry_after_s(headers: Any) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date), if present."""
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return _seconds_until(value)


def _seconds_until(http_date: str) -> float | None:
    import email.utils
    import time

    try:
        when = email.utils.parsedate_to_datetime(http_date)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


async def post_json(
    client: Any,
    path: str,
    body: dict[str, Any],
    raw_response: type,
    parse: Callable[[Any], Response],
    what: str,
    limit: BodyLimit,
) -> Response:
    """POST `body` through an OpenAI- or Anthropic-style SDK's documented low-level
    `client.post` and parse the JSON answer with `parse`.

    Auth, base URL, headers, timeouts, transport and error classes are the SDK's, as in
    its typed methods; skipped are the typed layer's request transform and response
    models, which cost more CPU per request than the rest of trialrun together
    (measured; bench/RESULTS.md). `raw_response` is `raw_response_class(sdk)`: with
    `stream=True` the SDK hands back that response unread, so the body is read here within
    `limit`. A refused connection or an unknown host says so (the SDK's aiohttp transport
    calls both a timeout). A body that is not JSON, or JSON without the fields `parse`
    reads, is retryable."""
    with connection_failures_named():
        raw = await client.post(path, body=body, cast_to=raw_response, stream=True)
    content = await read_within(raw, limit)
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise ProviderError(f"the response body is not JSON ({exc})", kind="retryable") from None
    try:
        return parse(data)
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise ProviderError(
            f"malformed {what} ({type(exc).__name__}: {exc})", kind="retryable"
        ) from None


async def read_within(raw: Any, limit: BodyLimit) -> bytes:
    """The body of an unread httpx-style response, read chunk by chunk and given up as soon
    as it passes `limit` (or at once if its Content-Length does): a huge body is never
    held whole. The response is closed either way."""
    try:
        declared = raw.headers.get("content-length", "")
        if declared.isdigit():
            limit.check(int(declared), "Content-Length is")
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in raw.aiter_bytes():
                size += len(chunk)
                if size > limit.max_bytes:
                    raise limit.exceeded(f"got more than {limit.max_bytes} bytes")
                chunks.append(chunk)
        except Exception as exc:
            if not is_transport_error(exc):
                raise
            expected = f" of {declared}" if declared.isdigit() else ""
            raise ProviderError(
                f"the connection closed mid-body (received {size}{expected} bytes)",
                kind="retryable",
            ) from None
        return b"".join(chunks)
    finally:
        await raw.aclose()


@contextlib.contextmanager
def connection_failures_named() -> Iterator[None]:
    """Turn an SDK error whose causes hold a refused connection or an unresolvable host
    into a retryable ProviderError that says which; let every other error through.

    The SDKs' aiohttp transport reports both as "Request timed out." (its error map makes
    every connector error a ConnectTimeout), httpx as "Connection error.", google-genai
    with aiohttp's own text; the cause chain still holds the socket's own error."""
    try:
        yield
    except Exception as exc:
        failure = connection_failure(exc)
        if failure is None:
            raise
        raise ProviderError(failure, kind="retryable") from exc


def connection_failure(exc: BaseException) -> str | None:
    """What failed, as `connection refused by HOST:PORT` or `cannot resolve host HOST`; else
    None (any other failure keeps the SDK's own message)."""
    chain = _causes(exc)
    host, port = _address(chain)
    if host is None:
        return None
    if any(isinstance(cause, socket.gaierror) for cause in chain):
        return f"cannot resolve host {host}"
    if any(isinstance(cause, ConnectionRefusedError) for cause in chain):
        return f"connection refused by {host}:{port}" if port else f"connection refused by {host}"
    return None


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and what it was raised from or during, outermost first (cycles cut)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _address(chain: list[BaseException]) -> tuple[str | None, int | None]:
    """(host, port) the failed connection was for: from aiohttp's connector error, else
    from the request an SDK or httpx error carries."""
    for cause in chain:
        host = getattr(cause, "host", None)
        if hasattr(cause, "os_error") and isinstance(host, str):  # aiohttp's connector error
            return host, getattr(cause, "port", None)
    for cause in chain:
        try:
            url = cause.request.url  # type: ignore[attr-defined]
        except (AttributeError, RuntimeError):  # httpx raises RuntimeError when it has none
            continue
        default = {"http": 80, "https": 443}.get(str(url.scheme))
        return str(url.host), url.port or default
    return None, None
