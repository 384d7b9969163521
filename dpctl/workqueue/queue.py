"""The work queue: client-go's rate-limiting work queue, written for one asyncio event loop.

Guarantees (client-go ``util/workqueue``):

* Fair: items are handed out in the order they became ready.
* Stingy: an item added many times before a worker takes it is processed once, and an item is
  never processed by two workers at once. An item added while it is being processed runs again
  after ``done``.
* Delayed and rate-limited adds: ``add_after`` and ``add_rate_limited`` schedule an item for
  later; the earliest requested time wins.

Deliberate difference from client-go: an item has **at most one pending run**, either *ready*
(in the FIFO, or marked to run again after ``done``) or *waiting* for a time. A plain ``add``
therefore cancels a waiting entry (a fresh event cuts a backoff short, FMA PR #696), and
``add_after`` on an item that is already ready does nothing (it will run sooner anyway). The
process function decides again on every run, so no run is lost.

Bounds: every item is tracked in at most one FIFO slot, one ready mark, one processing entry
and one timer, so the queue holds O(number of distinct keys) state however many adds arrive.
``max_depth`` caps the number of distinct keys with a pending run: an ``add``/``add_after`` of
a key that is not already tracked (pending or processing) raises :class:`QueueFull` when the cap
is reached. Keys already tracked are always accepted, so retries and re-adds of known work never
fail. Dropping silently would strand an object; raising makes the caller see it (an informer
logs handler errors).

Concurrency: every method except ``get`` and ``shut_down_with_drain`` is synchronous and never
awaits, so no lock is needed on one event loop. Not thread-safe.

Does not own the worker loop (``workers.py``) or retry policy (``ratelimit.py``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from functools import partial
from typing import Generic, TypeVar

from dpctl.workqueue.clock import Clock, MonotonicClock, TimerHandle
from dpctl.workqueue.metrics import NoopQueueMetrics, QueueMetrics, UnfinishedWork
from dpctl.workqueue.ratelimit import RateLimiter, default_controller_rate_limiter

K = TypeVar("K", bound=Hashable)


class QueueShutDown(Exception):
    """``get`` on a queue that is shut down and has nothing left to hand out."""


class QueueFull(Exception):
    """A new key was refused because ``max_depth`` keys already have a pending run."""


class RateLimitingQueue(Generic[K]):
    def __init__(
        self,
        name: str,
        rate_limiter: RateLimiter[K] | None = None,
        metrics: QueueMetrics | None = None,
        clock: Clock | None = None,
        max_depth: int | None = None,
    ) -> None:
        if max_depth is not None and max_depth < 1:
            raise ValueError(f"max_depth must be at least 1, got {max_depth}")
        self.name = name
        self._clock = clock or MonotonicClock()
        self._limiter: RateLimiter[K] = rate_limiter or default_controller_rate_limiter(self._clock)
        self._metrics = metrics or NoopQueueMetrics()
        self._max_depth = max_depth

        # Ready items in hand-out order. Every element is in _ready and not in _processing.
        self._fifo: deque[K] = deque()
        # Items that must run (again): in _fifo, or in _processing and pushed on done().
        # Value: when the item became ready, for the queue-latency metric.
        self._ready: dict[K, float] = {}
        # Items handed out by get() and not yet done(); value: when get() returned them.
        self._processing: dict[K, float] = {}
        # Items scheduled for later: (ready time, timer). Disjoint from _ready.
        self._waiting: dict[K, tuple[float, TimerHandle]] = {}

        self._getters: deque[asyncio.Future[None]] = deque()
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._shutting_down = False
        self._metrics.register(name, self._unfinished_work)

    # -- adding ---------------------------------------------------------------------------

    def add(self, item: K) -> None:
        """Make the item ready now (once, however often it is added); ignored after shutdown."""
        if self._shutting_down:
            return
        self._admit(item)
        self._cancel_waiting(item)
        self._make_ready(item)

    def add_after(self, item: K, delay: float) -> None:
        """Make the item ready after ``delay`` seconds, unless it is due sooner already."""
        if self._shutting_down:
            return
        self._metrics.inc_retries(self.name)
        if delay <= 0:
            self.add(item)
            return
        if item in self._ready:
            return
        ready_at = self._clock.now() + delay
        current = self._waiting.get(item)
        if current is not None and current[0] <= ready_at:
            return
        self._admit(item)
        self._cancel_waiting(item)
        timer = self._clock.call_at(ready_at, partial(self._fire, item))
        self._waiting[item] = (ready_at, timer)

    def add_rate_limited(self, item: K) -> None:
        """Retry the item after the rate limiter's delay (which grows with each retry)."""
        self.add_after(item, self._limiter.when(item))

    def forget(self, item: K) -> None:
        """Reset the item's retry history; the caller still calls ``done``."""
        self._limiter.forget(item)

    def num_requeues(self, item: K) -> int:
        return self._limiter.num_requeues(item)

    # -- processing -----------------------------------------------------------------------

    async def get(self) -> K:
        """The next ready item, now in processing until ``done``; waits while there is none.

        Raises :class:`QueueShutDown` once the queue is shut down and the FIFO is empty.
        """
        while not self._fifo:
            if self._shutting_down:
                raise QueueShutDown(self.name)
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                if getter in self._getters:
                    self._getters.remove(getter)
                # Woken and cancelled in the same tick: pass the wake-up on, or it is lost.
                if not getter.cancelled() and self._fifo:
                    self._wake_one()
                raise
        item = self._fifo.popleft()
        now = self._clock.now()
        ready_since = self._ready.pop(item)
        self._processing[item] = now
        self._metrics.set_depth(self.name, len(self._fifo))
        self._metrics.observe_queue_latency(self.name, now - ready_since)
        return item

    def done(self, item: K) -> None:
        """End processing of the item; if it was added meanwhile, it is queued again now."""
        started = self._processing.pop(item, None)
        if started is None:
            return
        self._metrics.observe_work_duration(self.name, self._clock.now() - started)
        if item in self._ready:
            self._push(item)
        self._resolve_drain_if_idle()

    def __len__(self) -> int:
        """Items ready and not being processed (not those waiting or in processing); informative only."""
        return len(self._fifo)

    # -- shutting down --------------------------------------------------------------------

    def shut_down(self) -> None:
        """Ignore new adds and drop waiting items; workers keep draining the FIFO, then stop."""
        self._shutting_down = True
        for _, timer in self._waiting.values():
            timer.cancel()
        self._waiting.clear()
        while self._getters:
            self._wake_one()
        self._resolve_drain_if_idle()

    async def shut_down_with_drain(self) -> None:
        """Shut down and wait until every ready item has been processed and ``done``.

        Needs running workers, and a processor may hang: bound it with ``asyncio.timeout``.
        """
        self.shut_down()
        if self._idle():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._drain_waiters:
                self._drain_waiters.remove(waiter)

    # -- internals --------------------------------------------------------------------------

    def _admit(self, item: K) -> None:
        if self._max_depth is None or self._tracked(item):
            return
        if len(self._ready) + len(self._waiting) >= self._max_depth:
            raise QueueFull(f"queue {self.name}: {self._max_depth} keys already pending; refused {item!r}")

    def _tracked(self, item: K) -> bool:
        return item in self._ready or item in self._processing or item in self._waiting

    def _cancel_waiting(self, item: K) -> None:
        entry = self._waiting.pop(item, None)
        if entry is not None:
            entry[1].cancel()

    def _fire(self, item: K) -> None:
        if self._waiting.pop(item, None) is not None:
            self._make_ready(item)

    def _make_ready(self, item: K) -> None:
        if item in self._ready:
            return
        self._ready[item] = self._clock.now()
        self._metrics.inc_adds(self.name)
        if item not in self._processing:
            self._push(item)

    def _push(self, item: K) -> None:
        self._fifo.append(item)
        self._metrics.set_depth(self.name, len(self._fifo))
        self._wake_one()

    def _wake_one(self) -> None:
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)
                return

    def _idle(self) -> bool:
        return not self._fifo and not self._processing

    def _resolve_drain_if_idle(self) -> None:
        if not (self._shutting_down and self._idle()):
            return
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    def _unfinished_work(self) -> UnfinishedWork:
        if not self._processing:
            return UnfinishedWork(0.0, 0.0)
        now = self._clock.now()
        ages = [now - started for started in self._processing.values()]
        return UnfinishedWork(sum(ages), max(ages))
