"""What the work queue reports, as a protocol; and the default that reports nothing.

Owns the :class:`QueueMetrics` hook the queue calls (synchronously, on the event loop, so an
implementation must not block). Does not own any metrics library: the Prometheus
implementation lives with the rest of dpctl's metrics and names its series after client-go's
(``workqueue_depth``, ``workqueue_adds_total``, ``workqueue_queue_duration_seconds``,
``workqueue_work_duration_seconds``, ``workqueue_retries_total``,
``workqueue_unfinished_work_seconds``, ``workqueue_longest_running_processor_seconds``, all
labelled ``name``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol


class UnfinishedWork(NamedTuple):
    """Items handed out by ``get`` and not yet ``done``, measured at one instant."""

    total_seconds: float  # summed over every item in processing
    longest_seconds: float  # the oldest item in processing


class QueueMetrics(Protocol):
    """Hooks called by a queue named ``queue``.

    Unfinished work is not pushed: a processor that hangs produces no events, so the queue
    hands :meth:`register` a probe to be read when the metrics are collected.
    """

    def register(self, queue: str, unfinished_work: Callable[[], UnfinishedWork]) -> None: ...

    def set_depth(self, queue: str, depth: int) -> None: ...

    def inc_adds(self, queue: str) -> None: ...

    def observe_queue_latency(self, queue: str, seconds: float) -> None: ...

    def observe_work_duration(self, queue: str, seconds: float) -> None: ...

    def inc_retries(self, queue: str) -> None: ...


class NoopQueueMetrics:
    """The default: records nothing."""

    def register(self, queue: str, unfinished_work: Callable[[], UnfinishedWork]) -> None:
        pass

    def set_depth(self, queue: str, depth: int) -> None:
        pass

    def inc_adds(self, queue: str) -> None:
        pass

    def observe_queue_latency(self, queue: str, seconds: float) -> None:
        pass

    def observe_work_duration(self, queue: str, seconds: float) -> None:
        pass

    def inc_retries(self, queue: str) -> None:
        pass
