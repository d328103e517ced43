"""Backoff between attempts: full jitter within its cap, Retry-After honoured, seeded determinism."""

from __future__ import annotations

import random

import pytest

from trialrun.executor.retry import backoff_s


@pytest.mark.parametrize("failures", [1, 2, 3, 4, 5, 8, 12])
def test_full_jitter_wait_stays_within_zero_and_the_exponential_cap(failures: int) -> None:
    rng = random.Random(failures)
    base, max_wait = 0.5, 10.0
    cap = min(max_wait, base * 2 ** (failures - 1))
    waits = [backoff_s(failures, base, max_wait, None, rng) for _ in range(500)]
    assert all(0 <= w <= cap for w in waits)
    # Full jitter spreads over the whole range, not just near the cap.
    assert min(waits) < cap * 0.1
    assert max(waits) > cap * 0.9


def test_full_jitter_cap_doubles_with_each_failure_until_max_wait() -> None:
    rng = random.Random(1)
    base, max_wait = 1.0, 6.0
    highest = {
        n: max(backoff_s(n, base, max_wait, None, rng) for _ in range(2000)) for n in (1, 2, 3, 4)
    }
    assert highest[1] <= 1.0
    assert 1.0 < highest[2] <= 2.0
    assert 2.0 < highest[3] <= 4.0
    assert 4.0 < highest[4] <= 6.0  # 8 would exceed max_wait_s


def test_zero_base_wait_means_no_wait() -> None:
    rng = random.Random(0)
    assert all(backoff_s(n, 0.0, 120.0, None, rng) == 0.0 for n in range(1, 10))


def test_retry_after_is_honoured_with_at_most_ten_percent_jitter() -> None:
    rng = random.Random(3)
    waits = [backoff_s(1, 0.5, 10.0, 2.0, rng) for _ in range(500)]
    assert all(2.0 <= w <= 2.2 for w in waits)
    assert len(set(waits)) > 1  # jittered, so waiters do not come back in lockstep


def test_retry_after_is_capped_at_max_wait() -> None:
    rng = random.Random(4)
    for asked in (30.0, 3600.0, 1e308, float("inf")):
        assert backoff_s(1, 0.5, 1.0, asked, rng) == 1.0


def test_retry_after_does_not_depend_on_the_failure_count() -> None:
    for failures in (1, 5, 20):
        wait = backoff_s(failures, 1.0, 120.0, 0.25, random.Random(5))
        assert 0.25 <= wait <= 0.25 * 1.1


def test_retry_after_of_zero_means_retry_at_once() -> None:
    assert backoff_s(3, 1.0, 120.0, 0.0, random.Random(6)) == 0.0


def test_same_seed_gives_the_same_waits() -> None:
    def waits(seed: int) -> list[float]:
        rng = random.Random(seed)
        return [backoff_s(n, 1.0, 60.0, 1.5 if n % 3 == 0 else None, rng) for n in range(1, 12)]

    assert waits(42) == waits(42)
    assert waits(42) != waits(43)
