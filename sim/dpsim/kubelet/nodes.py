"""Simulated nodes: the Node objects, their status, their heartbeats, and their admin states.

A node registers as a kubelet does: it creates its Node with labels and a full status (so the
node lifecycle controller never sees it without a Ready condition), then keeps it healthy with
Lease renewals every 10 s and re-posts its status (fresh ``lastHeartbeatTime``) every
``status_interval`` seconds. Its GPU table is generated and saved at registration.

Admin states, changed through the admin API and awaited until done:

- ``ready``: heartbeats and status posts run, the node's pods are synced;
- ``not-ready``: the kubelet is cut off, as in a network partition: it posts ``Ready=False`` once,
  then stops heartbeats and leaves its pods alone (their processes keep running, nothing of theirs
  is written); the node lifecycle controller takes it from there;
- ``removed``: the machine died: its pods' processes are killed, the heartbeats stop and its Node
  object is deleted (PodGC then deletes its pods); ``add`` brings it back as a fresh boot;
- ``deleted``: someone else deleted the Node (``kubectl delete node``). Like a real kubelet it does
  not re-register by itself; its pods keep running until PodGC deletes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import platform
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import aiohttp

from dpctl.api import GPU_RESOURCE, HOSTNAME_LABEL
from dpctl.kube import NODES, ApiError, Kube, RawObj, objects
from dpctl.log import KV
from dpsim.emulator.gputable import GpuTable, save_gpu_table
from dpsim.kubelet.containers import rfc3339
from dpsim.kubelet.leases import LeaseRenewer, NodeGone, renew_interval

NodeState = Literal["ready", "not-ready", "removed", "deleted"]
RUNTIME_VERSION: Final = "dpctl-sim://0.1.0"
_IDLE_S: Final = 3600.0
_MAX_RETRY_S: Final = 5.0
_NAMESPACE_UUID: Final = uuid.UUID("6f1d7a52-8d0e-4bb4-9a57-3c1b9d2f0e11")

_CONDITIONS: Final = (
    # type, (status, reason, message) when healthy
    ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("NetworkUnavailable", "False", "RouteCreated", "RouteController created a route"),
)


@dataclass(frozen=True)
class NodeShape:
    """What every simulated node offers."""

    gpus: int
    gpu_product: str = "NVIDIA-L40S"
    cpu: str = "32"
    memory: str = "256Gi"
    pods: str = "250"
    ephemeral_storage: str = "1Ti"

    def resources(self) -> dict[str, str]:
        return {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": self.pods,
            "ephemeral-storage": self.ephemeral_storage,
            "hugepages-1Gi": "0",
            "hugepages-2Mi": "0",
            GPU_RESOURCE: str(self.gpus),
        }

    def gpu_table(self, node: str) -> GpuTable:
        # GPU feature discovery spells the product with dashes; nvidia-smi prints the name with spaces.
        return GpuTable.generate(node, self.gpus, name=self.gpu_product.replace("-", " "))


def node_labels(name: str, shape: NodeShape, table: GpuTable) -> dict[str, str]:
    return {
        HOSTNAME_LABEL: name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": shape.gpu_product,
        "nvidia.com/gpu.count": str(shape.gpus),
        "nvidia.com/gpu.memory": str(table.memory_mib),
    }


@dataclass
class _ConditionTimes:
    """lastTransitionTime per condition type, moved only when the status changes."""

    since: dict[str, tuple[str, str]]

    def stamp(self, ctype: str, status: str, now: str) -> str:
        prev = self.since.get(ctype)
        if prev is None or prev[0] != status:
            prev = (status, now)
            self.since[ctype] = prev
        return prev[1]


def node_conditions(ready: bool, now: str, times: _ConditionTimes) -> list[dict[str, Any]]:
    out = []
    for ctype, status, reason, message in _CONDITIONS:
        out.append(_condition(ctype, status, reason, message, now, times))
    if ready:
        out.append(_condition("Ready", "True", "KubeletReady", "kubelet is posting ready status", now, times))
    else:
        message = "simulated: the node was made NotReady through the sim-kubelet admin API"
        out.append(_condition("Ready", "False", "KubeletNotReady", message, now, times))
    return out


def _condition(
    ctype: str, status: str, reason: str, message: str, now: str, times: _ConditionTimes
) -> dict[str, Any]:
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "lastHeartbeatTime": now,
        "lastTransitionTime": times.stamp(ctype, status, now),
    }


def node_status(
    name: str,
    ip: str,
    port: int,
    shape: NodeShape,
    kubelet_version: str,
    boot_id: str,
    conditions: list[dict[str, Any]],
) -> dict[str, Any]:
    machine = uuid.uuid5(_NAMESPACE_UUID, name)
    return {
        "capacity": shape.resources(),
        "allocatable": shape.resources(),
        "conditions": conditions,
        "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "nodeInfo": {
            "machineID": machine.hex,
            "systemUUID": str(machine),
            "bootID": boot_id,
            "kernelVersion": platform.release(),
            "osImage": "dpctl simulated GPU node",
            "containerRuntimeVersion": RUNTIME_VERSION,
            "kubeletVersion": kubelet_version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }


def _now() -> str:
    return rfc3339(dt.datetime.now(dt.UTC))


class NodeAgent:
    """One simulated node's registration, status and heartbeats (see the module docstring)."""

    def __init__(
        self,
        kube: Kube,
        name: str,
        ip: str,
        port: int,
        shape: NodeShape,
        kubelet_version: str,
        state_dir: Path,
        *,
        status_interval: float,
        on_removed: Callable[[str], Awaitable[None]],
        on_boot: Callable[[NodeAgent], Awaitable[None]],
        on_pods_resume: Callable[[str], None],
        log: KV,
    ) -> None:
        self.name = name
        self.ip = ip
        self.port = port
        self.state: NodeState = "ready"
        self.registered = asyncio.Event()
        self._kube = kube
        self._shape = shape
        self._version = kubelet_version
        self._state_dir = state_dir
        self._status_interval = status_interval
        self._on_removed = on_removed
        self._on_boot = on_boot
        self._on_pods_resume = on_pods_resume
        self._log = log
        self._uid: str | None = None
        self._boot_id = str(uuid.uuid4())
        self._times = _ConditionTimes({})
        self._lease = LeaseRenewer(kube, name, self._node_exists)
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._next_status = 0.0
        self._next_lease = 0.0
        self._failures = 0
        self.table = shape.gpu_table(name)
        # The Node's labels as the API last said, for admission (``NodeAffinity``): a real kubelet
        # reads them from its Node informer, so a label someone adds is honoured soon after.
        self.labels: Mapping[str, str] = node_labels(name, shape, self.table)

    def observe(self, node: RawObj) -> None:
        """Take in the Node as the API has it now (a watch event or a write's answer)."""
        labels = objects.labels(node)
        if labels:
            self.labels = {str(k): str(v) for k, v in labels.items()}

    @property
    def runs_pods(self) -> bool:
        """Whether the kubelet acts on this node's pods (not while cut off or dead)."""
        return self.state in ("ready", "deleted")

    # -- the heartbeat loop -------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            async with self._lock:
                delay = await self._step(loop.time())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def _step(self, now: float) -> float:
        if self.state in ("removed", "deleted", "not-ready"):
            return _IDLE_S
        try:
            if self._uid is None:
                await self._register()
            if now >= self._next_status:
                await self._post_status(ready=True)
                self._next_status = now + self._status_interval
            if now >= self._next_lease:
                await self._lease.renew(self._uid)
                self._next_lease = now + renew_interval()
            self._failures = 0
            return max(0.05, min(self._next_status, self._next_lease) - now)
        except NodeGone:
            self._gone()
            return _IDLE_S
        except ApiError as e:
            if e.not_found and self._uid is not None:
                self._gone()
                return _IDLE_S
            return self._retry_delay(e)
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            return self._retry_delay(e)

    def _retry_delay(self, err: Exception) -> float:
        self._failures += 1
        delay = min(_MAX_RETRY_S, 0.2 * 2.0 ** min(self._failures, 10))
        self._log.warning("Node heartbeat failed, retrying", node=self.name, error=str(err), retry_in=delay)
        return delay

    def _gone(self) -> None:
        self._log.warning(
            "Node was deleted by someone else; not re-registering (like a real kubelet)", node=self.name
        )
        self.state = "deleted"
        self._uid = None
        self._lease.forget()

    async def _node_exists(self) -> bool:
        try:
            node = await self._kube.get(NODES, self.name)
        except ApiError as e:
            if e.not_found:
                return False
            raise
        return self._uid is None or objects.uid(node) == self._uid

    # -- registration and status ------------------------------------------------------------

    async def _register(self) -> None:
        save_gpu_table(self._state_dir, self.table)
        labels = node_labels(self.name, self._shape, self.table)
        body: RawObj = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": labels,
                "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"},
            },
            "spec": {},
            "status": self._status(ready=True),
        }
        try:
            node = await self._kube.create(NODES, body)
            self._log.info("Registered node", node=self.name, ip=self.ip, gpus=self._shape.gpus)
        except ApiError as e:
            if not e.already_exists:
                raise
            # A restarted kubelet: keep the Node (and its cordon), refresh what the kubelet owns.
            node = await self._kube.patch(NODES, self.name, {"metadata": {"labels": labels}})
            self._log.info("Node already registered, updated it", node=self.name)
        self._uid = objects.uid(node)
        self.observe(node)
        self._next_status = 0.0
        self._next_lease = 0.0
        self.registered.set()

    def _status(self, ready: bool) -> dict[str, Any]:
        conditions = node_conditions(ready, _now(), self._times)
        return node_status(
            self.name, self.ip, self.port, self._shape, self._version, self._boot_id, conditions
        )

    async def _post_status(self, ready: bool) -> None:
        await self._kube.patch(NODES, self.name, {"status": self._status(ready)}, subresource="status")

    # -- admin operations (each returns once done) --------------------------------------------

    async def make_not_ready(self) -> None:
        async with self._lock:
            if self.state in ("removed", "deleted"):
                raise RuntimeError(f"node {self.name} is {self.state}")
            self.state = "not-ready"
            await self._post_status(ready=False)
        self._log.info("Node made NotReady: heartbeats stopped, pods left alone", node=self.name)

    async def make_ready(self) -> None:
        async with self._lock:
            if self.state in ("removed", "deleted"):
                raise RuntimeError(f"node {self.name} is {self.state}; add it instead")
            self.state = "ready"
            await self._post_status(ready=True)
            await self._lease.renew(self._uid)
            loop = asyncio.get_running_loop()
            self._next_status = loop.time() + self._status_interval
            self._next_lease = loop.time() + renew_interval()
        self._wake.set()
        self._on_pods_resume(self.name)
        self._log.info("Node made Ready", node=self.name)

    async def remove(self) -> None:
        async with self._lock:
            self.state = "removed"
            self.registered.clear()
            await self._on_removed(self.name)
            try:
                await self._kube.delete(NODES, self.name)
            except ApiError as e:
                if not e.not_found:
                    raise
            self._uid = None
            self._lease.forget()
        self._log.info("Node removed: pods killed, Node deleted", node=self.name)

    async def add(self) -> None:
        async with self._lock:
            # Deleted by someone else, maybe before the heartbeats noticed: then it may come back.
            if self.state in ("ready", "not-ready") and self._uid is not None and await self._node_exists():
                raise RuntimeError(f"node {self.name} is already registered ({self.state})")
            await self._on_boot(self)
            self.state = "ready"
            self._boot_id = str(uuid.uuid4())
            self._times = _ConditionTimes({})
            await self._register()
            # A fresh boot knows nothing of the old Lease: after a deletion by someone else the
            # garbage collector may be removing it, and a PUT of it would fail its UID precondition.
            self._lease.forget()
            try:
                await self._lease.renew(self._uid)
            except ApiError as e:
                if not e.conflict:
                    raise
                await self._lease.renew(self._uid)  # collected meanwhile: read again, or create
            self._next_lease = asyncio.get_running_loop().time() + renew_interval()
        self._wake.set()
        self._on_pods_resume(self.name)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "ip": self.ip, "port": self.port, "pid": os.getpid()}
