"""The client-side token bucket, on an injected clock: no test here waits on a real one."""

from __future__ import annotations

import pytest

from dpctl.kube.ratelimit import TokenBucket
from helpers import ManualClock


def test_a_burst_up_to_the_burst_size_never_waits() -> None:
    bucket = TokenBucket(qps=10, burst=5, clock=ManualClock())
    assert [bucket.reserve() for _ in range(5)] == [0.0] * 5


def test_past_the_burst_each_request_queues_one_token_behind_the_last() -> None:
    bucket = TokenBucket(qps=10, burst=2, clock=ManualClock())
    delays = [bucket.reserve() for _ in range(5)]
    assert delays[:2] == [0.0, 0.0]
    assert delays[2:] == pytest.approx([0.1, 0.2, 0.3])


def test_tokens_refill_at_qps_and_never_beyond_the_burst() -> None:
    clock = ManualClock()
    bucket = TokenBucket(qps=4, burst=3, clock=clock)
    for _ in range(3):
        bucket.reserve()
    clock.now += 0.25  # one token back (times that binary fractions hold exactly)
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == pytest.approx(0.25)
    clock.now += 3600  # idle for long: still only `burst` saved up
    assert [bucket.reserve() for _ in range(3)] == [0.0] * 3
    assert bucket.reserve() == pytest.approx(0.25)


def test_a_debt_is_paid_off_by_elapsed_time() -> None:
    clock = ManualClock()
    bucket = TokenBucket(qps=4, burst=1, clock=clock)
    bucket.reserve()
    assert bucket.reserve() == pytest.approx(0.25)
    clock.now += 0.25  # the queued request's turn has come: the next waits one token more
    assert bucket.reserve() == pytest.approx(0.25)


async def test_a_wait_is_reported_with_its_length_and_no_wait_is_not() -> None:
    waits: list[float] = []
    bucket = TokenBucket(qps=1000, burst=1, clock=ManualClock(), on_wait=waits.append)
    await bucket.wait()
    assert waits == []
    await bucket.wait()  # the clock stands still: one token's time, 1 ms
    assert waits == pytest.approx([0.001])


@pytest.mark.parametrize(("qps", "burst"), [(0, 10), (-1, 10), (10, 0)])
def test_a_bucket_that_could_never_pass_a_request_is_refused(qps: float, burst: int) -> None:
    with pytest.raises(ValueError, match="qps > 0 and burst >= 1"):
        TokenBucket(qps, burst)
