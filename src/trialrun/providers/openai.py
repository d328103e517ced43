"""`openai/<model>`: OpenAI and every OpenAI-compatible server (vLLM, SGLang, Ollama, ...).

Through the official `openai` SDK's chat completions, with its own retries off (trialrun's
retry layer is the only one, so attempts are counted once and Retry-After honoured) and
its aiohttp transport when installed (measured faster than the default; see bench/).

A request with a `response_schema` (a judge's, issue 12; nothing in the executor sets it
yet) asks for structured output: `response_format: {type: json_schema, json_schema: {name,
schema, strict: true}}`, in batch entries too. The answer's text is the message content;
a `message.refusal` becomes `Response.refusal`, with the text empty.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterable
from typing import Any, ClassVar

from trialrun.config import SAMPLING_PARAMS
from trialrun.providers.batch import (
    BatchAPI,
    BatchOutcome,
    BatchStatus,
    read_jsonl,
    spool_download,
    spool_jsonl,
)
from trialrun.providers.http import kind_of_status
from trialrun.providers.registry import provider
from trialrun.providers.sdk import SDKProvider
from trialrun.types import Request, Response, Usage

ENDPOINT = "/v1/chat/completions"
ENDPOINT_PATH = "/chat/completions"  # relative to the client's base URL (which ends in /v1)

# Chat-completions params the SDK takes by name: trialrun's sampling params but those that
# OpenAI's API lacks (top_k, min_p, repetition_penalty: they go in `extra_body`, which
# OpenAI-compatible servers read), and OpenAI's own.
_NAMED = (SAMPLING_PARAMS - {"top_k", "min_p", "repetition_penalty"}) | {
    "max_completion_tokens",
    "logit_bias",
    "user",
    "response_format",
    "reasoning_effort",
    "service_tier",
}


@provider("openai")
class OpenAIProvider(SDKProvider, BatchAPI):
    name: ClassVar[str] = "openai"
    env_keys: ClassVar[tuple[str, ...]] = ("OPENAI_API_KEY",)
    sdk: ClassVar[str] = "openai"
    extra: ClassVar[str] = "openai"

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.model_hint = str(settings.get("model", "gpt-4o"))

    def client_class(self) -> Any:
        return self._sdk.AsyncOpenAI

    def client_options(self) -> dict[str, Any]:
        # A self-hosted server often wants no key; the SDK insists on one.
        api_key = self.api_key or (None if self.base_url is None else "EMPTY")
        return {"api_key": api_key, "base_url": self.base_url}

    def count_tokens(self, text: str) -> int | None:
        if self.base_url is not None:  # another server's model: OpenAI's tables would not fit
            return None
        encoder = _encoder(self.model_hint)
        return None if encoder is None else len(encoder.encode(text))

    async def generate(self, request: Request) -> Response:
        return await self.post(
            ENDPOINT_PATH, self._body(request), _response_from_json, "chat completion"
        )

    def _body(self, request: Request) -> dict[str, Any]:
        """The chat-completions body: named params as the SDK's, the rest as extra_body's."""
        named, extra = _split_params(request.params, official=self.base_url is None)
        body: dict[str, Any] = {"model": request.model, "messages": request.messages}
        body.update(extra)
        body.update(named)
        schema = request.response_schema
        if schema is not None:
            body["response_format"] = response_format(request.schema_name, schema)
        return body

    # -- Batch API -------------------------------------------------------------------------

    # "The file can contain up to 50,000 requests, and can be up to 200 MB in size."
    # https://platform.openai.com/docs/api-reference/batch/create (input_file_id)
    batch_limits = (50_000, 200 * 1024 * 1024)

    def batch_entry(self, custom_id: str, request: Request) -> dict[str, Any]:
        body = self._body(request)
        return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}

    def batch_group(self, request: Request) -> str:
        return request.model  # "each input file can only include requests to a single model"

    async def submit_batch(
        self, entries: Iterable[dict[str, Any]], metadata: dict[str, str]
    ) -> str:
        client = self._ensure_client()
        name = f"trialrun-{metadata.get('trialrun_tag', 'batch')}.jsonl"
        with spool_jsonl(entries) as spool:  # the SDK streams a file object's multipart part
            upload = await client.files.create(file=(name, spool), purpose="batch")
        batch = await client.batches.create(
            input_file_id=upload.id,
            endpoint=ENDPOINT,
            completion_window="24h",
            metadata=metadata,
        )
        return str(batch.id)

    async def find_batch(
        self, metadata: dict[str, str], requests: int, created_after: float, known: set[str]
    ) -> str | None:
        async for batch in self._ensure_client().batches.list(limit=100):  # newest first
            if batch.created_at < created_after:
                return None
            tags = batch.metadata or {}
            if batch.id not in known and all(tags.get(k) == v for k, v in metadata.items()):
                return str(batch.id)
        return None

    async def poll_batch(self, batch_id: str) -> BatchStatus:
        batch = await self._ensure_client().batches.retrieve(batch_id)
        counts = batch.request_counts.model_dump() if batch.request_counts else {}
        status = str(batch.status)
        ended = status in ("completed", "expired", "cancelled", "failed")
        note = None
        if status in ("expired", "cancelled"):
            note = status
        elif status == "failed":
            errors = batch.errors.data if batch.errors and batch.errors.data else []
            note = "failed: " + ("; ".join(str(e.message) for e in errors) or "no reason given")
        return BatchStatus(ended, status, counts, note, failed=status == "failed")

    async def batch_results(self, batch_id: str) -> AsyncIterator[BatchOutcome]:
        client = self._ensure_client()
        batch = await client.batches.retrieve(batch_id)
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            download = client.files.with_streaming_response.content(file_id)
            with await spool_download(download) as spool:
                for line in read_jsonl(spool):
                    yield self._outcome(line)

    def _outcome(self, line: dict[str, Any]) -> BatchOutcome:
        custom_id = str(line["custom_id"])
        response = line.get("response") or {}
        error = line.get("error") or {}
        status = response.get("status_code")
        if status == 200:
            return BatchOutcome(custom_id, response=_response_from_json(response["body"]))
        if error.get("code") in ("batch_expired", "batch_cancelled"):
            return BatchOutcome(custom_id, unprocessed=True)
        body_error = (response.get("body") or {}).get("error") or {}
        message = body_error.get("message") or error.get("message") or "no reason given"
        kind = kind_of_status(int(status)) if status else "retryable"
        return BatchOutcome(
            custom_id,
            error=f"{status or error.get('code')}: {message}",
            kind="final" if kind == "auth" else kind,
        )

    async def cancel_batch(self, batch_id: str) -> None:
        await self._ensure_client().batches.cancel(batch_id)


def _split_params(
    params: dict[str, Any], *, official: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    named: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in params.items():
        (named if key in _NAMED else extra)[key] = value
    if named.get("top_logprobs"):
        named["logprobs"] = True
    if official and "max_tokens" in named and "max_completion_tokens" not in named:
        # OpenAI's own API deprecated max_tokens; newer models accept only this name.
        named["max_completion_tokens"] = named.pop("max_tokens")
    return named, extra


def response_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's structured-output request: the answer must match `schema`, strictly."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def _response_from_json(data: dict[str, Any]) -> Response:
    """A chat completion's JSON (as the API sends it) as a neutral response."""
    choice = data["choices"][0]
    usage = data.get("usage") or {}
    logprobs = (choice.get("logprobs") or {}).get("content")
    message = choice.get("message") or {}
    return Response(
        text=message.get("content") or "",
        usage=Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)),
        finish_reason=choice.get("finish_reason"),
        logprobs=[
            {
                "token": entry["token"],
                "logprob": entry["logprob"],
                "top": [
                    {"token": t["token"], "logprob": t["logprob"]}
                    for t in entry.get("top_logprobs") or []
                ],
            }
            for entry in logprobs
        ]
        if logprobs
        else None,
        request_id=data.get("id"),
        served_model=data.get("model"),
        refusal=message.get("refusal") or None,
    )


@functools.cache
def _encoder(model: str) -> Any:
    """OpenAI's BPE for `model` from the offline `bpe-openai` package (the `tokenizers` extra),
    or None: tiktoken downloads its tables at first use, which this tool must not do."""
    try:
        import bpe_openai
    except ImportError:
        return None
    try:
        return bpe_openai.encoding_for_model(model)
    except Exception:  # an unknown model name: the o200k table of current models
        return bpe_openai.get_encoding("o200k_base")
