"""`google/<model>`: Gemini through the official `google-genai` SDK (Gemini Developer API).

The SDK's own retries are off (one attempt); system messages become `system_instruction`,
assistant turns become `model` turns, `max_tokens` becomes `max_output_tokens`, and
`top_logprobs: k` asks for `response_logprobs` with k candidates.

A request with a `response_schema` (a judge's, issue 12; nothing in the executor sets it
yet) asks for JSON (`response_mime_type: application/json`) matching `response_schema`,
the schema converted to Gemini's OpenAPI subset by `gemini_schema`; the answer's text is
the candidate's text.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from trialrun.errors import ErrorKind
from trialrun.providers.base import Provider
from trialrun.providers.http import connection_failures_named, kind_of_status, retry_after_s
from trialrun.providers.registry import provider
from trialrun.types import Request, Response, Usage

_RENAMED = {"max_tokens": "max_output_tokens", "stop": "stop_sequences"}
_TAKEN = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "max_output_tokens",
        "stop_sequences",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "candidate_count",
    }
)
_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "BLOCKLIST": "content_filter",
    "SPII": "content_filter",
}


@provider("google")
class GoogleProvider(Provider):
    name: ClassVar[str] = "google"
    env_keys: ClassVar[tuple[str, ...]] = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    sdk: ClassVar[str | None] = "google-genai"
    extra: ClassVar[str | None] = "google"

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        concurrency: int = 64,
        **settings: Any,
    ) -> None:
        super().__init__(**settings)
        try:
            from google import genai
            from google.genai import errors, types
        except ImportError:
            raise self.missing_sdk() from None
        self._genai, self._types, self._errors = genai, types, errors
        self.api_key = api_key
        self.base_url = base_url
        self.concurrency = concurrency
        self._client: Any = None

    def max_concurrency(self) -> int:
        return self.concurrency

    def unsent_params(self, names: Iterable[str]) -> list[str]:
        mapped = {"top_logprobs", "logprobs"}
        return sorted(n for n in names if _RENAMED.get(n, n) not in _TAKEN and n not in mapped)

    def _make_client(self) -> Any:
        options = self._types.HttpOptions(
            base_url=self.base_url, retry_options=self._types.HttpRetryOptions(attempts=1)
        )
        return self._genai.Client(api_key=self.api_key, http_options=options)

    def _ensure_client(self) -> Any:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    async def ping(self) -> str:
        with connection_failures_named():
            pager = await self._ensure_client().aio.models.list()
        return f"{len(list(pager.page))} models listed"

    async def generate(self, request: Request) -> Response:
        self._ensure_client()
        contents, config = to_gemini(request)
        with connection_failures_named():
            result = await self._client.aio.models.generate_content(
                model=request.model, contents=contents, config=config
            )
        self._check_size(result)
        return _response(result)

    def _check_size(self, result: Any) -> None:
        """`limits.google.max_response_mb`, checked only after the fact: google-genai reads
        the whole body itself (aiohttp's `text()`) and offers no hook to stop it. The size is
        the Content-Length the server sent, else (a chunked body) the answer's text alone,
        a lower bound; either way such an answer is not stored."""
        headers = getattr(result.sdk_http_response, "headers", None) or {}
        declared = next((v for k, v in headers.items() if k.lower() == "content-length"), "")
        if str(declared).isdigit():
            self.body_limit.check(int(declared), "Content-Length is")
        else:
            self.body_limit.check(len((result.text or "").encode()), "its text alone is")

    def classify_error(self, exc: BaseException) -> tuple[ErrorKind, float | None]:
        if isinstance(exc, self._errors.APIError):
            headers = getattr(getattr(exc, "response", None), "headers", None)
            return kind_of_status(int(exc.code or 500)), retry_after_s(headers)
        if isinstance(exc, ValueError):  # a body that is not JSON
            return "retryable", None
        return super().classify_error(exc)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aio.aclose()
            self._client = None


def to_gemini(request: Request) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(contents, config) for generate_content, as plain dicts the SDK accepts."""
    system = "\n\n".join(m["content"] for m in request.messages if m["role"] == "system")
    contents = [
        {"role": "model" if m["role"] == "assistant" else "user", "parts": [{"text": m["content"]}]}
        for m in request.messages
        if m["role"] != "system"
    ]
    config: dict[str, Any] = {}
    for key, value in request.params.items():
        key = _RENAMED.get(key, key)
        if key in _TAKEN:
            config[key] = [value] if key == "stop_sequences" and isinstance(value, str) else value
    if request.params.get("top_logprobs") or request.params.get("logprobs"):
        config["response_logprobs"] = True
        config["logprobs"] = int(request.params.get("top_logprobs") or 1)
    if system:
        config["system_instruction"] = system
    if request.response_schema is not None:
        config["response_mime_type"] = "application/json"
        config["response_schema"] = gemini_schema(request.response_schema)
    return contents, config


_SCHEMA_KEYS = ("description", "enum", "minimum", "maximum", "required")


def gemini_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema in Gemini's OpenAPI subset: upper-case types ("OBJECT", "STRING", ...),
    `properties`, `items`, `enum`, `required`, bounds; `additionalProperties` and the rest
    left out (Gemini never adds properties a schema lacks)."""
    kind = schema.get("type", "object" if "properties" in schema else "string")
    out: dict[str, Any] = {"type": str(kind).upper()}
    out.update({key: schema[key] for key in _SCHEMA_KEYS if key in schema})
    if "properties" in schema:
        out["properties"] = {name: gemini_schema(sub) for name, sub in schema["properties"].items()}
    if "items" in schema:
        out["items"] = gemini_schema(schema["items"])
    return out


def _response(result: Any) -> Response:
    candidate = result.candidates[0] if result.candidates else None
    usage = result.usage_metadata
    finish = getattr(getattr(candidate, "finish_reason", None), "value", None)
    return Response(
        text=result.text or "",
        usage=Usage(usage.prompt_token_count or 0, usage.candidates_token_count or 0)
        if usage
        else Usage(),
        finish_reason=_FINISH.get(finish, finish.lower()) if finish else None,
        logprobs=_logprobs(getattr(candidate, "logprobs_result", None)),
        request_id=result.response_id,
        served_model=result.model_version,
    )


def _logprobs(result: Any) -> list[dict[str, Any]] | None:
    if result is None or not result.chosen_candidates:
        return None
    tops = result.top_candidates or []
    out = []
    for index, chosen in enumerate(result.chosen_candidates):
        top = tops[index].candidates if index < len(tops) and tops[index].candidates else []
        out.append(
            {
                "token": chosen.token,
                "logprob": chosen.log_probability,
                "top": [{"token": c.token, "logprob": c.log_probability} for c in top],
            }
        )
    return out
