"""Generic work queue for controllers: client-go's workqueue semantics on asyncio.

Owns queueing, retry policy, outcomes and the worker loop. Imports nothing else from dpctl and
knows nothing about Kubernetes or dual pods: items are any hashable keys.
"""

from dpctl.workqueue.clock import Clock, FakeClock, MonotonicClock, TimerHandle
from dpctl.workqueue.metrics import NoopQueueMetrics, QueueMetrics, UnfinishedWork
from dpctl.workqueue.outcome import Done, Outcome, RequeueAfter, Retry
from dpctl.workqueue.queue import QueueFull, QueueShutDown, RateLimitingQueue
from dpctl.workqueue.ratelimit import (
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    RateLimiter,
    default_controller_rate_limiter,
)
from dpctl.workqueue.workers import run_workers

__all__ = [
    "BucketRateLimiter",
    "Clock",
    "Done",
    "FakeClock",
    "ItemExponentialFailureRateLimiter",
    "MaxOfRateLimiter",
    "MonotonicClock",
    "NoopQueueMetrics",
    "Outcome",
    "QueueFull",
    "QueueMetrics",
    "QueueShutDown",
    "RateLimiter",
    "RateLimitingQueue",
    "RequeueAfter",
    "Retry",
    "TimerHandle",
    "UnfinishedWork",
    "default_controller_rate_limiter",
    "run_workers",
]
