"""Backoff between attempts: exponential with full jitter, or the server's Retry-After."""

from __future__ import annotations

import random


def backoff_s(
    failures: int, base_s: float, max_wait_s: float, retry_after_s: float | None, rng: random.Random
) -> float:
    """Seconds to wait after the `failures`-th failed attempt (1-based).

    A server's Retry-After is honoured up to `max_wait_s` (a server may ask for an hour,
    or for `inf`: the run must not sit silent for it; the executor records the cap), with
    up to 10% jitter so waiters do not return in lockstep. Otherwise: uniform in
    [0, min(max_wait, base * 2^(failures-1))] ("full jitter", AWS Architecture Blog, 2015).
    """
    if retry_after_s is not None:
        return min(retry_after_s * (1 + 0.1 * rng.random()), max_wait_s)
    return rng.uniform(0, min(max_wait_s, base_s * 2 ** (failures - 1)))
