"""Retry policies: how long an item waits before its next try.

Owns the :class:`RateLimiter` protocol and the three policies client-go's controllers use
(per-item exponential failure backoff, an overall token bucket, and the maximum of several),
plus dpctl's default combination. A limiter only answers "how long"; the queue does the waiting
and the caller decides whether to retry at all (``add_rate_limited``) or to stop (``forget``).
Does not own the queue.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from dpctl.workqueue.clock import Clock, MonotonicClock

K = TypeVar("K")
K_contra = TypeVar("K_contra", contravariant=True)

# Per-item backoff: 5 ms, 10 ms, 20 ms, ... as in client-go, but capped at 20 s instead of
# 1000 s: a GPU server that failed to wake should be retried within seconds, not quarter-hours
# (upstream lesson, FMA PR #626).
DEFAULT_BASE_DELAY_S = 0.005
DEFAULT_MAX_DELAY_S = 20.0
# Overall retry rate over all items (client-go's default): bounds the load a storm of failures
# puts on the API server and the pods, without slowing a single item's retries.
DEFAULT_QPS = 10.0
DEFAULT_BURST = 100

# 2.0**1023 is the largest finite power of two; beyond it the float would overflow.
_MAX_EXPONENT = 1023


class RateLimiter(Protocol[K_contra]):
    def when(self, item: K_contra) -> float:
        """Seconds to wait before the item's next try; counts as one more try."""
        ...

    def forget(self, item: K_contra) -> None:
        """Stop tracking the item: its next ``when`` starts from scratch."""
        ...

    def num_requeues(self, item: K_contra) -> int:
        """How many times ``when`` was asked for this item since it was last forgotten."""
        ...


class ItemExponentialFailureRateLimiter(Generic[K]):
    """``base * 2**n`` for the item's n-th consecutive failure, capped at ``cap``.

    Memory: one counter per item that failed and was not yet forgotten.
    """

    def __init__(self, base: float, cap: float) -> None:
        if base < 0 or cap < base:
            raise ValueError(f"need 0 <= base <= cap, got base={base}, cap={cap}")
        self._base = base
        self._cap = cap
        self._failures: dict[K, int] = {}

    def when(self, item: K) -> float:
        exponent = self._failures.get(item, 0)
        self._failures[item] = exponent + 1
        return min(self._cap, self._base * 2.0 ** min(exponent, _MAX_EXPONENT))

    def forget(self, item: K) -> None:
        self._failures.pop(item, None)

    def num_requeues(self, item: K) -> int:
        return self._failures.get(item, 0)


class BucketRateLimiter(Generic[K]):
    """A token bucket shared by all items, with ``golang.org/x/time/rate`` reservation semantics.

    The bucket starts full (``burst`` tokens) and refills at ``qps`` tokens per second. Every
    ``when`` takes a token at once, even when none is left: the balance goes negative and the
    answer is the time until it is back to zero. So a burst of N retries is spread out at ``qps``
    rather than all waiting for the same instant.
    """

    def __init__(self, qps: float, burst: int, clock: Clock | None = None) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError(f"need qps > 0 and burst >= 1, got qps={qps}, burst={burst}")
        self._qps = qps
        self._burst = float(burst)
        self._clock = clock or MonotonicClock()
        self._tokens = float(burst)
        self._last: float | None = None

    def when(self, item: K) -> float:
        now = self._clock.now()
        if self._last is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._qps)
        self._last = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self._qps

    def forget(self, item: K) -> None:
        pass  # nothing is kept per item

    def num_requeues(self, item: K) -> int:
        return 0


class MaxOfRateLimiter(Generic[K]):
    """The longest wait any of the limiters asks for.

    Every limiter is asked each time (so the bucket is charged even when the per-item backoff is
    the longer wait), and ``forget`` goes to all of them.
    """

    def __init__(self, *limiters: RateLimiter[K]) -> None:
        if not limiters:
            raise ValueError("MaxOfRateLimiter needs at least one limiter")
        self._limiters = limiters

    def when(self, item: K) -> float:
        return max([limiter.when(item) for limiter in self._limiters])

    def forget(self, item: K) -> None:
        for limiter in self._limiters:
            limiter.forget(item)

    def num_requeues(self, item: K) -> int:
        return max(limiter.num_requeues(item) for limiter in self._limiters)


def default_controller_rate_limiter(clock: Clock | None = None) -> MaxOfRateLimiter[K]:
    """Per-item 5 ms doubling up to 20 s, and at most 10 retries/s overall (bursts of 100)."""
    return MaxOfRateLimiter(
        ItemExponentialFailureRateLimiter(DEFAULT_BASE_DELAY_S, DEFAULT_MAX_DELAY_S),
        BucketRateLimiter(DEFAULT_QPS, DEFAULT_BURST, clock),
    )
