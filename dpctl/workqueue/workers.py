"""The worker loop: take an item, process it, apply the outcome, mark it done.

Owns :func:`run_workers` (client-go sample-controller's ``runWorker``/``processNextWorkItem``).
An exception from the process function is a bug or an unforeseen failure: it is logged with its
traceback and retried with backoff, and never ends the worker. Cancelling ``run_workers``
cancels every worker; the item in hand is marked done and not retried (shutdown: the next start
relists and sees everything again). Does not own the queue or what processing means.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar, assert_never

from dpctl.workqueue.outcome import Done, Outcome, RequeueAfter, Retry
from dpctl.workqueue.queue import QueueShutDown, RateLimitingQueue

K = TypeVar("K", bound=Hashable)

Logger = logging.Logger | logging.LoggerAdapter[Any]
ProcessFn = Callable[[K], Awaitable[Outcome]]


async def run_workers(queue: RateLimitingQueue[K], process: ProcessFn[K], n: int, logger: Logger) -> None:
    """Run ``n`` workers until the queue is shut down and drained (or until cancelled)."""
    if n < 1:
        raise ValueError(f"need at least one worker, got {n}")
    async with asyncio.TaskGroup() as group:
        for i in range(n):
            group.create_task(_work(queue, process, logger), name=f"{queue.name}-worker-{i}")


async def _work(queue: RateLimitingQueue[K], process: ProcessFn[K], logger: Logger) -> None:
    while True:
        try:
            item = await queue.get()
        except QueueShutDown:
            return
        try:
            outcome = await _process(process, item, logger)
            _apply(queue, item, outcome, logger)
        finally:
            queue.done(item)


async def _process(process: ProcessFn[K], item: K, logger: Logger) -> Outcome:
    try:
        return await process(item)
    except Exception as exc:  # any failure of one item must not end the worker
        logger.exception("Processing %r failed unexpectedly, will retry", item)
        return Retry(f"unexpected error: {exc!r}")


def _apply(queue: RateLimitingQueue[K], item: K, outcome: Outcome, logger: Logger) -> None:
    try:
        match outcome:
            case Done():
                queue.forget(item)
            case Retry(reason=reason):
                logger.info(
                    "Processing %r suffered a transient error, will retry (retry %d): %s",
                    item,
                    queue.num_requeues(item) + 1,
                    reason,
                )
                queue.add_rate_limited(item)
            case RequeueAfter(seconds=seconds, reason=reason):
                logger.debug("Will process %r again in %.3gs: %s", item, seconds, reason)
                queue.forget(item)
                queue.add_after(item, seconds)
            case _:
                assert_never(outcome)
    except Exception:  # e.g. a wrong return type: keep working
        logger.exception("Applying outcome %r for %r failed", outcome, item)
