"""The faults a fake server injects: per request (`Faults`) and per batch request
(`BatchFaults`), and the prompt markers that force a status or a body size."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

FORCED = re.compile(r"\[\[status:(\d{3})\]\]")
SIZED = re.compile(r"\[\[size:(\d+)(:chunked)?\]\]")
OUTCOMES = ("rate_limit", "server_error", "overloaded", "slow", "drop", "truncate", "malformed")


@dataclass(frozen=True)
class Faults:
    """Probabilities (each in [0, 1], summing to at most 1) of each fault per request."""

    rate_limit: float = 0.0
    """429 with a Retry-After header of `retry_after_s`."""
    retry_after_s: float = 0.05
    server_error: float = 0.0
    """500."""
    overloaded: float = 0.0
    """529 from the Anthropic server, 503 from the others."""
    slow: float = 0.0
    """Answer only after `slow_s` seconds."""
    slow_s: float = 5.0
    drop: float = 0.0
    """Close the connection without sending a byte."""
    truncate: float = 0.0
    """Send the headers and half the body, then close the connection."""
    malformed: float = 0.0
    """200 with a body that is not JSON."""
    seed: int = 0

    @classmethod
    def mix(cls, rate: float, seed: int = 0, **overrides: Any) -> Faults:
        """`rate` spread evenly over every fault except `slow`."""
        share = rate / 6
        return cls(
            rate_limit=share,
            server_error=share,
            overloaded=share,
            drop=share,
            truncate=share,
            malformed=share,
            seed=seed,
            **overrides,
        )

    def pick(self, roll: float) -> str:
        for name in OUTCOMES:
            probability = float(getattr(self, name))
            if roll < probability:
                return name
            roll -= probability
        return "ok"


@dataclass(frozen=True)
class BatchFaults:
    """Probabilities (each in [0, 1], summing to at most 1) of each fault per batch request.

    Drawn once per request, when its batch is created, from a generator seeded by `seed`,
    the batch and the request's custom_id: a batch's results never change between reads.
    """

    error: float = 0.0
    """The request's result is an error (500 server_error; Anthropic's api_error)."""
    expire: float = 0.0
    """The request is left unprocessed when its batch ends, so the batch ends as expired."""
    seed: int = 0

    def pick(self, batch: str, custom_id: str) -> str:
        """The outcome of one request of a batch: "ok", "error" or "expired"."""
        roll = random.Random(f"{self.seed}:{batch}:{custom_id}").random()
        if roll < self.error:
            return "error"
        if roll < self.error + self.expire:
            return "expired"
        return "ok"
