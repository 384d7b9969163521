"""The real :mod:`~dpctl.dualpods.ports`: the API server, the stub and inference-server HTTP
clients, and Events with Prometheus metrics.

Every Pod write carries the controller's field manager (the sleeper-limit LRU reads its
managedFields time) and is a create, a strategic merge patch, or a JSON patch guarded by
``test`` operations on the fields it depends on (:mod:`~dpctl.dualpods.patches`), so concurrent
writers of other fields never conflict with us; deletes carry UID preconditions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dpctl import api
from dpctl.clients.inference import InferenceClient
from dpctl.clients.launcher import LauncherClient, launcher_url
from dpctl.clients.requester import RequesterClient
from dpctl.dualpods.latency import Step
from dpctl.dualpods.metrics import DualPodsMetrics
from dpctl.dualpods.podview import RawObj
from dpctl.dualpods.ports import Counted, DeleteReason, ErrorReason, EventType, LogRelays, Path, Ports
from dpctl.events import EventRecorder
from dpctl.kube import PODS, ApiError, Kube, PatchType
from dpctl.launcher.api import InstanceState


class KubePods:
    """Pod writes in one namespace."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace

    async def create_pod(self, pod: RawObj) -> dict[str, Any]:
        return await self.kube.create(PODS, pod, self.namespace, field_manager=api.FIELD_MANAGER)

    async def patch_pod(self, name: str, patch: RawObj | list[RawObj]) -> dict[str, Any]:
        kind: PatchType = "json" if isinstance(patch, list) else "strategic"
        return await self.kube.patch(
            PODS, name, patch, self.namespace, patch_type=kind, field_manager=api.FIELD_MANAGER
        )

    async def delete_pod(self, name: str, uid: str, resource_version: str | None = None) -> None:
        try:
            await self.kube.delete(PODS, name, self.namespace, uid=uid, resource_version=resource_version)
        except ApiError as err:
            if not err.not_found:
                raise

    async def get_pod(self, name: str) -> dict[str, Any] | None:
        try:
            return await self.kube.get(PODS, name, self.namespace)
        except ApiError as err:
            if err.not_found:
                return None
            raise


class Stubs:
    def __init__(self, requesters: RequesterClient) -> None:
        self.requesters = requesters

    async def query_gpus(self, host: str, port: int, dialect: api.Dialect) -> list[str]:
        return await self.requesters.accelerators(host, port, dialect)

    async def accelerator_memory(self, host: str, port: int) -> dict[str, int]:
        return await self.requesters.accelerator_memory(host, port)

    async def relay(self, host: str, port: int, ready: bool) -> None:
        if ready:
            await self.requesters.become_ready(host, port)
        else:
            await self.requesters.become_unready(host, port)


class Servers:
    def __init__(self, servers: InferenceClient) -> None:
        self.servers = servers

    async def is_sleeping(self, host: str, port: int) -> bool:
        return await self.servers.is_sleeping(host, port)

    async def sleep(self, host: str, port: int) -> None:
        await self.servers.sleep(host, port)

    async def wake(self, host: str, port: int) -> None:
        await self.servers.wake_up(host, port)


class Launchers:
    def __init__(self, launchers: LauncherClient) -> None:
        self.launchers = launchers

    async def instances(self, host: str) -> list[InstanceState]:
        return await self.launchers.instances(launcher_url(host))

    async def create(self, host: str, instance_id: str, body: RawObj) -> InstanceState:
        return await self.launchers.create(launcher_url(host), instance_id, body)

    async def delete(self, host: str, instance_id: str) -> bool:
        return await self.launchers.delete(launcher_url(host), instance_id)

    async def log_tail(self, host: str, instance_id: str, nbytes: int) -> bytes:
        return await self.launchers.log_tail(launcher_url(host), instance_id, nbytes)


class EventsAndMetrics:
    def __init__(self, events: EventRecorder | None, metrics: DualPodsMetrics) -> None:
        self.events = events
        self.metrics = metrics

    def event(self, pod: RawObj, type_: EventType, reason: str, message: str) -> None:
        if self.events is not None:
            self.events.record(pod, type_, reason, message)

    def count(self, what: Counted) -> None:
        self.metrics.count(what)

    def runner_deleted(self, reason: DeleteReason) -> None:
        self.metrics.runner_deleted(reason)

    def status_error(self, reason: ErrorReason) -> None:
        self.metrics.status_error(reason)

    def actuated(self, path: Path, requester: RawObj, isc: str = "", instances_deleted: int = 0) -> None:
        self.metrics.actuated(path, requester, isc, instances_deleted)

    def launcher_created(self, lc: str, seconds: float, success: bool) -> None:
        self.metrics.launcher_created(lc, seconds, success)

    def duality(self, launcher: RawObj, instance_id: str, gpu_uuids: Sequence[str], bound: bool) -> None:
        self.metrics.duality(launcher, instance_id, gpu_uuids, bound)

    def added_latency(self, step: Step, seconds: float) -> None:
        self.metrics.added_latency(step, seconds)


def kube_ports(
    kube: Kube,
    namespace: str,
    requesters: RequesterClient,
    servers: InferenceClient,
    events: EventRecorder | None,
    metrics: DualPodsMetrics,
    logs: LogRelays,
    launchers: LauncherClient,
) -> Ports:
    return Ports(
        KubePods(kube, namespace),
        Stubs(requesters),
        Servers(servers),
        EventsAndMetrics(events, metrics),
        logs,
        Launchers(launchers),
    )
