"""What an informer reports, as a protocol; and the default that reports nothing.

Owns the :class:`InformerMetrics` hook (called synchronously on the event loop; must not
block). Does not own any metrics library: the Prometheus implementation lives with the rest of
dpctl's metrics.
"""

from __future__ import annotations

from typing import Protocol


class InformerMetrics(Protocol):
    """Hooks called by the informer named ``informer``."""

    def observe_list_duration(self, informer: str, seconds: float) -> None:
        """A successful list, all pages."""
        ...

    def observe_watch_duration(self, informer: str, seconds: float) -> None:
        """A watch stream from open to end, however it ended."""
        ...

    def inc_watch_restarts(self, informer: str) -> None:
        """A watch stream ended (server timeout, error or 410) and will be replaced."""
        ...

    def inc_relists_gone(self, informer: str) -> None:
        """A watch was told 410 Gone (its resourceVersion was compacted away): relisting."""
        ...

    def inc_events(self, informer: str, event_type: str) -> None:
        """One watch event: ADDED, MODIFIED, DELETED or BOOKMARK."""
        ...


class NoopInformerMetrics:
    """The default: records nothing."""

    def observe_list_duration(self, informer: str, seconds: float) -> None:
        pass

    def observe_watch_duration(self, informer: str, seconds: float) -> None:
        pass

    def inc_watch_restarts(self, informer: str) -> None:
        pass

    def inc_relists_gone(self, informer: str) -> None:
        pass

    def inc_events(self, informer: str, event_type: str) -> None:
        pass
