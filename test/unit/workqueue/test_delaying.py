"""Delayed adds, after client-go's delaying_queue_test.go, plus dpctl's one-pending-run rule."""

from __future__ import annotations

import pytest

from dpctl.workqueue import FakeClock, ItemExponentialFailureRateLimiter, RateLimitingQueue


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def q(clock: FakeClock) -> RateLimitingQueue[str]:
    return RateLimitingQueue("delay", rate_limiter=ItemExponentialFailureRateLimiter(1.0, 60.0), clock=clock)


async def test_simple_add_after(q: RateLimitingQueue[str], clock: FakeClock) -> None:
    q.add_after("a", 0.05)
    assert len(q) == 0
    clock.advance(0.049)
    assert len(q) == 0
    clock.advance(0.001)
    assert len(q) == 1
    assert await q.get() == "a"


async def test_zero_or_negative_delay_is_an_immediate_add(q: RateLimitingQueue[str]) -> None:
    q.add_after("a", 0)
    q.add_after("b", -1)
    assert len(q) == 2


async def test_dedup_earliest_ready_time_wins(q: RateLimitingQueue[str], clock: FakeClock) -> None:
    q.add_after("a", 5)
    q.add_after("a", 1)
    q.add_after("a", 3)
    clock.advance(1)
    assert len(q) == 1
    assert await q.get() == "a"
    q.done("a")
    clock.advance(10)
    assert len(q) == 0, "the later requests were merged into the earliest"
    assert clock.pending_timers() == 0


async def test_items_fire_in_ready_time_order(q: RateLimitingQueue[str], clock: FakeClock) -> None:
    q.add_after("late", 2)
    q.add_after("early", 1)
    clock.advance(3)
    assert [await q.get(), await q.get()] == ["early", "late"]


async def test_fresh_add_cuts_a_backoff_short(q: RateLimitingQueue[str], clock: FakeClock) -> None:
    q.add_after("a", 30)
    q.add("a")
    assert len(q) == 1
    assert await q.get() == "a"
    q.done("a")
    clock.advance(60)
    assert len(q) == 0, "the cancelled delayed entry must not fire"
    assert clock.pending_timers() == 0


async def test_add_after_while_ready_does_nothing(q: RateLimitingQueue[str], clock: FakeClock) -> None:
    q.add("a")
    q.add_after("a", 5)
    assert clock.pending_timers() == 0
    assert await q.get() == "a"
    q.done("a")
    clock.advance(10)
    assert len(q) == 0


async def test_add_after_while_processing_runs_later(q: RateLimitingQueue[str], clock: FakeClock) -> None:
    q.add("a")
    item = await q.get()
    q.add_after(item, 5)
    q.done(item)
    assert len(q) == 0
    clock.advance(5)
    assert await q.get() == "a"


async def test_delayed_item_fires_during_processing_and_waits_for_done(
    q: RateLimitingQueue[str], clock: FakeClock
) -> None:
    q.add("a")
    item = await q.get()
    q.add_after(item, 1)
    clock.advance(1)
    assert len(q) == 0
    q.done(item)
    assert len(q) == 1


async def test_shutdown_drops_waiting_items(q: RateLimitingQueue[str], clock: FakeClock) -> None:
    q.add_after("a", 1)
    q.shut_down()
    assert clock.pending_timers() == 0
    clock.advance(2)
    assert len(q) == 0


async def test_add_rate_limited_uses_the_limiter(q: RateLimitingQueue[str], clock: FakeClock) -> None:
    q.add_rate_limited("a")  # 1 s
    assert q.num_requeues("a") == 1
    clock.advance(1)
    item = await q.get()
    q.add_rate_limited(item)  # 2 s
    q.done(item)
    clock.advance(1.5)
    assert len(q) == 0
    clock.advance(0.5)
    assert len(q) == 1
    q.forget("a")
    assert q.num_requeues("a") == 0


async def test_real_clock_add_after_fires_on_the_loop() -> None:
    q: RateLimitingQueue[str] = RateLimitingQueue("real")
    q.add_after("a", 0.001)
    assert await q.get() == "a"
