"""The worker loop: take an item, process it, apply the outcome, mark it done.

Owns :func:`run_workers` (client-go sample-controller's ``runWorker``/``processNextWorkItem``).
An exception from the process function is a bug or an unforeseen failure: it is logged with its
traceback and retried with backoff, and never ends the worker. Log lines name an item by the
caller's ``describe`` (a controller names the object, e.g. ``namespace/name``), never by its repr. Cancelling ``run_workers``
cancels every worker; the item in hand is marked done and not retried (shutdown: the next start
relists and sees everything again). Does not own the queue or what processing means.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar, assert_never

from dpctl.log import TRACE
from dpctl.workqueue.outcome import Done, Outcome, RequeueAfter, Retry
from dpctl.workqueue.queue import QueueShutDown, RateLimitingQueue

K = TypeVar("K", bound=Hashable)

Logger = logging.Logger | logging.LoggerAdapter[Any]
ProcessFn = Callable[[K], Awaitable[Outcome]]
DescribeFn = Callable[[K], str]


async def run_workers(
    queue: RateLimitingQueue[K], process: ProcessFn[K], n: int, logger: Logger, describe: DescribeFn[K] = repr
) -> None:
    """Run ``n`` workers until the queue is shut down and drained (or until cancelled)."""
    if n < 1:
        raise ValueError(f"need at least one worker, got {n}")
    async with asyncio.TaskGroup() as group:
        for i in range(n):
            group.create_task(_work(queue, process, logger, describe), name=f"{queue.name}-worker-{i}")


async def _work(
    queue: RateLimitingQueue[K], process: ProcessFn[K], logger: Logger, describe: DescribeFn[K]
) -> None:
    while True:
        try:
            item = await queue.get()
        except QueueShutDown:
            return
        try:
            outcome = await _process(process, item, logger, describe)
            _apply(queue, item, outcome, logger, describe)
        finally:
            queue.done(item)


async def _process(process: ProcessFn[K], item: K, logger: Logger, describe: DescribeFn[K]) -> Outcome:
    try:
        return await process(item)
    except Exception as exc:  # any failure of one item must not end the worker
        logger.exception("Processing %s failed unexpectedly, will retry", _named(describe, item))
        return Retry(f"unexpected error: {exc!r}")


def _apply(
    queue: RateLimitingQueue[K], item: K, outcome: Outcome, logger: Logger, describe: DescribeFn[K]
) -> None:
    try:
        match outcome:
            case Done():
                queue.forget(item)
            case Retry(reason=reason, expected=expected):
                logger.log(
                    TRACE if expected else logging.INFO,
                    "Processing %s suffered a transient error, will retry (retry %d): %s",
                    _named(describe, item),
                    queue.num_requeues(item) + 1,
                    reason,
                )
                queue.add_rate_limited(item)
            case RequeueAfter(seconds=seconds, reason=reason):
                logger.debug("Will process %s again in %.3gs: %s", _named(describe, item), seconds, reason)
                queue.forget(item)
                queue.add_after(item, seconds)
            case _:
                assert_never(outcome)
    except Exception:  # e.g. a wrong return type: keep working
        logger.exception("Applying outcome %r for %s failed", outcome, _named(describe, item))


def _named(describe: DescribeFn[K], item: K) -> str:
    """``describe(item)``, or its repr if describing fails: a log line must not fail."""
    try:
        return describe(item)
    except Exception:
        return repr(item)
