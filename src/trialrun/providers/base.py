"""The provider interface and its registry.

A provider implements one async method, `generate(request) -> Response`; the rest
have defaults an adapter may override. Providers register by name with
`@provider("name")` on a factory that imports its SDK only when used, or from a
third-party package through the `trialrun.providers` entry-point group.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, ClassVar

import orjson

from trialrun.errors import ConfigError, ErrorKind, ProviderError
from trialrun.types import Request, Response

ENTRY_POINT_GROUP = "trialrun.providers"
MB = 1024 * 1024
DEFAULT_MAX_RESPONSE_BYTES = 32 * MB
"""`limits.<provider>.max_response_mb`'s default: far above any chat answer, far below a
body that would crowd out the rest of the run's memory."""


@dataclass(slots=True)
class BatchStatus:
    """A provider batch as last polled, in neutral terms."""

    ended: bool
    """Processing is over (completed, expired, cancelled or failed): its results can be read."""
    raw: str
    """The provider's own state word (`in_progress`, `completed`, `ended`, ...)."""
    counts: dict[str, int] = field(default_factory=dict)
    note: str | None = None
    """Why it ended early (expired, cancelled, failed), for the run's events and `status`."""
    failed: bool = False
    """The whole batch failed (validation, quota) and nothing in it ran."""


@dataclass(slots=True)
class BatchOutcome:
    """One request's result in a finished batch."""

    custom_id: str
    response: Response | None = None
    error: str | None = None
    kind: ErrorKind = "retryable"
    unprocessed: bool = False
    """Expired or cancelled before it ran: resubmitted without counting an attempt."""


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


class Provider:
    """Base class for model providers."""

    name: ClassVar[str] = ""
    env_keys: ClassVar[tuple[str, ...]] = ()
    """Environment variables the SDK reads its API key from (any one is enough); empty if none."""

    def __init__(
        self, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES, **settings: Any
    ) -> None:
        self.settings = settings
        self.body_limit = BodyLimit(self.name or type(self).__name__, max_response_bytes)

    async def generate(self, request: Request) -> Response:
        raise NotImplementedError

    def classify_error(self, exc: BaseException) -> tuple[ErrorKind, float | None]:
        """(kind, retry_after_s) for an exception raised by `generate`."""
        if isinstance(exc, ProviderError):
            return exc.kind, exc.retry_after
        if isinstance(exc, asyncio.TimeoutError | TimeoutError | ConnectionError):
            return "retryable", None
        if is_transport_error(exc):
            return "retryable", None
        return "final", None

    def max_concurrency(self) -> int:
        return 64

    def unsent_params(self, names: Iterable[str]) -> list[str]:
        """Which of these sampling params this provider cannot send: they are left out of its
        requests and of the records' `params`, and the run warns once."""
        return []

    def params_note(self) -> str:
        """One clause on why params are left out, or how to send them, for that warning."""
        return ""

    def count_tokens(self, text: str) -> int | None:
        """Exact token count of `text` when a cheap offline tokenizer is at hand, else None."""
        return None

    async def ping(self) -> str:
        """Check the endpoint answers with these credentials; return a short note, or raise."""
        return "no check"

    async def aclose(self) -> None:
        return None

    # -- batch APIs (mode: batch); a provider without one keeps `batch_limits = None` --------

    batch_limits: ClassVar[tuple[int, int] | None] = None
    """(requests, bytes) one batch may hold at most, from the provider's documentation."""

    def batch_entry(self, custom_id: str, request: Request) -> dict[str, Any]:
        """One request as the provider's batch input takes it."""
        raise NotImplementedError

    def batch_group(self, request: Request) -> str:
        """Requests of different groups never share a batch (OpenAI: one model per file)."""
        return ""

    async def submit_batch(
        self, entries: Iterable[dict[str, Any]], metadata: dict[str, str]
    ) -> str:
        """Create a batch of `batch_entry` dicts; return the provider's batch id. The entries
        are built as they are read: iterate once, and hold them only if the API needs to."""
        raise NotImplementedError

    async def find_batch(
        self, metadata: dict[str, str], requests: int, created_after: float, known: set[str]
    ) -> str | None:
        """The id of a batch this run submitted but never recorded (a crash right after the
        provider accepted it), or None if the provider has none."""
        raise NotImplementedError

    async def poll_batch(self, batch_id: str) -> BatchStatus:
        raise NotImplementedError

    async def batch_results(self, batch_id: str) -> list[BatchOutcome]:
        """Outcomes of an ended batch; requests it does not mention are resubmitted."""
        raise NotImplementedError

    async def cancel_batch(self, batch_id: str) -> None:
        raise NotImplementedError


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


def sdk_http_client(sdk: Any, transport: str) -> Any | None:
    """An SDK's aiohttp transport when asked for and installed; None keeps its default (httpx)."""
    if transport != "aiohttp" or not hasattr(sdk, "DefaultAioHttpClient"):
        return None
    try:
        return sdk.DefaultAioHttpClient()
    except (ImportError, RuntimeError):  # the SDK's aiohttp extra is not installed
        return None


def raw_response_class(sdk: Any) -> type:
    """The `Response` class of the HTTP library an SDK is built on (httpx2, or httpx)."""
    module = vars(sdk._base_client)
    response: type = (module.get("httpx2") or module["httpx"]).Response
    return response


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


def classify_sdk_error(sdk: Any, exc: BaseException) -> tuple[ErrorKind, float | None] | None:
    """Errors of the OpenAI and Anthropic SDKs (same generator, same classes); None if neither."""
    if isinstance(exc, sdk.APIStatusError):
        return kind_of_status(exc.status_code), retry_after_s(exc.response.headers)
    if isinstance(exc, sdk.APIConnectionError | sdk.APIResponseValidationError | ValueError):
        return "retryable", None  # timeouts, resets, dropped bodies, bodies that are not JSON
    return None


def missing_sdk(package: str, extra: str) -> ConfigError:
    return ConfigError(
        f"the '{extra}' provider needs the {package} package: pip install 'trialrun[{extra}]'"
    )


Factory = Callable[..., Provider]
_REGISTRY: dict[str, Factory] = {}
_BUILTIN_MODULES = {
    "mock": "trialrun.providers.mock",
    "openai": "trialrun.providers.openai",
    "anthropic": "trialrun.providers.anthropic",
    "google": "trialrun.providers.google",
}


def provider(name: str) -> Callable[[Factory], Factory]:
    """Register a provider factory under `name`."""

    def register(factory: Factory) -> Factory:
        _REGISTRY[name] = factory
        return factory

    return register


def _load(name: str) -> Factory | None:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _BUILTIN_MODULES:
        __import__(_BUILTIN_MODULES[name])
        return _REGISTRY.get(name)
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name == name:
            _REGISTRY[name] = entry.load()
            return _REGISTRY[name]
    return None


def available() -> list[str]:
    names = set(_BUILTIN_MODULES) | set(_REGISTRY)
    names |= {entry.name for entry in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names)


def check_known(name: str, where: str) -> None:
    """Raise a one-line ConfigError if no provider is registered under `name`."""
    if _load(name) is None:
        raise ConfigError(
            f"{where}: unknown provider '{name}' (available: {', '.join(available())}); "
            "use --mock to dry-run any config offline"
        )


def provider_class(name: str) -> Any:
    """The registered factory (usually the Provider class) for `name`, or None."""
    return _load(name)


def create(name: str, **settings: Any) -> Provider:
    factory = _load(name)
    if factory is None:
        raise ConfigError(f"unknown provider '{name}' (available: {', '.join(available())})")
    return factory(**settings)
