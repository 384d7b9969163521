"""Backoff between list/watch failures: exponential, jittered, forgotten after sustained health.

Owns the delay policy of client-go's reflector: 0.8 s doubling to a 30 s cap, reset once two
minutes pass without a failure (so a healthy informer that fails once waits under a second).
Jitter spreads many informers (and many controller replicas) so they do not hammer a
recovering API server in step. Does not own what is retried.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

INITIAL_S = 0.8
CAP_S = 30.0
RESET_AFTER_S = 120.0
JITTER = 0.2  # each delay is drawn from [1 - JITTER, 1] x the nominal delay

_MAX_EXPONENT = 62  # far beyond any cap; keeps 2**n a small number


class Backoff:
    def __init__(
        self,
        initial: float = INITIAL_S,
        cap: float = CAP_S,
        reset_after: float = RESET_AFTER_S,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._initial = initial
        self._cap = cap
        self._reset_after = reset_after
        self._sleep = sleep
        self._now = now
        self._rand = rand
        self._failures = 0
        self._last_failure: float | None = None

    def next_delay(self) -> float:
        """Count one more failure and return how long to wait before the next try."""
        now = self._now()
        if self._last_failure is not None and now - self._last_failure >= self._reset_after:
            self._failures = 0
        self._last_failure = now
        nominal = min(self._cap, self._initial * 2.0 ** min(self._failures, _MAX_EXPONENT))
        self._failures += 1
        return nominal * (1.0 - JITTER * self._rand())

    async def sleep(self, delay: float) -> None:
        await self._sleep(delay)
