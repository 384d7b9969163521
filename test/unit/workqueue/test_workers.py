"""The worker loop: outcome mapping, exceptions, shutdown and cancellation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from dpctl.log import TRACE
from dpctl.workqueue import (
    Done,
    FakeClock,
    ItemExponentialFailureRateLimiter,
    Outcome,
    RateLimitingQueue,
    RequeueAfter,
    Retry,
    run_workers,
)

LOG = logging.getLogger("test.workers")


class Harness:
    """A queue on a fake clock, a scripted process function, and a record of what ran."""

    def __init__(self, script: Callable[[str, int], Outcome]) -> None:
        self.clock = FakeClock()
        self.queue: RateLimitingQueue[str] = RateLimitingQueue(
            "workers", rate_limiter=ItemExponentialFailureRateLimiter(1.0, 60.0), clock=self.clock
        )
        self.script = script
        self.runs: asyncio.Queue[str] = asyncio.Queue()
        self.count: dict[str, int] = {}

    async def process(self, item: str) -> Outcome:
        n = self.count.get(item, 0)
        self.count[item] = n + 1
        try:
            return self.script(item, n)
        finally:
            self.runs.put_nowait(item)

    async def next_run(self) -> str:
        item = await self.runs.get()
        # Let the worker apply the outcome and call done().
        for _ in range(3):
            await asyncio.sleep(0)
        return item


def raise_error(item: str, n: int) -> Outcome:
    raise RuntimeError("boom")


@pytest.mark.parametrize(
    ("script", "requeues", "waiting_for"),
    [
        pytest.param(lambda i, n: Done(), 0, None, id="done-forgets"),
        pytest.param(lambda i, n: Retry("flaky"), 2, 2.0, id="retry-escalates-backoff"),
        pytest.param(lambda i, n: RequeueAfter(7.0, "loading"), 0, 7.0, id="requeue-after-fixed"),
        pytest.param(raise_error, 2, 2.0, id="exception-is-retry"),
    ],
)
async def test_outcome_mapping(
    script: Callable[[str, int], Outcome], requeues: int, waiting_for: float | None
) -> None:
    h = Harness(script)
    h.queue.add_rate_limited("a")  # one earlier failure: Done and RequeueAfter must clear it
    h.queue.add("a")  # a fresh event: runs now
    workers = asyncio.create_task(run_workers(h.queue, h.process, 1, LOG))
    assert await h.next_run() == "a"
    assert h.queue.num_requeues("a") == requeues
    if waiting_for is not None:
        h.clock.advance(waiting_for - 0.001)
        assert len(h.queue) == 0
        h.clock.advance(0.001)
        assert await h.next_run() == "a"
    h.queue.shut_down()
    await workers


async def test_retry_escalates_and_done_resets() -> None:
    h = Harness(lambda item, n: Retry("again") if n < 3 else Done())
    h.queue.add("a")
    workers = asyncio.create_task(run_workers(h.queue, h.process, 2, LOG))
    await h.next_run()
    for delay in (1.0, 2.0, 4.0):
        h.clock.advance(delay)
        await h.next_run()
    assert h.queue.num_requeues("a") == 0
    h.queue.shut_down()
    await workers


async def test_requeue_after_does_not_escalate_backoff() -> None:
    h = Harness(lambda item, n: Retry("fail") if n == 0 else RequeueAfter(5.0, "poll"))
    h.queue.add("a")
    workers = asyncio.create_task(run_workers(h.queue, h.process, 1, LOG))
    await h.next_run()
    assert h.queue.num_requeues("a") == 1
    h.clock.advance(1.0)
    await h.next_run()
    for _ in range(3):
        assert h.queue.num_requeues("a") == 0
        h.clock.advance(5.0)
        await h.next_run()
    h.queue.shut_down()
    await workers


async def test_exception_is_logged_with_traceback_and_worker_survives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness(lambda item, n: raise_error(item, n) if item == "bad" else Done())
    h.queue.add("bad")
    h.queue.add("good")
    workers = asyncio.create_task(run_workers(h.queue, h.process, 1, LOG))
    assert {await h.next_run(), await h.next_run()} == {"bad", "good"}
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert "'bad'" in errors[0].getMessage()
    h.queue.shut_down()
    await workers


async def test_workers_stop_after_draining_on_shutdown() -> None:
    h = Harness(lambda item, n: Done())
    for key in "abc":
        h.queue.add(key)
    h.queue.shut_down()
    await run_workers(h.queue, h.process, 2, LOG)
    assert sorted(h.count) == ["a", "b", "c"]


async def test_cancelling_the_workers_marks_the_item_done() -> None:
    started = asyncio.Event()
    clock = FakeClock()
    queue: RateLimitingQueue[str] = RateLimitingQueue("cancel", clock=clock)

    async def hang(item: str) -> Outcome:
        started.set()
        await asyncio.Event().wait()
        return Done()

    queue.add("a")
    workers = asyncio.create_task(run_workers(queue, hang, 1, LOG))
    await started.wait()
    workers.cancel()
    with pytest.raises(asyncio.CancelledError):
        await workers
    await queue.shut_down_with_drain()  # returns: nothing left in processing


async def test_run_workers_needs_a_worker() -> None:
    queue: RateLimitingQueue[str] = RateLimitingQueue("none", clock=FakeClock())
    with pytest.raises(ValueError, match="at least one"):
        await run_workers(queue, lambda item: asyncio.sleep(0, Done()), 0, LOG)


async def test_log_lines_name_items_as_the_caller_describes_them(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOG.name)
    h = Harness(lambda item, n: Retry("refused") if n == 0 else raise_error(item, n))
    h.queue.add("a")
    workers = asyncio.create_task(run_workers(h.queue, h.process, 1, LOG, lambda item: f"ns/pod-{item}"))
    await h.next_run()
    h.clock.advance(5.0)
    await h.next_run()
    h.queue.shut_down()
    await workers
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "Processing ns/pod-a suffered a transient error, will retry (retry 1): refused"
    assert messages[1].startswith("Processing ns/pod-a failed unexpectedly")


async def test_an_expected_retry_is_logged_only_at_trace_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(1, logger=LOG.name)
    h = Harness(
        lambda item, n: Retry("connection refused", expected=True) if n == 0 else Retry("still refused")
    )
    h.queue.add("a")
    workers = asyncio.create_task(run_workers(h.queue, h.process, 1, LOG))
    await h.next_run()
    h.clock.advance(5.0)
    await h.next_run()
    h.queue.shut_down()
    await workers
    assert [r.levelno for r in caplog.records] == [TRACE, logging.INFO]
    assert logging.DEBUG > TRACE  # hidden at the chart's -v 5 (DEBUG); shown from -v 7
