"""What the reconcile steps do to the world, as six narrow ports.

The steps decide; a port acts. Each port is one kind of counterpart, so a test fakes only the
ones its case touches and the wrappers that add behaviour wrap one port (``RecentWrites`` wraps
only :class:`PodWrites`):

- :class:`PodWrites`: Pod writes and the one read that must bypass the cache, through the API
  server (the implementation fixes the namespace, the field manager and preconditions);
- :class:`StubCalls`: the requester stub's SPI;
- :class:`ServerCalls`: the inference server's sleep API (a runner's, or a launcher instance's);
- :class:`LauncherCalls`: a launcher's API: its instances listed, created, deleted;
- :class:`LogRelays`: the relay of bound runners' logs to their stubs, which runs beside the
  reconciles (:mod:`dpctl.dualpods.logrelay`); the steps only say which pairs are bound;
- :class:`Reporter`: what operators see besides logs, Kubernetes Events and metrics, with the
  metric vocabulary typed below, so a misspelt counter or reason is a type error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from dpctl import api
from dpctl.dualpods.latency import Step
from dpctl.dualpods.logrelay import Target
from dpctl.dualpods.podview import RawObj
from dpctl.launcher.api import InstanceState

EventType = Literal["Normal", "Warning"]
# The counters of dpctl_binds, dpctl_wakes, dpctl_sleeps and dpctl_sleeper_evictions.
Counted = Literal["bind", "wake", "sleep", "eviction"]
# Why the controller deleted a runner (dpctl_runner_deletions{reason}).
DeleteReason = Literal[
    "duplicate",
    "node-gone",
    "in-trouble",
    "not-running",
    "no-sleep-mode",
    "sleep-failed",
    "wake-failed",
    "restarted-sleeper",
    "sleeper-limit",
    "launcher-in-trouble",
]
# What kind of user mistake a status error reports (dpctl_status_errors{reason}, the Event reason).
ErrorReason = Literal[
    "BadAdminPort",
    "GpuMap",
    "BadServerPatch",
    "RunnerRefused",
    "TwoDialects",
    "TwoPaths",
    "BadInferenceServerConfig",
    "BadLauncherConfig",
    "LauncherRefused",
    "Bookkeeping",
    "LauncherPathOff",
    "InstanceFailing",
]
Path = Literal["cold", "warm", "hot"]


class PodWrites(Protocol):
    async def create_pod(self, pod: RawObj) -> dict[str, Any]: ...

    async def patch_pod(self, name: str, patch: RawObj | list[RawObj]) -> dict[str, Any]:
        """A strategic merge patch (a mapping; a ``metadata.uid`` in it is a precondition), or a
        JSON patch (a list of operations, its ``test`` operations the preconditions)."""
        ...

    async def delete_pod(self, name: str, uid: str, resource_version: str | None = None) -> None:
        """Delete with a UID (and optionally resourceVersion) precondition; already gone is fine."""
        ...

    async def get_pod(self, name: str) -> dict[str, Any] | None:
        """The API server's copy, for when the cache may lag (a name conflict on create)."""
        ...


class StubCalls(Protocol):
    async def query_gpus(self, host: str, port: int, dialect: api.Dialect) -> list[str]:
        """The stub's GPU UUIDs, asked at ``dialect``'s path first (contract §2b)."""
        ...

    async def relay(self, host: str, port: int, ready: bool) -> None: ...

    async def accelerator_memory(self, host: str, port: int) -> dict[str, int]:
        """Bytes of memory in use on each of the stub's GPUs, by UUID."""
        ...


class ServerCalls(Protocol):
    async def is_sleeping(self, host: str, port: int) -> bool: ...

    async def sleep(self, host: str, port: int) -> None: ...

    async def wake(self, host: str, port: int) -> None: ...


class LauncherCalls(Protocol):
    """A launcher's API at ``host`` (its Pod IP), port 8001."""

    async def instances(self, host: str) -> list[InstanceState]: ...

    async def create(self, host: str, instance_id: str, body: RawObj) -> InstanceState:
        """PUT the instance; an id that exists already is an HttpCallError with status 409."""
        ...

    async def delete(self, host: str, instance_id: str) -> bool:
        """Stop and forget it; False when the launcher did not have it (gone is gone)."""
        ...

    async def log_tail(self, host: str, instance_id: str, nbytes: int) -> bytes: ...


class LogRelays(Protocol):
    def follow(self, uid: str, target: Target) -> None:
        """Relay ``target`` for requester ``uid`` from now on (a no-op when it does already)."""
        ...

    def stop(self, uid: str) -> None: ...


class Reporter(Protocol):
    def event(self, pod: RawObj, type_: EventType, reason: str, message: str) -> None:
        """Fire-and-forget; implementations rate-limit and aggregate."""
        ...

    def count(self, what: Counted) -> None: ...

    def runner_deleted(self, reason: DeleteReason) -> None: ...

    def status_error(self, reason: ErrorReason) -> None: ...

    def actuated(self, path: Path, requester: RawObj, isc: str = "", instances_deleted: int = 0) -> None:
        """The requester's readiness was relayed for the first time: one actuation finished
        (``isc``: its InferenceServerConfig on the launcher path, "" on the direct path)."""
        ...

    def launcher_created(self, lc: str, seconds: float, success: bool) -> None: ...

    def duality(self, launcher: RawObj, instance_id: str, gpu_uuids: Sequence[str], bound: bool) -> None:
        """Upstream's ``fma_duality`` series of a pair (read from the launcher, while it still
        names its requester): 1 while bound, 0 once not."""
        ...

    def added_latency(self, step: Step, seconds: float) -> None:
        """The controller sent ``step``'s call this long after the event that made it possible."""
        ...


@dataclass(frozen=True)
class Ports:
    pods: PodWrites
    stubs: StubCalls
    servers: ServerCalls
    report: Reporter
    logs: LogRelays
    launchers: LauncherCalls
