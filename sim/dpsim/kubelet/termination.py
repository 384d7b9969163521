"""Step 5 of the pod sync, termination: the end of a pod, a vanished pod, a dead node.

On ``deletionTimestamp`` (or a terminal phase) every container is stopped (SIGTERM, the grace
period, SIGKILL), reported terminated and the phase terminal, GPUs and IP released, then the pod
is deleted with grace 0 and a UID precondition. Finalizers of others are left alone; the pod
then stays, stopped, until they are removed. ``preStop`` hooks are not run.

A pod that disappears from the API (force deletion, PodGC) has its processes stopped with a
short grace (:data:`GONE_GRACE_S`) and its directory removed. A node whose machine died (the
admin API's ``remove``) has its pods' processes killed and its pods forgotten.

Nothing here blocks: stopping runs in background tasks, whose ends come back as exits.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from typing import Final

from dpctl.kube import PODS, ApiError, Kube, RawObj
from dpctl.log import KV
from dpctl.workqueue.outcome import Done, Outcome, RequeueAfter
from dpsim.kubelet import containers as ctr
from dpsim.kubelet.containers import Termination, now_rfc3339
from dpsim.kubelet.events import NORMAL, EventSink
from dpsim.kubelet.podrecord import PodRecord
from dpsim.kubelet.resources import PodResources
from dpsim.kubelet.statussync import phase
from dpsim.kubelet.tokens import TokenManager

# Grace for the processes of a pod that vanished from the API (force deleted, PodGC).
GONE_GRACE_S: Final = 2.0
# Past the grace period, how much longer to wait before looking again: the SIGKILL and the
# process's exit callback take a moment.
STOP_SLACK_S: Final = 2.0
# API default when the pod's spec does not say.
DEFAULT_GRACE_S: Final = 30


def grace(pod: RawObj, deleting: bool, max_grace: float) -> float:
    """The pod's termination grace period: the deletion's, else the spec's, at most ``max_grace``."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    value = meta.get("deletionGracePeriodSeconds") if deleting else None
    if value is None:
        value = spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_S)
    return max(0.0, min(float(value), max_grace))


def stop_container(rec: PodRecord, name: str, grace_s: float) -> None:
    """Stop one running container in the background (once, however often asked)."""
    handle = rec.handles.get(name)
    if handle is None or name in rec.stopping:
        return
    task = asyncio.get_running_loop().create_task(handle.stop(grace_s), name=f"stop-{rec.ref}-{name}")
    rec.stopping[name] = task
    task.add_done_callback(lambda _: rec.stopping.pop(name, None))


def _cancel_probes(rec: PodRecord) -> None:
    for worker in rec.probes.values():
        worker.cancel()
    rec.probes.clear()


class Terminator:
    def __init__(
        self,
        kube: Kube,
        records: dict[str, PodRecord],
        resources: PodResources,
        tokens: TokenManager,
        events: EventSink,
        write_status: Callable[[PodRecord, RawObj, float], Awaitable[float | None]],
        max_grace: float,
        log: KV,
    ) -> None:
        self._kube = kube
        self._records = records
        self._resources = resources
        self._tokens = tokens
        self._events = events
        self._write_status = write_status
        self._max_grace = max_grace
        self._log = log

    def grace(self, pod: RawObj, deleting: bool) -> float:
        return grace(pod, deleting, self._max_grace)

    async def finish(self, rec: PodRecord, pod: RawObj, deleting: bool, now: float) -> Outcome:
        """Stop everything, report the terminal phase, release resources, finish a deletion."""
        grace_s = self.grace(pod, deleting)
        for name in list(rec.handles):
            if name not in rec.stopping:
                self._events.emit(pod, NORMAL, "Killing", f"Stopping container {name}")
            stop_container(rec, name, grace_s)
        _cancel_probes(rec)
        if rec.handles:
            return RequeueAfter(grace_s + STOP_SLACK_S, "waiting for containers to stop")
        stamp = now_rfc3339()
        for r in (*rec.init, *rec.app):
            r.ready = r.succeeded and r.init
            if not r.final and not r.terminations:
                r.on_start_failed(
                    Termination(
                        ctr.STATUS_UNKNOWN_EXIT_CODE,
                        ctr.STATUS_UNKNOWN,
                        stamp,
                        None,
                        ctr.STATUS_UNKNOWN_MESSAGE,
                    )
                )
            r.final = True
        rec.terminal = rec.terminal or phase(rec, pod, terminating=True)
        rec.sandbox_ready = False
        await self._write_status(rec, pod, now)
        self._release(rec)
        if deleting and not rec.delete_sent:
            await self._delete(rec)
        return Done()

    def _release(self, rec: PodRecord) -> None:
        self._resources.release(rec.uid)
        self._tokens.forget(rec.uid)

    async def _delete(self, rec: PodRecord) -> None:
        try:
            await self._kube.delete(PODS, rec.name, rec.namespace, uid=rec.uid, grace_period_seconds=0)
        except ApiError as e:
            if not (e.not_found or e.conflict):
                raise
        rec.delete_sent = True
        self._log.progress("Pod terminated and deleted", pod=rec.ref, phase=rec.terminal)

    async def forget(self, rec: PodRecord) -> Outcome:
        """The pod is gone from the API: stop its processes, free everything, drop its files."""
        rec.handles = {n: h for n, h in rec.handles.items() if h.status() is None}
        for name in list(rec.handles):
            stop_container(rec, name, GONE_GRACE_S)
        _cancel_probes(rec)
        if rec.handles:
            return RequeueAfter(GONE_GRACE_S + STOP_SLACK_S, "waiting for the processes of a deleted pod")
        self._release(rec)
        self._records.pop(rec.uid, None)
        await asyncio.to_thread(shutil.rmtree, rec.dir, True)
        return Done()

    async def kill_node(self, node: str) -> None:
        """The node's machine died: SIGKILL its pods' processes, wait for them, forget its pods."""
        recs = [r for r in self._records.values() if r.node == node]
        handles = [h for rec in recs for h in rec.handles.values()]
        for h in handles:
            h.kill()
        if handles:
            await asyncio.gather(*(h.stop(0) for h in handles), return_exceptions=True)
        for rec in recs:
            _cancel_probes(rec)
            self._records.pop(rec.uid, None)
            self._tokens.forget(rec.uid)
        self._resources.release_node(node, [rec.uid for rec in recs])
        self._log.info("Killed the pods of a removed node", node=node, pods=len(recs), processes=len(handles))
