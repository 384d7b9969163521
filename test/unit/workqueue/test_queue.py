"""Queue semantics, after client-go's queue_test.go: dedup, add-while-processing, drain, shutdown."""

from __future__ import annotations

import asyncio
import random

import pytest

from dpctl.workqueue import FakeClock, QueueFull, QueueShutDown, RateLimitingQueue, UnfinishedWork


def make_queue(max_depth: int | None = None) -> RateLimitingQueue[str]:
    return RateLimitingQueue("test", clock=FakeClock(), max_depth=max_depth)


async def let_others_run() -> None:
    """Yield to the event loop a few times (scheduling, not waiting for time)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_basic_add_get_done() -> None:
    q = make_queue()
    q.add("a")
    q.add("b")
    assert len(q) == 2
    assert await q.get() == "a"
    assert await q.get() == "b"
    assert len(q) == 0
    q.done("a")
    q.done("b")
    assert len(q) == 0


async def test_collapse_duplicate_adds() -> None:
    q = make_queue()
    q.add("a")
    q.add("a")
    assert len(q) == 1
    assert await q.get() == "a"
    q.done("a")
    assert len(q) == 0


async def test_collapse_while_processing() -> None:
    q = make_queue()
    q.add("a")
    assert await q.get() == "a"
    q.add("a")
    q.add("a")
    assert len(q) == 0, "an item being processed is not handed out again before done"
    q.done("a")
    assert len(q) == 1
    assert await q.get() == "a"
    q.done("a")
    assert len(q) == 0


async def test_add_while_processing_runs_again_after_done() -> None:
    q = make_queue()
    q.add("a")
    item = await q.get()
    getter = asyncio.create_task(q.get())
    q.add("a")
    await let_others_run()
    assert not getter.done(), "the re-added item must wait for done()"
    q.done(item)
    assert await getter == "a"


async def test_fifo_order_is_fair() -> None:
    q = make_queue()
    for key in ["c", "a", "b", "a"]:
        q.add(key)
    assert [await q.get() for _ in range(3)] == ["c", "a", "b"]


async def test_len_counts_ready_items_only() -> None:
    q = make_queue()
    q.add("a")
    q.add("b")
    await q.get()
    q.add_after("c", 5)
    assert len(q) == 1


async def test_reinsert_after_done() -> None:
    q = make_queue()
    q.add("a")
    item = await q.get()
    q.add(item)
    q.done(item)
    assert await q.get() == "a"
    q.done("a")
    assert len(q) == 0


async def test_done_of_unknown_item_is_ignored() -> None:
    q = make_queue()
    q.done("never-added")
    q.add("a")
    assert len(q) == 1


async def test_get_waits_until_an_item_is_added() -> None:
    q = make_queue()
    getter = asyncio.create_task(q.get())
    await let_others_run()
    assert not getter.done()
    q.add("a")
    assert await getter == "a"


async def test_concurrent_workers_never_share_a_key() -> None:
    q = make_queue()
    keys = [f"k{i}" for i in range(10)]
    in_flight: set[str] = set()
    processed_after_last_add: dict[str, bool] = {}
    rng = random.Random(7)

    async def worker() -> None:
        while True:
            try:
                key = await q.get()
            except QueueShutDown:
                return
            assert key not in in_flight, f"{key} handed to two workers at once"
            in_flight.add(key)
            processed_after_last_add[key] = True
            for _ in range(rng.randrange(3)):
                await asyncio.sleep(0)
            in_flight.discard(key)
            q.done(key)

    async def producer() -> None:
        for _ in range(200):
            key = rng.choice(keys)
            processed_after_last_add[key] = False
            q.add(key)
            if rng.random() < 0.5:
                await asyncio.sleep(0)

    workers = [asyncio.create_task(worker()) for _ in range(5)]
    await asyncio.gather(*(producer() for _ in range(3)))
    await q.shut_down_with_drain()
    await asyncio.gather(*workers)
    assert all(processed_after_last_add.values()), "every add must be followed by a run"


async def test_shutdown_lets_workers_drain_then_stops_them() -> None:
    q = make_queue()
    q.add("a")
    q.add("b")
    q.shut_down()
    assert await q.get() == "a"
    assert await q.get() == "b"
    with pytest.raises(QueueShutDown):
        await q.get()


async def test_shutdown_wakes_waiting_getters() -> None:
    q = make_queue()
    getters = [asyncio.create_task(q.get()) for _ in range(3)]
    await let_others_run()
    q.shut_down()
    for getter in getters:
        with pytest.raises(QueueShutDown):
            await getter


async def test_add_after_shutdown_is_ignored() -> None:
    q = make_queue()
    q.shut_down()
    q.add("a")
    q.add_after("b", 1)
    q.add_rate_limited("c")
    assert len(q) == 0
    with pytest.raises(QueueShutDown):
        await q.get()


async def test_item_dirty_during_shutdown_is_still_handed_out() -> None:
    q = make_queue()
    q.add("a")
    await q.get()
    q.add("a")
    q.shut_down()
    q.done("a")
    assert await q.get() == "a"


async def test_shut_down_with_drain_waits_for_processing() -> None:
    q = make_queue()
    q.add("a")
    q.add("b")
    first = await q.get()
    drain = asyncio.create_task(q.shut_down_with_drain())
    await let_others_run()
    assert not drain.done(), "a is still being processed and b is still queued"
    q.done(first)
    second = await q.get()
    await let_others_run()
    assert not drain.done()
    q.done(second)
    await drain


async def test_shut_down_with_drain_returns_at_once_when_idle() -> None:
    q = make_queue()
    await q.shut_down_with_drain()


async def test_cancelled_getter_passes_its_wake_up_on() -> None:
    q = make_queue()
    first = asyncio.create_task(q.get())
    second = asyncio.create_task(q.get())
    await let_others_run()
    q.add("a")  # wakes `first`...
    first.cancel()  # ...which is cancelled before it runs
    assert await second == "a"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_max_depth_refuses_new_keys_but_accepts_known_ones() -> None:
    q = make_queue(max_depth=2)
    q.add("a")
    q.add_after("b", 5)
    with pytest.raises(QueueFull):
        q.add("c")
    with pytest.raises(QueueFull):
        q.add_after("c", 1)
    q.add("a")
    q.add("b")  # known: moves from waiting to ready
    item = await q.get()
    q.add_rate_limited(item)  # known (processing), even though the queue is full
    q.done(item)
    assert len(q) == 1


async def test_max_depth_frees_up_when_items_finish() -> None:
    q = make_queue(max_depth=1)
    q.add("a")
    item = await q.get()
    q.add("b")
    q.done(item)
    assert await q.get() == "b"


class RecordingMetrics:
    def __init__(self) -> None:
        self.depths: list[int] = []
        self.adds = 0
        self.latencies: list[float] = []
        self.durations: list[float] = []
        self.retries = 0
        self.probe: object = None

    def register(self, queue: str, unfinished_work: object) -> None:
        self.probe = unfinished_work

    def set_depth(self, queue: str, depth: int) -> None:
        self.depths.append(depth)

    def inc_adds(self, queue: str) -> None:
        self.adds += 1

    def observe_queue_latency(self, queue: str, seconds: float) -> None:
        self.latencies.append(seconds)

    def observe_work_duration(self, queue: str, seconds: float) -> None:
        self.durations.append(seconds)

    def inc_retries(self, queue: str) -> None:
        self.retries += 1


async def test_metrics_are_reported() -> None:
    clock = FakeClock()
    metrics = RecordingMetrics()
    q: RateLimitingQueue[str] = RateLimitingQueue("m", clock=clock, metrics=metrics)
    q.add("a")
    q.add("a")
    clock.advance(2)
    item = await q.get()
    clock.advance(3)
    assert callable(metrics.probe)
    assert metrics.probe() == UnfinishedWork(3.0, 3.0)
    q.add_after("b", 1)
    q.done(item)
    assert metrics.adds == 1
    assert metrics.depths == [1, 0]
    assert metrics.latencies == [2.0]
    assert metrics.durations == [3.0]
    assert metrics.retries == 1
    assert metrics.probe() == UnfinishedWork(0.0, 0.0)
