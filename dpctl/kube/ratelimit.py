"""The client-side limit on calls to the API server: a token bucket, as client-go's.

A controller with no limit of its own lets a burst of work become a burst of requests (API
Priority and Fairness then sheds them, late and as 429s); one with too low a limit queues its
own actuations behind it, as client-go's 5 requests/s default did to the Go original. Tokens
refill at ``qps`` up to ``burst``; a call that finds none waits for its turn.

Owns: the bucket and the wait. :meth:`TokenBucket.reserve` takes a token and says how long the
caller must wait for it, so the order of callers is the order they reserved in (no wake-up race)
and the arithmetic is tested with an injected clock. Does not own what is sent
(:mod:`dpctl.kube.client`) nor the metric (its ``on_wait`` observer).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    """``qps`` tokens a second, at most ``burst`` saved up; one token per request."""

    def __init__(
        self,
        qps: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs qps > 0 and burst >= 1, not {qps} and {burst}")
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._on_wait = on_wait
        self._tokens = float(burst)
        self._last = clock()

    def reserve(self) -> float:
        """Take a token, and return the seconds until it is due (0 when one was saved up).

        The balance may go below zero: each reservation made while the bucket is empty queues
        one token's time (``1/qps``) behind the one before, as Go's ``rate.Limiter`` does.
        """
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
        self._last = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    async def wait(self) -> None:
        """Wait for a token; the time waited (when any) goes to ``on_wait``."""
        delay = self.reserve()
        if delay <= 0:
            return
        if self._on_wait is not None:
            self._on_wait(delay)
        await asyncio.sleep(delay)
