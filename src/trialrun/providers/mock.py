"""The offline `mock` provider: deterministic, realistic-looking answers derived from the request.

Different models, prompts and sampling params give different answers, so the
statistics downstream are not trivial: each model has its own leaning towards
"Yes", each prompt shifts it, and temperature > 0 with different seeds varies it.
Latency, and faults (429 with Retry-After, 500, 529, hangs), can be injected to
exercise the executor. Model-entry `options` may force failures for tests:
`fail: auth` (401) or `fail: final` (400); a prompt containing `[[mock:refuse]]`
is refused as a content-policy error, and one containing `[[mock:nologprobs]]` is
answered without logprobs even when they are asked for (as some proxies do).

A graded mock: when a request's options hold `mock_expected` (the executor renders the
config's `mock.answer`, or a mock entry's `options.answer`, for each trial), the mock
answers exactly that text with probability `accuracy` (the entry's `options.accuracy`,
else `mock.accuracy`), decided by a hash of the model, messages and seed, the same on
every run and machine; otherwise a deterministic wrong answer: another of `choices` when
given, the number plus 1 when the expected text is a number, else "I do not know.".

A request with a `response_schema` (a judge's, issue 12) is answered by
`mock_structured.structured_answer`: a schema-valid verdict as canonical JSON, with
`[[mock:verdict-...]]` markers for invalid, non-JSON, refused and cut-off verdicts.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from trialrun.errors import ProviderError
from trialrun.hashing import canonical
from trialrun.providers.base import Provider
from trialrun.providers.batch import BatchAPI, BatchOutcome, BatchStatus
from trialrun.providers.mock_structured import structured_answer
from trialrun.providers.registry import provider
from trialrun.types import Request, Response, Usage

_OPENERS = {
    "yes": ["Yes.", "Yes, that is right.", "Yes — I believe so."],
    "no": ["No.", "No, that is not the case.", "No, I don't think so."],
    "unsure": ["I'm not sure.", "It is hard to say.", "I cannot tell with confidence."],
}
_SENTENCES = [
    "The key point is {w1}, which bears directly on {w2}.",
    "Looking at {w1} and {w2} together, the evidence points one way.",
    "Most sources that discuss {w1} agree on this.",
    "This depends on how {w1} is defined, but {w2} settles it here.",
    "A careful reading of {w1} supports that answer.",
    "I would check {w2} before relying on it.",
]
_FILLER = ["the", "a", "it", "is", "of", "to", "and", "in", "that", "this"]


def _unit(text: str) -> float:
    """A stable number in [0, 1) from a string."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:13], 16) / float(1 << 52)


@provider("mock")
class MockProvider(Provider, BatchAPI):
    name = "mock"

    def __init__(
        self,
        latency_s: float = 0.0,
        jitter_s: float = 0.0,
        errors: dict[str, float] | None = None,
        retry_after_s: float = 0.05,
        concurrency: int = 256,
        fault_seed: int = 0,
        batch_delay_s: float = 0.0,
        batch_errors: float = 0.0,
        batch_expire: float = 0.0,
        batch_dir: str | None = None,
        answer: str | None = None,
        accuracy: float = 1.0,
        choices: list[str] | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(**settings)
        self.grading = Grading(accuracy, choices)  # `answer` is rendered by the executor
        self.batch_delay_s = batch_delay_s
        self.batch_errors = batch_errors
        self.batch_expire = batch_expire
        self.batch_dir = Path(batch_dir) if batch_dir else None
        self.latency_s = latency_s
        self.jitter_s = jitter_s
        self.errors = dict(errors or {})
        self.retry_after_s = retry_after_s
        self.concurrency = concurrency
        self._faults = random.Random(fault_seed)

    def max_concurrency(self) -> int:
        return self.concurrency

    async def generate(self, request: Request) -> Response:
        await self._wait()
        self._forced_failure(request)
        await self._inject_fault()
        return answer(request, self.grading)

    async def _wait(self) -> None:
        delay = self.latency_s + (self._faults.uniform(0, self.jitter_s) if self.jitter_s else 0)
        await asyncio.sleep(delay)

    def _forced_failure(self, request: Request) -> None:
        fail = request.options.get("fail")
        if fail == "auth":
            raise ProviderError("mock: 401 invalid API key", kind="auth", status=401)
        if fail == "final":
            raise ProviderError("mock: 400 bad request", kind="final", status=400)
        if any("[[mock:refuse]]" in m["content"] for m in request.messages):
            raise ProviderError("mock: 400 content policy refusal", kind="final", status=400)

    async def _inject_fault(self) -> None:
        roll = self._faults.random()
        for fault, probability in self.errors.items():
            if roll < probability:
                await self._raise(fault)
            roll -= probability

    async def _raise(self, fault: str) -> None:
        if fault == "timeout":
            await asyncio.sleep(3600)
        status = {"rate_limit": 429, "server": 500, "overloaded": 529}[fault]
        retry_after = self.retry_after_s if status == 429 else None
        raise ProviderError(
            f"mock: injected {status} ({fault})",
            kind="retryable",
            status=status,
            retry_after=retry_after,
        )

    # -- a batch API, simulated offline ----------------------------------------------------
    #
    # Each submitted batch is two files in `batch_dir` (under the response cache folder), so
    # that a later `collect` process finds it as it would find a provider's batch: its
    # entries as JSON lines (`<id>.jsonl`, written and read a line at a time, like a
    # provider's input and results files) and a small JSON of its state (`<id>.json`;
    # a batch written by an earlier version holds its entries there, and is read as well).
    # A batch ends `batch_delay_s` after submission; each request then fails with probability
    # `batch_errors` or expires unprocessed with probability `batch_expire`, decided once
    # from the batch and request ids.

    batch_limits = (100_000, 256 * 1024 * 1024)  # the mock takes what Anthropic's API does

    def batch_entry(self, custom_id: str, request: Request) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "custom_id": custom_id,
            "model": request.model,
            "messages": request.messages,
            "params": request.params,
            "options": request.options,
        }
        if request.response_schema is not None:  # only then: other entries stay as they were
            entry["response_schema"] = request.response_schema
            entry["schema_name"] = request.schema_name
        return entry

    def _batch_path(self, batch_id: str, suffix: str = ".json") -> Path:
        if self.batch_dir is None:
            raise ProviderError("mock: batch mode needs a batch folder", kind="final")
        return self.batch_dir / f"{batch_id}{suffix}"

    async def submit_batch(
        self, entries: Iterable[dict[str, Any]], metadata: dict[str, str]
    ) -> str:
        digest = hashlib.sha256(canonical([metadata, time.time_ns()]).encode()).hexdigest()
        batch_id = f"mockbatch_{digest[:20]}"
        lines = self._batch_path(batch_id, ".jsonl")
        lines.parent.mkdir(parents=True, exist_ok=True)
        count = 0
        partial = lines.with_name(f"{lines.name}.part")
        with partial.open("wb") as handle:
            for entry in entries:
                handle.write(orjson.dumps(entry) + b"\n")
                count += 1
        os.replace(partial, lines)
        batch = {
            "id": batch_id,
            "created": time.time(),
            "metadata": metadata,
            "requests": count,
            "cancelled": False,
        }
        _write_json(self._batch_path(batch_id), batch)
        return batch_id

    async def find_batch(
        self, metadata: dict[str, str], requests: int, created_after: float, known: set[str]
    ) -> str | None:
        if self.batch_dir is None or not self.batch_dir.exists():
            return None
        for path in sorted(self.batch_dir.glob("mockbatch_*.json")):
            batch = json.loads(path.read_text())
            if batch["metadata"] == metadata and batch["id"] not in known:
                return str(batch["id"])
        return None

    def _read_batch(self, batch_id: str) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self._batch_path(batch_id).read_text())
        except FileNotFoundError:
            raise ProviderError(
                f"mock: 404 no batch {batch_id}", kind="final", status=404
            ) from None
        return data

    def _entries(self, batch: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """A batch's entries, a line at a time."""
        if "entries" in batch:  # written by an earlier version
            yield from batch["entries"]
            return
        with self._batch_path(batch["id"], ".jsonl").open("rb") as handle:
            yield from (orjson.loads(line) for line in handle if line.strip())

    async def poll_batch(self, batch_id: str) -> BatchStatus:
        batch = self._read_batch(batch_id)
        total = batch.get("requests", len(batch.get("entries", [])))
        if batch["cancelled"]:
            return BatchStatus(True, "cancelled", {"total": total}, "cancelled")
        if time.time() - batch["created"] < self.batch_delay_s:
            return BatchStatus(False, "in_progress", {"total": total})
        counts = dict.fromkeys(("ok", "error", "expired"), 0)
        for entry in self._entries(batch):
            counts[self._fate(batch_id, entry["custom_id"])] += 1
        expired = counts["expired"] > 0
        return BatchStatus(
            True, "expired" if expired else "ended", counts, "expired" if expired else None
        )

    def _fate(self, batch_id: str, custom_id: str) -> str:
        roll = _unit(f"{batch_id}/{custom_id}")
        if roll < self.batch_expire:
            return "expired"
        if roll < self.batch_expire + self.batch_errors:
            return "error"
        return "ok"

    async def batch_results(self, batch_id: str) -> AsyncIterator[BatchOutcome]:
        batch = self._read_batch(batch_id)
        for entry in self._entries(batch):
            custom_id = entry["custom_id"]
            fate = "expired" if batch["cancelled"] else self._fate(batch_id, custom_id)
            if fate == "expired":
                yield BatchOutcome(custom_id, unprocessed=True)
            elif fate == "error":
                yield BatchOutcome(custom_id, error="mock: 500 batch request failed")
            else:
                yield BatchOutcome(custom_id, response=self._batch_answer(entry))

    def _batch_answer(self, entry: dict[str, Any]) -> Response:
        request = Request(
            entry["model"],
            entry["messages"],
            entry["params"],
            None,
            entry.get("options") or {},
            entry.get("response_schema"),
            entry.get("schema_name", "verdict"),
        )
        return answer(request, self.grading)

    async def cancel_batch(self, batch_id: str) -> None:
        batch = self._read_batch(batch_id)
        batch["cancelled"] = True
        _write_json(self._batch_path(batch_id), batch)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


@dataclass(frozen=True)
class Grading:
    """A graded mock's defaults (`mock.accuracy`, `mock.choices`); a request's options
    `accuracy` and `choices` override them."""

    accuracy: float = 1.0
    choices: list[str] | None = None


def graded(request: Request, grading: Grading) -> str | None:
    """A graded mock's answer: the expected text or a wrong one; None when not graded."""
    expected = request.options.get("mock_expected")
    if expected is None:
        return None
    accuracy = float(request.options.get("accuracy", grading.accuracy))
    choices = request.options.get("choices", grading.choices)
    roll = _unit(canonical(["graded", request.model, request.messages, request.params.get("seed")]))
    if roll < accuracy:
        return str(expected)
    return wrong_answer(str(expected), choices, roll)


def wrong_answer(expected: str, choices: list[str] | None, roll: float) -> str:
    """Another choice (picked by `roll`), the number plus 1, or "I do not know."."""
    others = [str(choice) for choice in choices or [] if str(choice) != expected.strip()]
    if others:
        return others[int(roll * 1_000_003) % len(others)]
    try:
        number = float(expected.replace(",", ""))
    except ValueError:
        return "I do not know."
    return str(int(number) + 1) if number.is_integer() else str(number + 1)


def answer(request: Request, grading: Grading | None = None) -> Response:
    """The deterministic answer to a request."""
    if request.response_schema is not None:
        return structured_answer(request)
    params = request.params
    temperature = float(params.get("temperature", 1.0) or 0.0)
    sampled = params.get("seed") if temperature > 0 else None
    key = canonical([request.model, request.messages, temperature, sampled])
    rng = random.Random(key)
    prompt = " ".join(m["content"] for m in request.messages if m["role"] == "user")
    text = graded(request, grading or Grading())
    if text is None:
        text = _prose(request.model, prompt, temperature, rng)
    tokens = text.split(" ")
    limit = int(params.get("max_tokens") or 1 << 30)
    finish = "length" if len(tokens) > limit else "stop"
    tokens = tokens[:limit]
    text = " ".join(tokens)
    input_tokens = sum(len(m["content"].split()) + 4 for m in request.messages)
    top_k = int(params.get("top_logprobs") or (1 if params.get("logprobs") else 0))
    if "[[mock:nologprobs]]" in prompt:  # a server that ignores logprobs (some proxies do)
        top_k = 0
    digest = hashlib.sha256(key.encode()).hexdigest()
    return Response(
        text=text,
        usage=Usage(input=input_tokens, output=len(tokens)),
        finish_reason=finish,
        logprobs=_logprobs(tokens, top_k, rng) if top_k else None,
        request_id=f"mock-{digest[:16]}",
        served_model=request.model,
        cost_usd=0.0,
    )


def _prose(model: str, prompt: str, temperature: float, rng: random.Random) -> str:
    """An ungraded answer: a verdict (the model's leaning) and a few sentences."""
    verdict = _verdict(model, prompt, temperature, rng)
    words = _longest_words(prompt)
    sentences = [rng.choice(_OPENERS[verdict])]
    for _ in range(rng.randint(1, 3)):
        sentences.append(rng.choice(_SENTENCES).format(w1=rng.choice(words), w2=rng.choice(words)))
    return " ".join(sentences)


def _longest_words(prompt: str, most: int = 6) -> list[str]:
    """The prompt's `most` longest distinct words, ties in alphabetical order: never in the
    order of a set, which the process's string-hash seed decides, so that an answer is the
    same in every process and on every machine."""
    distinct = {word.strip(".,?!:;\"'()").lower() for word in prompt.split()}
    return sorted(distinct, key=lambda word: (len(word), word))[-most:] or ["it"]


def _verdict(model: str, prompt: str, temperature: float, rng: random.Random) -> str:
    p_yes = 0.25 + 0.5 * _unit(model) + 0.3 * (_unit(prompt) - 0.5)
    p_unsure = 0.05 + 0.1 * _unit(model + "unsure") + 0.1 * min(temperature, 1.0)
    roll = rng.random() if temperature > 0 else _unit(model + prompt)
    if roll < p_unsure:
        return "unsure"
    return "yes" if roll < p_unsure + (1 - p_unsure) * p_yes else "no"


def _logprobs(tokens: list[str], top_k: int, rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for token in tokens:
        chosen = -rng.expovariate(4.0)
        alternatives = [{"token": token, "logprob": round(chosen, 4)}]
        floor = chosen
        for alt in rng.sample(_FILLER, min(top_k - 1, len(_FILLER))):
            floor -= rng.expovariate(1.0) + 0.01
            alternatives.append({"token": alt, "logprob": round(floor, 4)})
        out.append({"token": token, "logprob": round(chosen, 4), "top": alternatives})
    return out
