"""`google/<model>`: Gemini through the official `google-genai` SDK (Gemini Developer API).

The SDK's own retries are off (one attempt); system messages become `system_instruction`,
assistant turns become `model` turns, `max_tokens` becomes `max_output_tokens`, and
`top_logprobs: k` asks for `response_logprobs` with k candidates.

A request with a `response_schema` (a judge's, issue 12; nothing in the executor sets it
yet) asks for JSON (`response_mime_type: application/json`) matching `response_schema`,
the schema converted to Gemini's OpenAPI subset by `gemini_schema`; the answer's text is
the candidate's text.

Batch mode (`mode: batch`) goes through google-genai's batches API (`client.batches`), one
model a job, by one of the two routes the Batch API documents
(https://ai.google.dev/gemini-api/docs/batch-api):

- inline, for a batch of up to `inline_max_bytes` (2 MiB) of requests: one
  `create(model=..., src=[inlined requests], config={display_name})`, each request carrying
  our custom id as `metadata: {key: <custom id>}`; its answers come back inside the job
  (`dest.inlined_responses`, each with the request's metadata, a `response` or an
  `error`), which every `batches.get` of the ended job returns whole, so inline jobs are
  kept small ("suitable for smaller batches that keep the total request size under
  20MB");
- an input file, for anything larger (up to the documented 2 GB an input file may hold):
  the requests are written as JSON lines, `{"key": <custom id>, "request":
  <GenerateContentRequest as the REST API takes it>}`, to a temporary file, uploaded with
  `files.upload` (the SDK's resumable upload, 8 MB at a time), and the job created with
  `src=<file name>`; its results are a JSONL file (`dest.file_name`, each line the key
  with a `response` or an error status) that `files.download` streams to a temporary
  file, read a line at a time. Small batches stay inline because that is one call rather
  than three and leaves nothing in the project's file storage (20 GB, files kept 48 h).

Job states (`JOB_STATE_PENDING`, `RUNNING`, `SUCCEEDED`, `FAILED`, `CANCELLED`, `EXPIRED`;
`BATCH_STATE_*` on the wire, renamed by the SDK's `t_job_state`) are read from
`batches.get`; the requests of an expired or cancelled job that have no result in it go
out again without using an attempt. A lost submission is found again by its display name
(`batches.list`).
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import IO, Any, ClassVar

import orjson

from trialrun.errors import ErrorKind, ProviderError
from trialrun.providers.base import Provider
from trialrun.providers.batch import (
    BatchAPI,
    BatchOutcome,
    BatchStatus,
    read_jsonl,
    spool_jsonl,
)
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
FILE_MAX = 2_000_000_000
"""Bytes an input file may hold ("2GB")."""


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

    # An input file may hold 2 GB ("The maximum allowed file size for an input file is
    # 2GB", https://ai.google.dev/gemini-api/docs/batch-api#input-file). The executor
    # measures each request as its batch entry, which is up to ~100 bytes shorter than its
    # line in the file (`file_line`): the limit leaves 20 MB for that, and `submit_batch`
    # checks the file itself. No request count is documented: 100,000, as Anthropic's.
    batch_limits = (100_000, FILE_MAX - 20_000_000)
    inline_max_bytes: ClassVar[int] = 2 * 1024 * 1024
    """Batches of up to this many bytes of requests are sent inline, larger ones as a file."""

    def batch_group(self, request: Request) -> str:
        return request.model  # a batch job runs one model

    def batch_entry(self, custom_id: str, request: Request) -> dict[str, Any]:
        contents, config = to_gemini(request)
        entry = {"model": request.model, "contents": contents, "metadata": {"key": custom_id}}
        return {**entry, "config": config} if config else entry

    async def submit_batch(
        self, entries: Iterable[dict[str, Any]], metadata: dict[str, str]
    ) -> str:
        client = self._ensure_client()
        config = {"display_name": display_name(metadata)}
        held, spool = _inline_or_spooled(iter(entries), self.inline_max_bytes)
        model = held[0]["model"]
        if spool is None:
            with connection_failures_named():
                job = await client.aio.batches.create(model=model, src=held, config=config)
            return str(job.name)
        with spool:
            size = spool.seek(0, os.SEEK_END)
            if size > FILE_MAX:
                raise ProviderError(
                    f"a Gemini batch file of {size:,} bytes is over the {FILE_MAX:,} an input "
                    "file may hold: set batch.max_bytes lower",
                    status=413,
                )
            spool.seek(0)
            upload = {"mime_type": "jsonl", "display_name": config["display_name"]}
            with connection_failures_named():
                uploaded = await client.aio.files.upload(file=spool, config=upload)
        with connection_failures_named():
            job = await client.aio.batches.create(model=model, src=uploaded.name, config=config)
        return str(job.name)

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
        client = self._ensure_client()
        with connection_failures_named():
            job = await client.aio.batches.get(name=batch_id)
        dest = job.dest
        if dest is not None and dest.file_name:
            with tempfile.TemporaryFile() as spool:
                with connection_failures_named():
                    await client.aio.files.download(file=dest.file_name, destination=spool)
                for line in read_jsonl(spool):
                    if line.get("key"):
                        yield _outcome(self._types.InlinedResponse.model_validate(_answer(line)))
            return
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


def _inline_or_spooled(
    entries: Iterator[dict[str, Any]], inline_max: int
) -> tuple[list[dict[str, Any]], IO[bytes] | None]:
    """The entries held for an inline job, if they weigh `inline_max` bytes or less; else
    the first of them, and all of them as the lines of an input file (temporary, rewound),
    the rest written as they are read."""
    held: list[dict[str, Any]] = []
    size = 0
    for entry in entries:
        held.append(entry)
        size += len(orjson.dumps(entry)) + 1
        if size > inline_max:
            spool = spool_jsonl(file_line(e) for e in itertools.chain(held, entries))
            return held[:1], spool
    return held, None


def file_line(entry: dict[str, Any]) -> dict[str, Any]:
    """A batch entry as a line of an input file: our custom id as its key, and the request
    in the REST API's form (camelCase, `systemInstruction` a Content, the model as
    `models/...`), the same request the SDK sends for the entry inline."""
    config = dict(entry.get("config") or {})
    model = str(entry["model"])
    if not model.startswith(("models/", "tunedModels/")):
        model = f"models/{model}"
    request: dict[str, Any] = {"model": model, "contents": entry["contents"]}
    system = config.pop("system_instruction", None)
    if system is not None:
        request["systemInstruction"] = {"parts": [{"text": system}], "role": "user"}
    if config:
        request["generationConfig"] = {_camel(key): value for key, value in config.items()}
    return {"key": entry["metadata"]["key"], "request": request}


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.title() for part in rest)


def _answer(line: dict[str, Any]) -> dict[str, Any]:
    """A results file's line as an inlined response: its key as the metadata, its
    `response` or its error (a google.rpc.Status, under `error` or `status`)."""
    return {
        "metadata": {"key": line["key"]},
        "response": line.get("response"),
        "error": line.get("error") or line.get("status"),
    }


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
