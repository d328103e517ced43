"""The offline `mock` provider: deterministic, realistic-looking answers derived from the request.

Different models, prompts and sampling params give different answers, so the
statistics downstream are not trivial: each model has its own leaning towards
"Yes", each prompt shifts it, and temperature > 0 with different seeds varies it.
Latency, and faults (429 with Retry-After, 500, 529, hangs), can be injected to
exercise the executor. Model-entry `options` may force failures for tests:
`fail: auth` (401) or `fail: final` (400); a prompt containing `[[mock:refuse]]`
is refused as a content-policy error.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from typing import Any

from trialrun.errors import ProviderError
from trialrun.plan import canonical
from trialrun.providers.base import Provider, provider
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
class MockProvider(Provider):
    name = "mock"

    def __init__(
        self,
        latency_s: float = 0.0,
        jitter_s: float = 0.0,
        errors: dict[str, float] | None = None,
        retry_after_s: float = 0.05,
        concurrency: int = 256,
        fault_seed: int = 0,
        **settings: Any,
    ) -> None:
        super().__init__(**settings)
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
        return answer(request)

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


def answer(request: Request) -> Response:
    """The deterministic answer to a request."""
    params = request.params
    temperature = float(params.get("temperature", 1.0) or 0.0)
    sampled = params.get("seed") if temperature > 0 else None
    key = canonical([request.model, request.messages, temperature, sampled])
    rng = random.Random(key)
    prompt = " ".join(m["content"] for m in request.messages if m["role"] == "user")
    verdict = _verdict(request.model, prompt, temperature, rng)
    words = sorted({w.strip(".,?!:;\"'()").lower() for w in prompt.split()}, key=len)[-6:] or ["it"]
    sentences = [rng.choice(_OPENERS[verdict])]
    for _ in range(rng.randint(1, 3)):
        sentences.append(rng.choice(_SENTENCES).format(w1=rng.choice(words), w2=rng.choice(words)))
    tokens = " ".join(sentences).split(" ")
    limit = int(params.get("max_tokens") or 1 << 30)
    finish = "length" if len(tokens) > limit else "stop"
    tokens = tokens[:limit]
    text = " ".join(tokens)
    input_tokens = sum(len(m["content"].split()) + 4 for m in request.messages)
    top_k = int(params.get("top_logprobs") or (1 if params.get("logprobs") else 0))
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
