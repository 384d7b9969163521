"""What the simulated kubelet remembers about one pod, and the settings its pod handling shares.

Owns :class:`PodRecord` (by pod UID: its IP and GPUs, container records, running instances,
probe workers, pending exits, status bookkeeping), :class:`SyncSettings` and which errors the
sync's steps count as transient. Data only; the sync loop (``podsync``), its steps and the
launcher (``launcher``) act on it. Everything in a record can be
rebuilt from the API and ``allocations.json`` after a restart, except what ran in processes that
died with the previous kubelet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp

from dpctl.kube import ApiError
from dpsim.kubelet.containers import ContainerRecord, CrashBackoff
from dpsim.kubelet.ips import LOOPBACK, AddressPlan
from dpsim.kubelet.probes import ProbeWorker
from dpsim.kubelet.runtime import ContainerHandle, Exit
from dpsim.kubelet.status import ConditionClock

# What a sync step may raise that is no fault of the pod's: the API or the network failed, so
# the sync is retried with back-off.
TRANSIENT_ERRORS: Final = (ApiError, aiohttp.ClientError, OSError, TimeoutError)


@dataclass(frozen=True)
class SyncSettings:
    state_dir: Path
    python: str
    shim_dir: Path
    backoff_base: float
    backoff_cap: float
    max_grace: float
    # Variables every process needs from the host (PATH, PYTHONPATH, locale), before the pod's.
    base_env: Mapping[str, str]
    node_allocatable: Mapping[str, str]
    # The API server's URL (``KUBERNETES_SERVICE_HOST``/``PORT`` of real containers).
    api_server: str = ""
    # How long a failed image pull shows ErrImagePull before ImagePullBackOff: a real kubelet
    # re-syncs a pod whose sync failed only after ~10 s (its backOffPeriod), whatever watch
    # events come meanwhile; shorter here, yet long enough for a poller to see.
    pull_error_shown: float = 3.0
    # Where pod IPs come from (``ips``).
    address_plan: AddressPlan = LOOPBACK


@dataclass
class PodRecord:
    """The kubelet's memory of one pod (by UID); rebuilt from the API after a restart."""

    uid: str
    namespace: str
    name: str
    node: str
    dir: Path
    host_ip: str
    init: list[ContainerRecord]
    app: list[ContainerRecord]
    conditions: ConditionClock
    pod_ip: str | None = None
    gpus: tuple[str, ...] = ()
    admitted: bool = False
    sandbox_ready: bool = False
    kubeconfig: Path | None = None
    start_time: str | None = None
    terminal: str | None = None
    terminal_reason: tuple[str, str] | None = None
    delete_sent: bool = False
    handles: dict[str, ContainerHandle] = field(default_factory=dict)
    probes: dict[str, ProbeWorker] = field(default_factory=dict)
    pending_exits: dict[str, tuple[str, Exit]] = field(default_factory=dict)
    kill_messages: dict[str, str] = field(default_factory=dict)
    stopping: dict[str, asyncio.Task[Exit]] = field(default_factory=dict)
    pull_backoff: dict[str, CrashBackoff] = field(default_factory=dict)
    last_sent: dict[str, Any] | None = None
    last_sent_at: float = 0.0

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def kubelet_ref(self) -> str:
        """How a kubelet names the pod in its messages (``format.Pod``): ``name_namespace(uid)``."""
        return f"{self.name}_{self.namespace}({self.uid})"

    def record(self, name: str) -> ContainerRecord | None:
        return next((r for r in (*self.init, *self.app) if r.name == name), None)


BackoffFactory = Callable[[], CrashBackoff]


def container_records(
    spec: Mapping[str, Any], backoff: BackoffFactory
) -> tuple[list[ContainerRecord], list[ContainerRecord]]:
    """Fresh records of the pod's init and app containers, in spec order."""
    init = [
        ContainerRecord(str(c["name"]), str(c.get("image", "")), backoff(), init=True)
        for c in spec.get("initContainers") or []
    ]
    app = [
        ContainerRecord(str(c["name"]), str(c.get("image", "")), backoff())
        for c in spec.get("containers") or []
    ]
    return init, app


def pod_dir_name(namespace: str, name: str, uid: str) -> str:
    return f"{namespace}_{name}_{uid}"
