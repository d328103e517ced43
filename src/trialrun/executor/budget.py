"""`budget: {max_usd}`: no request is sent that could take the run's spend over its cap.

Before a call, its worst-case cost is reserved: every byte of its messages counted as an
input token (a byte-level BPE token is at least one byte, so this bounds any tokenizer's
count) plus 8 a message, and `max_tokens` of output, at the model's price (the batch
discount for a batch line). The reported usage then settles the reservation. A call whose
reservation does not fit waits while other reservations are out (they may settle lower);
when none is out and it still does not fit, the budget is reached: the run stops cleanly,
resumable with a higher cap. So the spend never passes the cap, and a run stops within one
request's worst-case cost of it. Judges' calls count like the trials'.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trialrun.pricing import Price
from trialrun.types import Usage

BUDGET_STOP = "budget"
"""The key under which a run's `stopped_lanes` says its budget was reached."""
MESSAGE_OVERHEAD = 8
"""Tokens a message may add beside its text (role, separators), counted generously."""


class BudgetReached(Exception):
    """The next call cannot fit under the cap, with nothing else in flight."""


def worst_case_usd(
    price: Price | None,
    messages: list[dict[str, str]],
    max_tokens: Any,
    *,
    batch: bool = False,
    schema: dict[str, Any] | None = None,
) -> float:
    """The most a call can cost at `price` (0 for a free model: the mock). A judge's verdict
    schema is billed as input too (providers count structured-output schemas and tools)."""
    if price is None:
        return 0.0
    prompt = sum(len(m["content"].encode()) + MESSAGE_OVERHEAD for m in messages)
    if schema is not None:
        prompt += len(json.dumps(schema).encode()) + MESSAGE_OVERHEAD
    output = int(max_tokens) if isinstance(max_tokens, int | float) else 0
    return price.cost(Usage(prompt, output), batch=batch)


@dataclass
class Budget:
    """A run's cap, what it has spent (committed answers) and what is reserved in flight."""

    cap: float
    spent: float
    warn_at: float = 0.8
    on_warn: Callable[[str], None] | None = None
    reserved: float = 0.0
    outstanding: int = 0
    """Reservations not settled yet (counted, since float sums of reservations do not
    return exactly to 0)."""
    reached: str | None = None
    """Why the run stopped on its budget, once it did."""
    _settled: asyncio.Event = field(default_factory=asyncio.Event)
    _warned: bool = False

    def fits(self, usd: float) -> bool:
        return self.spent + self.reserved + usd <= self.cap + 1e-12

    async def reserve(self, usd: float) -> None:
        """Hold `usd` for a call; wait while other calls may settle below their worst case;
        raise BudgetReached when it cannot fit with nothing else in flight."""
        while not self.fits(usd):
            if self.reached is not None:
                raise BudgetReached(self.reached)
            if self.outstanding == 0:
                self.reached = (
                    f"budget reached: ${self.spent:.4f} spent of budget.max_usd ${self.cap:g}; "
                    f"the next call could cost up to ${usd:.4f}"
                )
                raise BudgetReached(self.reached)
            self._settled.clear()
            await self._settled.wait()
        self.reserved += usd
        self.outstanding += 1

    def settle(self, reserved: float, actual: float | None) -> None:
        """A call ended: its reservation goes, what it cost (None: unknown, counted at the
        reservation, never at 0) is spent."""
        self.outstanding = max(self.outstanding - 1, 0)
        self.reserved = max(self.reserved - reserved, 0.0) if self.outstanding else 0.0
        self.spent += reserved if actual is None else actual
        self._settled.set()
        if not self._warned and self.spent >= self.warn_at * self.cap:
            self._warned = True
            if self.on_warn is not None:
                self.on_warn(
                    f"budget: ${self.spent:.4f} spent, {self.spent / self.cap:.0%} of "
                    f"budget.max_usd ${self.cap:g}"
                )
