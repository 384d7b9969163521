"""Everything the reconcile flow does to the world, behind one interface.

The flow decides; an :class:`Effects` implementation acts: Pod writes through the API server
(with the controller's field manager and preconditions), HTTP calls to requester stubs and
inference servers, Kubernetes Events, and telemetry. Unit tests substitute a recorder and
assert on the actions, sample-controller style, without any I/O.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from dpctl.dualpods.latency import Step
from dpctl.dualpods.podview import RawObj

EventType = Literal["Normal", "Warning"]


class Effects(Protocol):
    # -- the API server (namespace fixed by the implementation) --
    async def create_pod(self, pod: RawObj) -> dict[str, Any]: ...

    async def patch_pod(self, name: str, patch: RawObj) -> dict[str, Any]:
        """Strategic merge patch; a ``metadata.resourceVersion`` in it is a precondition."""
        ...

    async def delete_pod(self, name: str, uid: str, resource_version: str | None = None) -> None:
        """Delete with a UID (and optionally resourceVersion) precondition; already gone is fine."""
        ...

    async def get_pod(self, name: str) -> dict[str, Any] | None: ...

    # -- the requester stub --
    async def query_gpus(self, host: str, port: int) -> list[str]: ...

    async def relay(self, host: str, port: int, ready: bool) -> None: ...

    # -- the inference server --
    async def is_sleeping(self, host: str, port: int) -> bool: ...

    async def sleep(self, host: str, port: int) -> None: ...

    async def wake(self, host: str, port: int) -> None: ...

    # -- what operators see besides logs --
    def event(self, pod: RawObj, type_: EventType, reason: str, message: str) -> None:
        """Fire-and-forget; implementations rate-limit and aggregate."""
        ...

    def count(self, what: str, reason: str = "") -> None:
        """Telemetry counters: bind, wake, sleep, eviction, runner_deleted, status_error."""
        ...

    def actuated(self, path: Literal["cold", "hot"], requester: RawObj) -> None:
        """The requester's readiness was relayed for the first time: one actuation finished."""
        ...

    def added_latency(self, step: Step, seconds: float) -> None:
        """The controller sent ``step``'s call this long after the event that made it possible."""
        ...
