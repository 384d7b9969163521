"""What the dual-pods logic reports besides logs and Events: counters and actuation latency.

The reconciler calls :class:`Telemetry`; :mod:`dpctl.dualpods.metrics` implements it with
Prometheus. Labels are bounded (a reason from a fixed vocabulary, a path of cold/hot), never a
Pod name.
"""

from __future__ import annotations

from typing import Literal, Protocol

from dpctl.dualpods.latency import Step
from dpctl.dualpods.podview import RawObj


class Telemetry(Protocol):
    def count(self, what: str, reason: str = "") -> None: ...

    def actuated(self, path: Literal["cold", "hot"], requester: RawObj) -> None: ...

    def added_latency(self, step: Step, seconds: float) -> None: ...


class NoTelemetry:
    def count(self, what: str, reason: str = "") -> None:
        pass

    def actuated(self, path: Literal["cold", "hot"], requester: RawObj) -> None:
        pass

    def added_latency(self, step: Step, seconds: float) -> None:
        pass
