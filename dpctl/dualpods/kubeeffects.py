"""The real :class:`~dpctl.dualpods.effects.Effects`: the API server, HTTP, Events, telemetry.

Every Pod write carries the controller's field manager (the sleeper-limit LRU reads its
managedFields time) and is a strategic merge patch or a create, so concurrent writers of other
fields never conflict with us; deletes carry UID preconditions.
"""

from __future__ import annotations

from typing import Any, Literal

from dpctl import api
from dpctl.clients.inference import InferenceClient
from dpctl.clients.requester import RequesterClient
from dpctl.dualpods.effects import EventType
from dpctl.dualpods.latency import Step
from dpctl.dualpods.podview import RawObj
from dpctl.dualpods.telemetry import Telemetry
from dpctl.events import EventRecorder
from dpctl.kube import PODS, ApiError, Kube


class KubeEffects:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        requesters: RequesterClient,
        servers: InferenceClient,
        events: EventRecorder | None,
        telemetry: Telemetry,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.requesters = requesters
        self.servers = servers
        self.events = events
        self.telemetry = telemetry

    async def create_pod(self, pod: RawObj) -> dict[str, Any]:
        return await self.kube.create(PODS, pod, self.namespace, field_manager=api.FIELD_MANAGER)

    async def patch_pod(self, name: str, patch: RawObj) -> dict[str, Any]:
        return await self.kube.patch(PODS, name, patch, self.namespace, field_manager=api.FIELD_MANAGER)

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

    async def query_gpus(self, host: str, port: int) -> list[str]:
        return await self.requesters.accelerators(host, port)

    async def relay(self, host: str, port: int, ready: bool) -> None:
        if ready:
            await self.requesters.become_ready(host, port)
        else:
            await self.requesters.become_unready(host, port)

    async def is_sleeping(self, host: str, port: int) -> bool:
        return await self.servers.is_sleeping(host, port)

    async def sleep(self, host: str, port: int) -> None:
        await self.servers.sleep(host, port)

    async def wake(self, host: str, port: int) -> None:
        await self.servers.wake_up(host, port)

    def event(self, pod: RawObj, type_: EventType, reason: str, message: str) -> None:
        if self.events is not None:
            self.events.record(pod, type_, reason, message)

    def count(self, what: str, reason: str = "") -> None:
        self.telemetry.count(what, reason)

    def actuated(self, path: Literal["cold", "hot"], requester: RawObj) -> None:
        self.telemetry.actuated(path, requester)

    def added_latency(self, step: Step, seconds: float) -> None:
        self.telemetry.added_latency(step, seconds)
