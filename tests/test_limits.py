"""Token buckets and per-provider limiters: rates, token accounting, concurrency, cooldown."""

from __future__ import annotations

import asyncio
import time

import pytest

from trialrun.config import LimitConfig
from trialrun.executor.limits import Limiter, TokenBucket, estimate_tokens

# ------------------------------------------------------------------ TokenBucket


def test_bucket_starts_full_so_a_burst_up_to_capacity_goes_at_once() -> None:
    async def scenario() -> float:
        bucket = TokenBucket(rate=1.0, capacity=5)
        start = time.monotonic()
        for _ in range(5):
            await bucket.take(1)
        return time.monotonic() - start

    # Refilling one token would take a whole second; five takes must not wait for it.
    assert asyncio.run(scenario()) < 0.5


def test_bucket_spaces_takes_beyond_capacity_at_its_rate() -> None:
    async def scenario() -> float:
        bucket = TokenBucket(rate=20.0, capacity=2)
        start = time.monotonic()
        for _ in range(12):
            await bucket.take(1)
        return time.monotonic() - start

    # 2 go at once, the other 10 need 10 / 20 per second = 0.5 s.
    assert asyncio.run(scenario()) >= 0.5 * 0.9


def test_bucket_capacity_is_at_least_one_token() -> None:
    bucket = TokenBucket(rate=10.0, capacity=0.1)
    assert bucket.capacity == 1.0


def test_bucket_take_larger_than_capacity_waits_for_a_full_bucket_then_goes_into_debt() -> None:
    async def scenario() -> tuple[float, float]:
        bucket = TokenBucket(rate=10.0, capacity=2)
        start = time.monotonic()
        await bucket.take(5)  # a full bucket is there: goes at once, leaves a debt of 3
        first = time.monotonic() - start
        await bucket.take(1)  # must wait for the debt to be repaid: (3 + 1) / 10 s
        return first, time.monotonic() - start

    first, second = asyncio.run(scenario())
    assert first < 0.2
    assert second >= 0.4 * 0.9


def test_bucket_adjust_refunds_and_charges_but_never_exceeds_capacity() -> None:
    bucket = TokenBucket(rate=0.001, capacity=10)
    bucket.adjust(100)
    assert bucket.tokens == pytest.approx(10, abs=0.01)
    bucket.adjust(-25)
    assert bucket.tokens == pytest.approx(-15, abs=0.01)


# ------------------------------------------------------------------ Limiter: rpm


def test_rpm_limit_spaces_requests() -> None:
    # rpm=1200 is 20 requests a second; burst_s=0.05 gives a bucket of one request.
    limiter = Limiter(LimitConfig(rpm=1200, burst_s=0.05), default_concurrency=64)

    async def one() -> None:
        async with limiter.slot(0):
            pass

    async def scenario() -> float:
        start = time.monotonic()
        await asyncio.gather(*(one() for _ in range(20)))
        return time.monotonic() - start

    # The first goes at once, the other 19 at 20 a second: 0.95 s at least.
    assert asyncio.run(scenario()) >= 0.95 * 0.9


def test_rpm_burst_lets_the_bucket_capacity_through_without_waiting() -> None:
    # rpm=60 is one request a second, but burst_s=10 holds ten requests.
    limiter = Limiter(LimitConfig(rpm=60, burst_s=10), default_concurrency=64)

    async def scenario() -> float:
        start = time.monotonic()
        for _ in range(10):
            async with limiter.slot(0):
                pass
        return time.monotonic() - start

    assert asyncio.run(scenario()) < 0.5


def test_no_limits_configured_means_no_waiting() -> None:
    limiter = Limiter(None, default_concurrency=8)
    assert limiter.concurrency == 8

    async def scenario() -> float:
        start = time.monotonic()
        for _ in range(200):
            async with limiter.slot(1000):
                pass
        return time.monotonic() - start

    assert asyncio.run(scenario()) < 0.5


# ------------------------------------------------------------------ Limiter: tpm


def test_tpm_limit_waits_when_the_token_estimate_exceeds_what_is_left() -> None:
    # tpm=6000 is 100 tokens a second; burst_s=1 holds 100 tokens.
    limiter = Limiter(LimitConfig(tpm=6000, burst_s=1), default_concurrency=64)

    async def scenario() -> tuple[float, float]:
        start = time.monotonic()
        async with limiter.slot(100):
            pass
        first = time.monotonic() - start
        async with limiter.slot(50):  # the bucket is empty: 50 tokens take 0.5 s
            pass
        return first, time.monotonic() - start

    first, total = asyncio.run(scenario())
    assert first < 0.2
    assert total >= 0.5 * 0.9


def test_settle_refunds_overestimated_tokens_so_the_next_request_goes_at_once() -> None:
    limiter = Limiter(LimitConfig(tpm=6000, burst_s=1), default_concurrency=64)

    async def scenario() -> float:
        async with limiter.slot(100):
            pass
        limiter.settle(estimated_tokens=100, actual_tokens=20)  # 80 come back
        start = time.monotonic()
        async with limiter.slot(80):
            pass
        return time.monotonic() - start

    # Without the refund, 80 tokens would take 0.8 s to refill.
    assert asyncio.run(scenario()) < 0.4


def test_settle_charges_underestimated_tokens_so_the_next_request_waits() -> None:
    limiter = Limiter(LimitConfig(tpm=6000, burst_s=1), default_concurrency=64)

    async def scenario() -> float:
        async with limiter.slot(50):
            pass
        limiter.settle(estimated_tokens=50, actual_tokens=100)  # 50 more were used
        start = time.monotonic()
        async with limiter.slot(40):
            pass
        return time.monotonic() - start

    # The bucket is at about 0 after the charge; 40 tokens take 0.4 s to refill.
    # Without the charge 50 tokens would be left and the slot would open at once.
    assert asyncio.run(scenario()) >= 0.4 * 0.85


def test_settle_without_a_tpm_limit_is_harmless() -> None:
    limiter = Limiter(LimitConfig(rpm=60), default_concurrency=4)
    limiter.settle(10, 1000)  # no tpm bucket: nothing to adjust, no error


# ------------------------------------------------------------------ Limiter: concurrency


@pytest.mark.parametrize("cap", [1, 3])
def test_concurrency_cap_is_never_exceeded(cap: int) -> None:
    limiter = Limiter(LimitConfig(concurrency=cap), default_concurrency=64)
    in_flight = 0
    peak = 0

    async def one() -> None:
        nonlocal in_flight, peak
        async with limiter.slot(0):
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.01)
            in_flight -= 1

    async def scenario() -> None:
        await asyncio.gather(*(one() for _ in range(20)))

    asyncio.run(scenario())
    assert peak == cap


def test_concurrency_defaults_to_the_providers_own_default() -> None:
    assert Limiter(LimitConfig(), default_concurrency=7).concurrency == 7
    assert Limiter(LimitConfig(concurrency=2), default_concurrency=7).concurrency == 2


def test_a_slot_is_released_when_the_request_raises() -> None:
    limiter = Limiter(LimitConfig(concurrency=1), default_concurrency=64)

    async def failing() -> None:
        async with limiter.slot(0):
            raise RuntimeError("boom")

    async def scenario() -> None:
        with pytest.raises(RuntimeError):
            await failing()
        await asyncio.wait_for(_enter(limiter), timeout=1.0)

    asyncio.run(scenario())


async def _enter(limiter: Limiter) -> None:
    async with limiter.slot(0):
        pass


# ------------------------------------------------------------------ Limiter: cooldown


def test_cool_down_delays_new_slots() -> None:
    limiter = Limiter(LimitConfig(), default_concurrency=64)

    async def scenario() -> float:
        limiter.cool_down(0.3)
        start = time.monotonic()
        async with limiter.slot(0):
            pass
        return time.monotonic() - start

    assert asyncio.run(scenario()) >= 0.3 * 0.9


def test_cool_down_keeps_the_later_of_two_deadlines() -> None:
    limiter = Limiter(LimitConfig(), default_concurrency=64)

    async def scenario() -> float:
        limiter.cool_down(0.3)
        limiter.cool_down(0.01)  # a shorter Retry-After must not cut the longer one short
        start = time.monotonic()
        async with limiter.slot(0):
            pass
        return time.monotonic() - start

    assert asyncio.run(scenario()) >= 0.3 * 0.9


def test_slots_open_at_once_after_the_cooldown_has_passed() -> None:
    limiter = Limiter(LimitConfig(), default_concurrency=64)

    async def scenario() -> float:
        limiter.cool_down(0.3)
        await asyncio.sleep(0.35)
        start = time.monotonic()
        async with limiter.slot(0):
            pass
        return time.monotonic() - start

    # The cooldown is a deadline, not a delay: once passed, nothing more to wait (not 0.3 s).
    assert asyncio.run(scenario()) < 0.2


# ------------------------------------------------------------------ estimate_tokens


def test_estimate_tokens_counts_four_characters_a_token_plus_four_per_message() -> None:
    messages = [
        {"role": "system", "content": "x" * 40},  # 10 + 4
        {"role": "user", "content": "y" * 9},  # 2 + 4
    ]
    assert estimate_tokens(messages, None) == 20
    assert estimate_tokens(messages, 0) == 20


def test_estimate_tokens_adds_the_output_allowance() -> None:
    messages = [{"role": "user", "content": "z" * 400}]
    assert estimate_tokens(messages, 512) == 100 + 4 + 512


def test_estimate_tokens_of_no_messages_is_the_output_allowance() -> None:
    assert estimate_tokens([], 32) == 32
