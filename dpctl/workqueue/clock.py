"""Time for the work queue: reading the clock and running a callback at a given time.

Owns the :class:`Clock` seam that the queue and the rate limiters read time through, the real
clock (``time.monotonic`` plus the running event loop's timers) and a :class:`FakeClock` that
tests step by hand. Does not own any queue logic.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class TimerHandle(Protocol):
    """A scheduled callback; ``asyncio.TimerHandle`` is one."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic seconds, and callbacks at a point on that same scale."""

    def now(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle: ...


class MonotonicClock:
    """``time.monotonic`` and the running loop's timers.

    ``now`` works without an event loop (a metrics scrape may come from another thread);
    ``call_at`` needs the running loop. The loop's own clock may differ from ``time.monotonic``
    (uvloop caches it per iteration, in milliseconds), so a deadline is turned into a delay here.
    """

    def now(self) -> float:
        return time.monotonic()

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(max(0.0, when - time.monotonic()), callback)


class _FakeTimer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that moves only when :meth:`advance` is called; due callbacks run inside it.

    Callbacks run synchronously, in deadline order, each with ``now()`` set to its deadline.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        # (deadline, sequence for FIFO among equal deadlines, timer, callback)
        self._timers: list[tuple[float, int, _FakeTimer, Callable[[], None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        timer = _FakeTimer()
        heapq.heappush(self._timers, (when, next(self._seq), timer, callback))
        return timer

    def advance(self, seconds: float) -> None:
        target = self._now + seconds
        while self._timers and self._timers[0][0] <= target:
            when, _, timer, callback = heapq.heappop(self._timers)
            if not timer.cancelled:
                self._now = max(self._now, when)
                callback()
        self._now = target

    def pending_timers(self) -> int:
        """Timers that are scheduled and not cancelled (lets tests check nothing leaks)."""
        return sum(1 for _, _, timer, _ in self._timers if not timer.cancelled)
