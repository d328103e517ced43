"""Backoff between attempts: exponential with full jitter, or the server's Retry-After."""

from __future__ import annotations

import random


def backoff_s(
    failures: int, base_s: float, max_wait_s: float, retry_after_s: float | None, rng: random.Random
) -> float:
    """Seconds to wait after the `failures`-th failed attempt (1-based).

    A server's Retry-After is honoured as given, even past `max_wait_s` (the server
    knows when it will take us back), with up to 10% jitter so waiters do not return
    in lockstep. Otherwise: uniform in [0, min(max_wait, base * 2^(failures-1))]
    ("full jitter", AWS Architecture Blog, 2015).
    """
    if retry_after_s is not None:
        return retry_after_s * (1 + 0.1 * rng.random())
    return rng.uniform(0, min(max_wait_s, base_s * 2 ** (failures - 1)))
