"""Step 3 of the pod sync, its container half: init containers one at a time in order, then every
app container; exits and restarts.

Each start is the ``launcher``'s job; whether one is due is decided here. Exited containers
restart per ``restartPolicy`` with crash-loop back-off (the rules are ``ContainerRecord``'s);
exits arrive from the runtime through a callback that only records and enqueues, and are applied
at the next sync. Probes are ``probing``'s, started here with each app container instance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dpctl.kube import Kube, RawObj, objects
from dpctl.log import KV
from dpsim.kubelet import containers as ctr
from dpsim.kubelet.containers import ContainerRecord, Termination, now_rfc3339, rfc3339
from dpsim.kubelet.events import WARNING, EventSink
from dpsim.kubelet.launcher import Failed, Launcher, Wait
from dpsim.kubelet.podman import PodmanRuntime
from dpsim.kubelet.podrecord import PodRecord, SyncSettings
from dpsim.kubelet.probing import Probing
from dpsim.kubelet.runtime import ContainerRuntime, Exit


def _stopping(rec: PodRecord, pod: RawObj) -> bool:
    """Being deleted or already ended: no container restarts any more."""
    return objects.is_deleting(pod) or rec.terminal is not None


class Lifecycle:
    def __init__(
        self,
        kube: Kube,
        settings: SyncSettings,
        runtime: ContainerRuntime,
        records: Mapping[str, PodRecord],
        probing: Probing,
        enqueue: Callable[[str], None],
        events: EventSink,
        log: KV,
        podman: PodmanRuntime | None = None,
    ) -> None:
        self._records = records
        self._probing = probing
        self._enqueue = enqueue
        self._events = events
        self._log = log
        self._launcher = Launcher(kube, settings, runtime, events, log, self._on_exit, podman)

    async def run(self, rec: PodRecord, pod: RawObj, now: float) -> float | None:
        """Start what should run now; returns when to look again (a back-off ending), if ever."""
        spec = pod.get("spec") or {}
        inits = zip(rec.init, spec.get("initContainers") or [], strict=False)
        pending = next(((r, c) for r, c in inits if not r.succeeded), None)
        if pending is not None:
            return await self._run_init(rec, pod, *pending, now)
        waits = []
        for r, c in zip(rec.app, spec.get("containers") or [], strict=False):
            if r.running is None and not r.final:
                wait = await self._start(rec, pod, r, c, now)
                if wait is not None:
                    waits.append(wait)
        return min(waits) if waits else None

    async def _run_init(
        self, rec: PodRecord, pod: RawObj, r: ContainerRecord, c: Mapping[str, Any], now: float
    ) -> float | None:
        """The first init container not yet succeeded: started when due; the app containers wait."""
        if r.running is None and not r.final:
            wait = await self._start(rec, pod, r, c, now)
            if wait is not None or r.running is None:
                return wait if wait is not None else 0.0
        for a in rec.app:
            if not a.ever_ran:
                a.set_waiting(ctr.POD_INITIALIZING)
        return None

    async def _start(
        self, rec: PodRecord, pod: RawObj, r: ContainerRecord, c: Mapping[str, Any], now: float
    ) -> float | None:
        """Try to start one container; returns how long until it should be tried again, if not now."""
        result = await self._launcher.start(rec, pod, r, c, now)
        if isinstance(result, Wait):
            return result.seconds
        if isinstance(result, Failed):
            return self._start_failed(rec, pod, r, result.message, result.container_id, now)
        if self._records.get(rec.uid) is not rec:
            # The node was removed while this start was in flight: kill_node killed the processes
            # it knew and dropped the record, so nothing else would ever stop this one.
            result.handle.kill()
            self._log.info(
                "Killed a container started as its node was removed", pod=rec.ref, container=r.name
            )
            return None
        if not r.init:
            self._probing.start(rec, r, c, result.handle, now)
        return None

    def _start_failed(
        self, rec: PodRecord, pod: RawObj, r: ContainerRecord, message: str, cid: str | None, now: float
    ) -> float | None:
        stamp = now_rfc3339()
        r.on_start_failed(Termination(ctr.START_ERROR_EXIT_CODE, ctr.START_ERROR, stamp, stamp, message, cid))
        self._log.warning("Container failed to start", pod=rec.ref, container=r.name, error=message)
        self._events.emit(pod, WARNING, "Failed", f"Error: {message}")
        return self._after_exit(rec, pod, r, ctr.START_ERROR_EXIT_CODE, 0.0, now)

    def _after_exit(
        self, rec: PodRecord, pod: RawObj, r: ContainerRecord, code: int, ran_for: float, now: float
    ) -> float | None:
        """Decide what follows an exit: nothing (final), or a restart after the returned delay."""
        delay = r.after_exit(
            ctr.restart_policy(pod.get("spec") or {}), _stopping(rec, pod), code, ran_for, now
        )
        if delay and not r.init:
            self._events.emit(
                pod,
                WARNING,
                "BackOff",
                f"Back-off restarting failed container {r.name} in pod {rec.kubelet_ref}",
            )
        return delay

    def _on_exit(self, uid: str, name: str, container_id: str, exit_: Exit) -> None:
        """Runtime callback: note the exit and let the sync loop handle it."""
        rec = self._records.get(uid)
        if rec is not None:
            rec.pending_exits[name] = (container_id, exit_)
            self._enqueue(uid)

    def absorb_exits(self, rec: PodRecord, pod: RawObj, now: float) -> None:
        """Apply the exits the runtime reported since the last sync (restarts wait for ``run``)."""
        for name, (cid, exit_) in list(rec.pending_exits.items()):
            del rec.pending_exits[name]
            r = rec.record(name)
            if r is None or r.running is None or r.running.container_id != cid:
                continue
            term = ctr.termination_for_exit(
                exit_.exit_code,
                r.running.started_at,
                rfc3339(exit_.finished_at),
                cid,
                rec.kill_messages.pop(name, None),
            )
            ran_for = r.on_exited(term, now)
            rec.handles.pop(name, None)
            worker = rec.probes.pop(name, None)
            if worker is not None:
                worker.cancel()
            self._log.progress("Container exited", pod=rec.ref, container=name, exitCode=exit_.exit_code)
            self._after_exit(rec, pod, r, exit_.exit_code, ran_for, now)
