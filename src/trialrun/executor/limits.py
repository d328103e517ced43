"""Per-provider limits: concurrency, and token buckets for requests and tokens per minute.

One `Limiter` per provider name is shared by every experiment in the process, so
several configs run side by side never exceed the provider's limits together.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from trialrun.config import LimitConfig


class TokenBucket:
    """Refills at `rate` per second up to `capacity`; takers queue in order (FIFO)."""

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate = rate
        self.capacity = max(capacity, 1.0)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    async def take(self, amount: float) -> None:
        """Wait until `amount` is available and take it; more than capacity waits for a full bucket."""
        async with self._lock:
            need = min(amount, self.capacity)
            self._refill()
            while self.tokens < need:
                await asyncio.sleep((need - self.tokens) / self.rate)
                self._refill()
            self.tokens -= amount

    def adjust(self, amount: float) -> None:
        """Give back (positive) or charge (negative) tokens once the true usage is known."""
        self._refill()
        self.tokens = min(self.capacity, self.tokens + amount)


class Limiter:
    """Concurrency, rpm and tpm limits of one provider, plus a shared cooldown after a 429."""

    def __init__(self, config: LimitConfig | None, default_concurrency: int) -> None:
        config = config or LimitConfig()
        self.concurrency = config.concurrency or default_concurrency
        self._slots = asyncio.Semaphore(self.concurrency)
        self._requests = (
            TokenBucket(config.rpm / 60, config.rpm / 60 * config.burst_s) if config.rpm else None
        )
        self._tokens = (
            TokenBucket(config.tpm / 60, config.tpm / 60 * config.burst_s) if config.tpm else None
        )
        self._resume_at = 0.0

    @asynccontextmanager
    async def slot(self, estimated_tokens: int) -> AsyncIterator[None]:
        """Hold one request slot: waits for concurrency, cooldown, and both buckets."""
        async with self._slots:
            delay = self._resume_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self._requests:
                await self._requests.take(1)
            if self._tokens:
                await self._tokens.take(estimated_tokens)
            yield

    def settle(self, estimated_tokens: int, actual_tokens: int) -> None:
        if self._tokens:
            self._tokens.adjust(estimated_tokens - actual_tokens)

    def cool_down(self, seconds: float) -> bool:
        """Hold every new request of this provider for `seconds` (a 429's Retry-After);
        True if that holds them longer than they were already held."""
        until = time.monotonic() + seconds
        if until <= self._resume_at:
            return False
        self._resume_at = until
        return True


def estimate_tokens(
    messages: list[dict[str, str]],
    max_tokens: int | None,
    count: Callable[[str], int | None] | None = None,
) -> int:
    """Tokens a request may use: the prompt (a provider's tokenizer when it has a cheap one,
    else ~4 characters a token) plus 4 per message, plus the output allowance."""
    prompt = 0
    for message in messages:
        exact = count(message["content"]) if count is not None else None
        prompt += (len(message["content"]) // 4 if exact is None else exact) + 4
    return prompt + int(max_tokens or 0)
