"""The base of providers built on an official SDK from Stainless' generator (`openai`,
`anthropic`): one client per provider, made on first use with the SDK's retries off
(trialrun's retry layer is the only one, so attempts are counted once and Retry-After
honoured) and its aiohttp transport when installed (measured faster; see bench/), each
answer POSTed through `post_json`, the SDK's error classes mapped to the executor's
kinds, and the client closed by `aclose`."""

from __future__ import annotations

import importlib
from abc import abstractmethod
from typing import Any, ClassVar

from trialrun.errors import ErrorKind
from trialrun.providers.base import Provider
from trialrun.providers.http import (
    connection_failures_named,
    kind_of_status,
    post_json,
    retry_after_s,
)
from trialrun.types import Response


class SDKProvider(Provider):
    """A provider whose client is an SDK's `Async<Name>` class; a subclass sets `sdk` (the
    module to import) and `extra`, and says how to build its client in `client_class` and
    `client_options`."""

    sdk: ClassVar[str]
    extra: ClassVar[str]

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        transport: str = "aiohttp",
        concurrency: int = 64,
        **settings: Any,
    ) -> None:
        super().__init__(**settings)
        try:
            self._sdk = importlib.import_module(self.sdk)
        except ImportError:
            raise self.missing_sdk() from None
        self.api_key = api_key
        self.base_url = base_url
        self.transport = transport
        self.concurrency = concurrency
        self._client: Any = None
        self._raw_response = raw_response_class(self._sdk)

    @abstractmethod
    def client_class(self) -> Any:
        """The SDK's async client class (`openai.AsyncOpenAI`)."""

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments of the client besides its retries and transport."""
        return {"api_key": self.api_key, "base_url": self.base_url}

    def max_concurrency(self) -> int:
        return self.concurrency

    def _ensure_client(self) -> Any:
        """The client, made on first use (a provider built offline never makes one)."""
        if self._client is None:
            http_client = sdk_http_client(self._sdk, self.transport)
            options = {"max_retries": 0, **self.client_options(), "http_client": http_client}
            self._client = self.client_class()(**options)
        return self._client

    async def post(self, path: str, body: dict[str, Any], parse: Any, what: str) -> Response:
        """POST `body` to `path` (relative to the base URL) and parse the JSON answer."""
        client = self._ensure_client()
        return await post_json(client, path, body, self._raw_response, parse, what, self.body_limit)

    async def ping(self) -> str:
        with connection_failures_named():
            page = await self._ensure_client().models.list()
        return f"{len(page.data)} models listed"

    def classify_error(self, exc: BaseException) -> tuple[ErrorKind, float | None]:
        return classify_sdk_error(self._sdk, exc) or super().classify_error(exc)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


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


def classify_sdk_error(sdk: Any, exc: BaseException) -> tuple[ErrorKind, float | None] | None:
    """Errors of the OpenAI and Anthropic SDKs (same generator, same classes); None if neither."""
    if isinstance(exc, sdk.APIStatusError):
        return kind_of_status(exc.status_code), retry_after_s(exc.response.headers)
    if isinstance(exc, sdk.APIConnectionError | sdk.APIResponseValidationError | ValueError):
        return "retryable", None  # timeouts, resets, dropped bodies, bodies that are not JSON
    return None
