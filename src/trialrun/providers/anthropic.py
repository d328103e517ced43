"""`anthropic/<model>`: Claude through the official `anthropic` SDK's Messages API.

System messages become the `system` parameter; `stop` becomes `stop_sequences`; params the
Messages API does not take (seed, logprobs, penalties) are dropped, since sending them
would fail every call. Stop reasons map to the neutral finish reasons.
"""

from __future__ import annotations

from typing import Any, ClassVar

from trialrun.errors import ErrorKind
from trialrun.providers.base import (
    Provider,
    classify_sdk_error,
    missing_sdk,
    provider,
    sdk_http_client,
)
from trialrun.types import Request, Response, Usage

_TAKEN = frozenset({"temperature", "top_p", "top_k", "max_tokens", "stop_sequences", "metadata"})
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
}
DEFAULT_MAX_TOKENS = 1024


@provider("anthropic")
class AnthropicProvider(Provider):
    name: ClassVar[str] = "anthropic"
    env_keys: ClassVar[tuple[str, ...]] = ("ANTHROPIC_API_KEY",)

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
            import anthropic
        except ImportError:
            raise missing_sdk("anthropic", "anthropic") from None
        self._anthropic = anthropic
        self.api_key = api_key
        self.base_url = base_url
        self.transport = transport
        self.concurrency = concurrency
        self._client: Any = None

    def max_concurrency(self) -> int:
        return self.concurrency

    def _make_client(self) -> Any:
        kwargs: dict[str, Any] = {"max_retries": 0, "api_key": self.api_key}
        if self.base_url:
            kwargs["base_url"] = self.base_url
        kwargs["http_client"] = sdk_http_client(self._anthropic, self.transport)
        return self._anthropic.AsyncAnthropic(**kwargs)

    def _ensure_client(self) -> Any:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    async def ping(self) -> str:
        page = await self._ensure_client().models.list()
        return f"{len(page.data)} models listed"

    async def generate(self, request: Request) -> Response:
        self._ensure_client()
        message = await self._client.messages.create(**to_messages_params(request))
        return _response(message)

    def classify_error(self, exc: BaseException) -> tuple[ErrorKind, float | None]:
        return classify_sdk_error(self._anthropic, exc) or super().classify_error(exc)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def to_messages_params(request: Request) -> dict[str, Any]:
    """The Messages API body for a neutral request (also used to build batch requests)."""
    system = "\n\n".join(m["content"] for m in request.messages if m["role"] == "system")
    params = dict(request.params)
    if "stop" in params:
        stop = params.pop("stop")
        params["stop_sequences"] = [stop] if isinstance(stop, str) else stop
    body: dict[str, Any] = {k: v for k, v in params.items() if k in _TAKEN}
    body.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
    body["model"] = request.model
    body["messages"] = [m for m in request.messages if m["role"] != "system"]
    if system:
        body["system"] = system
    return body


def _response(message: Any) -> Response:
    text = "".join(block.text for block in message.content if getattr(block, "type", "") == "text")
    usage = message.usage
    return Response(
        text=text,
        usage=Usage(usage.input_tokens, usage.output_tokens) if usage else Usage(),
        finish_reason=_FINISH.get(message.stop_reason, message.stop_reason),
        request_id=message.id,
        served_model=message.model,
    )
