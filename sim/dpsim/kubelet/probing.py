"""Step 3 of the pod sync, its probe half: each running app container's probe worker, readiness
from probe results, and the restart of a container whose liveness probe failed.

How a probe runs and when its result flips is ``probes``' (the worker and its trackers); here is
which containers get one, what a result does to the pod (an ``Unhealthy`` Event for a failure, a
sync for every change) and how it reaches the container records. An exec probe runs in its
container, only for programs the image store allows.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import aiohttp

from dpctl.kube import RawObj
from dpctl.log import KV
from dpsim.kubelet import images
from dpsim.kubelet.containers import ContainerRecord
from dpsim.kubelet.events import NORMAL, WARNING, EventSink
from dpsim.kubelet.podrecord import PodRecord
from dpsim.kubelet.probes import (
    PROBE_KINDS,
    SPEC_KEYS,
    ProbeKind,
    ProbeSpec,
    ProbeSpecError,
    ProbeWorker,
    parse_probe,
)
from dpsim.kubelet.runtime import ContainerHandle
from dpsim.kubelet.termination import stop_container


class Probing:
    def __init__(
        self,
        records: Mapping[str, PodRecord],
        lookup: Callable[[str], RawObj | None],
        session: aiohttp.ClientSession,
        enqueue: Callable[[str], None],
        events: EventSink,
        grace: Callable[[RawObj, bool], float],
        log: KV,
    ) -> None:
        self._records = records
        self._lookup = lookup
        self._session = session
        self._enqueue = enqueue
        self._events = events
        self._grace = grace
        self._log = log

    def start(
        self, rec: PodRecord, r: ContainerRecord, c: Mapping[str, Any], handle: ContainerHandle, now: float
    ) -> None:
        """Start the probe worker of a container instance that just started, if it has probes."""
        specs: dict[ProbeKind, ProbeSpec] = {}
        for kind in PROBE_KINDS:
            try:
                parsed = parse_probe(c.get(SPEC_KEYS[kind]), c)
            except ProbeSpecError as e:
                self._log.warning(
                    "Probe cannot run; it will fail", pod=rec.ref, container=r.name, probe=kind, error=str(e)
                )
                parsed = ProbeSpec("grpc")
            if parsed is not None:
                specs[kind] = parsed
        if not specs:
            return
        worker = ProbeWorker(
            specs,
            now,
            rec.pod_ip or rec.host_ip,
            self._session,
            partial(self._on_probe, rec.uid, r.name, handle.container_id),
            exec_runner=partial(_exec_probe, handle),
        )
        rec.probes[r.name] = worker
        worker.start()

    def _on_probe(
        self, uid: str, name: str, container_id: str, kind: ProbeKind, ok: bool, detail: str
    ) -> None:
        rec = self._records.get(uid)
        if rec is None:
            return
        word = "succeeded" if ok else f"failed: {detail}"
        self._log.progress(f"{kind.capitalize()} probe {word}", pod=rec.ref, container=name)
        pod = self._lookup(uid)
        if not ok and pod is not None:
            self._events.emit(pod, WARNING, "Unhealthy", f"{kind.capitalize()} probe failed: {detail}")
        self._enqueue(uid)

    def refresh_readiness(self, rec: PodRecord, pod: RawObj) -> None:
        """Copy probe results into the records; kill containers whose liveness probe failed."""
        for r in rec.app:
            if r.running is None:
                continue
            worker = rec.probes.get(r.name)
            r.started = worker.started if worker else True
            r.ready = worker.ready if worker else True
            live = worker.trackers.get("liveness") if worker else None
            if live is not None and not live.result and r.name not in rec.stopping:
                rec.kill_messages[r.name] = f"Container {r.name} failed liveness probe, will be restarted"
                self._log.info("Liveness probe failed, restarting container", pod=rec.ref, container=r.name)
                self._events.emit(pod, NORMAL, "Killing", rec.kill_messages[r.name])
                stop_container(rec, r.name, self._grace(pod, False))


async def _exec_probe(handle: ContainerHandle, command: tuple[str, ...] | list[str], timeout: float) -> bool:
    """An exec probe runs in the container: only allowlisted programs, with its environment."""
    if not command or os.path.basename(command[0]) not in images.COMMAND_ALLOWLIST:
        return False
    with contextlib.suppress(OSError):
        return await handle.exec_sync(list(command), timeout) == 0
    return False
