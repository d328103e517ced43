"""`google/<model>`: Gemini through the official `google-genai` SDK (Gemini Developer API).

The SDK's own retries are off (one attempt); system messages become `system_instruction`,
assistant turns become `model` turns, `max_tokens` becomes `max_output_tokens`, and
`top_logprobs: k` asks for `response_logprobs` with k candidates.

A request with a `response_schema` (a judge's, issue 12; nothing in the executor sets it
yet) asks for JSON (`response_mime_type: application/json`) matching `response_schema`,
the schema converted to Gemini's OpenAPI subset by `gemini_schema`; the answer's text is
the candidate's text.

Batch mode (`mode: batch`) goes through google-genai's batches API (`client.batches`): each
batch is one `create(model=..., src=[inlined requests], config={display_name})`, the
requests carrying our custom id as `metadata: {key: <custom id>}`; its answers come back
inline in the job (`dest.inlined_responses`, each with the request's metadata, a
`response` or an `error`). Inline requests are limited to 20 MB a batch ("Inline requests
... suitable for smaller batches that keep the total request size under 20MB",
https://ai.google.dev/gemini-api/docs/batch-api), so the executor splits by that;
trialrun does not use the input-file route (Files API upload, results as a file). Job
states (`JOB_STATE_PENDING`, `RUNNING`, `SUCCEEDED`, `FAILED`, `CANCELLED`, `EXPIRED`;
`BATCH_STATE_*` on the wire, renamed by the SDK's `t_job_state`) are read from
`batches.get`; the requests of an expired or cancelled job that have no result in it go
out again without using an attempt. A lost submission is found again by its display name
(`batches.list`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any, ClassVar

import orjson

from trialrun.errors import ErrorKind, ProviderError
from trialrun.providers.base import Provider
from trialrun.providers.batch import BatchAPI, BatchOutcome, BatchStatus
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


_ENDED = {
    "JOB_STATE_SUCCEEDED": None,
    "JOB_STATE_PARTIALLY_SUCCEEDED": None,
    "JOB_STATE_FAILED": "failed",
    "JOB_STATE_CANCELLED": "cancelled: its unanswered requests go out again",
    "JOB_STATE_EXPIRED": "expired: its unanswered requests go out again",
}
"""Job states in which a batch has ended, with the note each gives."""
_FINAL_CODES = frozenset({3, 5, 7, 9, 11, 12, 16})
"""gRPC status codes of a request that would fail again (google.rpc.Code): INVALID_ARGUMENT,
NOT_FOUND, PERMISSION_DENIED, FAILED_PRECONDITION, OUT_OF_RANGE, UNIMPLEMENTED,
UNAUTHENTICATED. Others (INTERNAL, UNAVAILABLE, RESOURCE_EXHAUSTED, ...) are retried."""
_LIST_MOST = 1000
"""Jobs `find_batch` reads at most, newest first."""


@provider("google")
class GoogleProvider(Provider, BatchAPI):
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

    # -- Batch API ---------------------------------------------------------------------

    # Inline requests: "total request size under 20MB" (module docstring); the limit is
    # kept 64 KiB below it for the request's envelope. No request count is documented for
    # inline batches: 100,000, as Anthropic's, bounds one call's memory.
    batch_limits = (100_000, 20_000_000 - 64 * 1024)

    def batch_group(self, request: Request) -> str:
        return request.model  # a batch job runs one model

    def batch_entry(self, custom_id: str, request: Request) -> dict[str, Any]:
        contents, config = to_gemini(request)
        entry = {"model": request.model, "contents": contents, "metadata": {"key": custom_id}}
        return {**entry, "config": config} if config else entry

    async def submit_batch(
        self, entries: Iterable[dict[str, Any]], metadata: dict[str, str]
    ) -> str:
        requests = list(entries)
        self._check_inline(requests)
        with connection_failures_named():
            job = await self._ensure_client().aio.batches.create(
                model=requests[0]["model"],
                src=requests,
                config={"display_name": display_name(metadata)},
            )
        return str(job.name)

    def _check_inline(self, requests: list[dict[str, Any]]) -> None:
        """Refuse a batch over the inline limit: the executor splits batches below it, so
        only a single request too big for it gets here, and the input-file route that
        would take it is not used."""
        assert self.batch_limits is not None
        size = sum(len(orjson.dumps(request)) + 1 for request in requests)
        if size > self.batch_limits[1]:
            raise ProviderError(
                f"a Gemini batch of {len(requests)} requests is {size:,} bytes, over the "
                f"{self.batch_limits[1]:,} trialrun sends inline (batch jobs from a file are "
                "not supported yet): shorten the prompt, or run it with mode: realtime",
                status=413,
            )

    async def find_batch(
        self, metadata: dict[str, str], requests: int, created_after: float, known: set[str]
    ) -> str | None:
        wanted = display_name(metadata)
        with connection_failures_named():
            pager = await self._ensure_client().aio.batches.list(config={"page_size": 100})
            seen = 0
            async for job in pager:
                seen += 1
                created = job.create_time.timestamp() if job.create_time else created_after
                if job.display_name == wanted and job.name not in known:
                    return None if created < created_after else str(job.name)
                if seen >= _LIST_MOST:
                    break
        return None

    async def poll_batch(self, batch_id: str) -> BatchStatus:
        with connection_failures_named():
            job = await self._ensure_client().aio.batches.get(name=batch_id)
        state = job.state.value if job.state is not None else "JOB_STATE_UNSPECIFIED"
        note = _ENDED.get(state)
        if state == "JOB_STATE_FAILED" and job.error is not None:
            note = f"failed: {job.error.message or job.error.code}"
        failed = state == "JOB_STATE_FAILED"
        return BatchStatus(state in _ENDED, state, {}, note, failed=failed)

    async def batch_results(self, batch_id: str) -> AsyncIterator[BatchOutcome]:
        with connection_failures_named():
            job = await self._ensure_client().aio.batches.get(name=batch_id)
        dest = job.dest
        if dest is not None and dest.file_name and not dest.inlined_responses:
            raise ValueError(f"batch {batch_id}: results in a file ({dest.file_name}) are not read")
        for answer in (dest.inlined_responses if dest is not None else None) or []:
            if (answer.metadata or {}).get("key"):
                yield _outcome(answer)

    async def cancel_batch(self, batch_id: str) -> None:
        with connection_failures_named():
            await self._ensure_client().aio.batches.cancel(name=batch_id)

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


def display_name(metadata: dict[str, str]) -> str:
    """A batch job's display name: the run and our tag, what `find_batch` looks for."""
    return f"trialrun {metadata['trialrun_run']} {metadata['trialrun_tag']}"


def _outcome(answer: Any) -> BatchOutcome:
    """One inlined response of a batch job (its metadata's key is our custom id)."""
    custom_id = answer.metadata["key"]
    if answer.error is not None:
        code = int(answer.error.code or 13)
        kind: ErrorKind = "final" if code in _FINAL_CODES else "retryable"
        return BatchOutcome(custom_id, error=f"code {code}: {answer.error.message}", kind=kind)
    if answer.response is None:
        return BatchOutcome(custom_id, unprocessed=True)
    return BatchOutcome(custom_id, response=_response(answer.response))


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
