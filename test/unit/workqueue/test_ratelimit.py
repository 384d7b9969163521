"""Retry policies, after client-go's default_rate_limiters_test.go."""

from __future__ import annotations

import pytest

from dpctl.workqueue import (
    BucketRateLimiter,
    FakeClock,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    default_controller_rate_limiter,
)


def test_exponential_sequence_doubles_from_5ms() -> None:
    limiter: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter(0.005, 1000.0)
    assert [limiter.when("a") for _ in range(5)] == pytest.approx([0.005, 0.01, 0.02, 0.04, 0.08])
    assert limiter.num_requeues("a") == 5
    assert limiter.when("b") == pytest.approx(0.005), "items are tracked separately"


def test_exponential_is_capped() -> None:
    limiter: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter(0.005, 20.0)
    delays = [limiter.when("a") for _ in range(15)]
    assert delays[11] == pytest.approx(10.24)
    assert delays[12:] == [20.0, 20.0, 20.0]


def test_exponential_survives_huge_failure_counts() -> None:
    limiter: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter(1.0, 30.0)
    for _ in range(3000):
        delay = limiter.when("a")
    assert delay == 30.0
    assert limiter.num_requeues("a") == 3000


def test_forget_resets_the_backoff() -> None:
    limiter: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter(0.005, 20.0)
    limiter.when("a")
    limiter.when("a")
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
    assert limiter.when("a") == pytest.approx(0.005)


def test_exponential_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="base"):
        ItemExponentialFailureRateLimiter(1.0, 0.5)


def test_bucket_spends_the_burst_then_spaces_out_at_qps() -> None:
    clock = FakeClock()
    bucket: BucketRateLimiter[str] = BucketRateLimiter(qps=10, burst=3, clock=clock)
    assert [bucket.when("x") for _ in range(3)] == [0.0, 0.0, 0.0]
    # Every call takes a token at once, so waiting callers queue up behind each other.
    assert [bucket.when("x") for _ in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    clock.advance(0.3)  # refills 3 tokens: balance back to zero
    assert bucket.when("x") == pytest.approx(0.1)
    clock.advance(10)  # refill is capped at the burst
    assert [bucket.when("x") for _ in range(4)] == pytest.approx([0.0, 0.0, 0.0, 0.1])


def test_bucket_keeps_nothing_per_item() -> None:
    bucket: BucketRateLimiter[str] = BucketRateLimiter(qps=1, burst=1, clock=FakeClock())
    bucket.when("a")
    bucket.forget("a")
    assert bucket.num_requeues("a") == 0
    assert bucket.when("b") == pytest.approx(1.0), "forget does not return tokens"


def test_max_of_takes_the_longest_wait_and_charges_every_limiter() -> None:
    clock = FakeClock()
    exponential: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter(1.0, 100.0)
    bucket: BucketRateLimiter[str] = BucketRateLimiter(qps=1, burst=2, clock=clock)
    limiter = MaxOfRateLimiter(exponential, bucket)
    assert limiter.when("a") == 1.0  # exponential 1, bucket 0
    assert limiter.when("a") == 2.0  # exponential 2, bucket 0
    assert limiter.when("b") == 1.0  # exponential 1, bucket 1 (charged on every call)
    assert limiter.num_requeues("a") == 2
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
    assert limiter.when("a") == 2.0  # exponential 1, bucket 2


def test_default_controller_limiter_uses_dpctl_numbers() -> None:
    limiter: MaxOfRateLimiter[str] = default_controller_rate_limiter(FakeClock())
    delays = [limiter.when("a") for _ in range(20)]
    assert delays[:3] == pytest.approx([0.005, 0.01, 0.02])
    assert delays[-1] == 20.0
    # 20 tokens used of a burst of 100; the next 80 are free, then 10 per second.
    assert max(limiter.when(f"k{i}") for i in range(80)) == pytest.approx(0.005)
    assert limiter.when("k-last") == pytest.approx(0.1)
