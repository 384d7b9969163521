"""The pod sync loop: what the simulated kubelet does for each pod bound to one of its nodes.

One workqueue item per pod UID; :meth:`PodSyncer.sync` looks at the pod (from the informer's
cache) and at the kubelet's own record of it, does the next steps and writes the status:

1. admission, as a real kubelet's: a pod asking for more GPUs than its node has free is rejected
   (``OutOfnvidia.com/gpu``), one whose ``nodeSelector`` or required node affinity does not match
   its Node's labels too (``NodeAffinity``): phase ``Failed``, the kubelet's reason and words, a
   Warning Event, no container started. Both matter for pods bound by ``nodeName``, which skip
   the scheduler. Then its GPUs are allocated (exclusive, like the device plugin) and its IP
   (``OutOfpods`` when none is left). Not simulated: CPU and memory fit, host ports and
   ``NoExecute`` taints, which dual pods do not depend on;
2. the "sandbox": the pod's directory, and API credentials (token + kubeconfig) when it gets them;
3. init containers one at a time in order, then every app container (each start is the
   ``launcher``'s job); exited containers restart per ``restartPolicy`` with crash-loop backoff;
   probes decide readiness, and a failed liveness probe restarts its container;
4. status: phase, conditions and container statuses as a kubelet reports them, written only when
   they differ from what the API has (strategic merge patch, UID precondition);
5. termination: on ``deletionTimestamp`` (or a terminal phase) stop every container (SIGTERM, the
   grace period, SIGKILL), report them terminated and the phase terminal, release GPUs and IP,
   then ``DELETE`` with grace 0 and a UID precondition. Finalizers of others are left alone; the
   pod then stays, stopped, until they are removed. ``preStop`` hooks are not run.

Nothing here blocks: stopping runs in background tasks, and process exits and probe results
arrive through callbacks that only record and enqueue. A pod that disappears from the API (force
deletion, PodGC) has its processes stopped with a short grace and its directory removed.

After a kubelet restart every container process is gone (they die with the kubelet): records are
rebuilt from the API status and ``allocations.json``, and containers the API says were running
are reported exited (``ContainerStatusUnknown``, 137) and restarted as their policy says.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any, Final

import aiohttp

from dpctl.api import GPU_RESOURCE
from dpctl.kube import PODS, ApiError, Kube, RawObj
from dpctl.log import KV
from dpctl.podbuild.placement import node_mismatch
from dpctl.workqueue.outcome import Done, Outcome, RequeueAfter, Retry
from dpsim.kubelet import containers as ctr
from dpsim.kubelet import images
from dpsim.kubelet.allocations import AllocationFile, PodAllocation
from dpsim.kubelet.containers import ContainerRecord, CrashBackoff, Running, Termination, rfc3339
from dpsim.kubelet.devices import (
    GpuAllocator,
    InsufficientGpusError,
    pod_gpu_request,
)
from dpsim.kubelet.events import NORMAL, WARNING, EventSink
from dpsim.kubelet.ips import IpAllocator, NoAddressError
from dpsim.kubelet.launcher import Failed, Launcher, Wait
from dpsim.kubelet.nodes import NodeAgent
from dpsim.kubelet.podrecord import PodRecord, SyncSettings, pod_dir_name
from dpsim.kubelet.probes import (
    PROBE_KINDS,
    SPEC_KEYS,
    ProbeKind,
    ProbeSpec,
    ProbeSpecError,
    ProbeWorker,
    parse_probe,
)
from dpsim.kubelet.runtime import ContainerHandle, ContainerRuntime, Exit
from dpsim.kubelet.status import (
    FAILED,
    TERMINAL_PHASES,
    ConditionClock,
    PodStatusInput,
    owned_conditions,
    pod_phase,
    status_body,
    status_patch,
    status_up_to_date,
)
from dpsim.kubelet.tokens import TokenManager

# After a status write, the informer may lag behind it; a sync in that window that would write
# the same status again waits this long for the watch event instead.
STATUS_LAG_S: Final = 2.0
# Grace for the processes of a pod that vanished from the API (force deleted, PodGC).
GONE_GRACE_S: Final = 2.0
RESTARTED_MESSAGE: Final = "The container's process ended with a previous simulated kubelet"
# At most one write of allocations.json per interval; a change inside it is written at its end.
ALLOC_SAVE_INTERVAL_S: Final = 1.0
_TRANSIENT = (ApiError, aiohttp.ClientError, OSError, TimeoutError)
# A real kubelet's rejection words (pkg/kubelet/lifecycle/predicate.go, kubelet.rejectPod): the
# Event carries the message, the Pod's status the same message after this prefix.
REJECTED_PREFIX: Final = "Pod was rejected: "
NODE_AFFINITY: Final = "NodeAffinity"
NODE_AFFINITY_MISMATCH: Final = "node(s) didn't match Pod's node affinity/selector"
UNEXPECTED_ADMISSION: Final = "UnexpectedAdmissionError"
OUT_OF_PODS: Final = "OutOfpods"


def _now_str() -> str:
    return rfc3339(dt.datetime.now(dt.UTC))


class PodSyncer:
    def __init__(
        self,
        kube: Kube,
        settings: SyncSettings,
        runtime: ContainerRuntime,
        lookup: Callable[[str], RawObj | None],
        nodes: Mapping[str, NodeAgent],
        tokens: TokenManager,
        session: aiohttp.ClientSession,
        enqueue: Callable[[str], None],
        events: EventSink,
        log: KV,
    ) -> None:
        self.records: dict[str, PodRecord] = {}
        self._kube = kube
        self._s = settings
        self._runtime = runtime
        self._lookup = lookup
        self._nodes = nodes
        self._tokens = tokens
        self._session = session
        self._enqueue = enqueue
        self._events = events
        self._log = log
        self._launcher = Launcher(kube, settings, runtime, events, log, self._on_exit)
        self.gpus = GpuAllocator()
        self.ips = IpAllocator()
        self._alloc_file = AllocationFile(settings.state_dir / "allocations.json")
        self._allocs: dict[str, PodAllocation] = {}
        self._saved_at = -ALLOC_SAVE_INTERVAL_S
        self._save_later: asyncio.TimerHandle | None = None
        self._pods_dir = settings.state_dir / "pods"

    # -- start-up -------------------------------------------------------------------------------

    def restore(self, pods: Iterable[RawObj]) -> None:
        """Before any sync: re-take the IPs and GPUs of the live pods a previous kubelet admitted,
        so a new pod can never be given one of them. Drops allocations of pods that are gone."""
        try:
            recorded = self._alloc_file.load()
        except (OSError, ValueError) as e:
            self._log.warning("Cannot read allocations; relying on pod IPs in the API", error=str(e))
            recorded = {}
        for pod in pods:
            meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
            uid, node = str(meta["uid"]), str(spec.get("nodeName", ""))
            if node not in self._nodes or status.get("phase") in TERMINAL_PHASES:
                continue
            alloc = recorded.get(uid)
            ip = status.get("podIP") or (alloc.ip if alloc else None)
            if ip and ip != self._nodes[node].ip and not self.ips.restore(uid, node, ip):
                self._log.error("Pod IP recorded twice; keeping the first", pod=_ref(pod), ip=ip)
            if alloc and alloc.gpus and not self.gpus.restore(uid, node, alloc.gpus):
                self._log.error("GPUs recorded twice; keeping the first", pod=_ref(pod), gpus=alloc.gpus)
            if alloc:
                self._allocs[uid] = alloc
        self._save_allocs()

    def add_node(self, agent: NodeAgent, index: int) -> None:
        self.gpus.add_node(agent.name, agent.table.uuids)
        self.ips.add_node(agent.name, index)

    def remove_orphan_dirs(self, live_uids: set[str]) -> None:
        """Pod directories of pods that no longer exist (deleted while the kubelet was down)."""
        if not self._pods_dir.is_dir():
            return
        for d in self._pods_dir.iterdir():
            if d.name.rsplit("_", 1)[-1] not in live_uids:
                shutil.rmtree(d, ignore_errors=True)

    # -- the sync -------------------------------------------------------------------------------

    async def sync(self, uid: str) -> Outcome:
        pod = self._lookup(uid)
        rec = self.records.get(uid)
        if pod is None:
            return await self._forget(rec) if rec is not None else Done()
        agent = self._nodes.get(str((pod.get("spec") or {}).get("nodeName", "")))
        if agent is None or not agent.runs_pods:
            return Done()
        now = asyncio.get_running_loop().time()
        if rec is None:
            rec = self._new_record(pod, agent, now)
            self.records[uid] = rec
        try:
            return await self._sync(rec, pod, now)
        except _TRANSIENT as e:
            return Retry(f"{type(e).__name__}: {e}")

    async def _sync(self, rec: PodRecord, pod: RawObj, now: float) -> Outcome:
        self._absorb_exits(rec, pod, now)
        deleting = bool(pod["metadata"].get("deletionTimestamp"))
        api_phase = (pod.get("status") or {}).get("phase")
        if rec.terminal is None and api_phase in TERMINAL_PHASES:
            rec.terminal = str(api_phase)  # never leave a terminal phase
        if deleting or rec.terminal is not None:
            return await self._finish(rec, pod, deleting, now)
        if not rec.admitted and not self._admit(rec, pod):
            return await self._finish(rec, pod, deleting, now)
        if not rec.sandbox_ready:
            rec.dir.mkdir(parents=True, exist_ok=True)
            try:
                rec.kubeconfig = await self._tokens.ensure(pod, rec.dir)
            except (*_TRANSIENT, RuntimeError) as e:
                await self._write_status(rec, pod, now)
                return Retry(f"API credentials for the pod: {e}")
            rec.sandbox_ready = True
        wait = await self._run_containers(rec, pod, now)
        self._refresh_readiness(rec, pod)
        phase = self._phase(rec, pod)
        if phase in TERMINAL_PHASES:
            rec.terminal = phase
            return await self._finish(rec, pod, deleting, now)
        lag = await self._write_status(rec, pod, now)
        delays = [d for d in (wait, lag) if d is not None]
        return RequeueAfter(min(delays), "back-off or status check") if delays else Done()

    # -- admission ------------------------------------------------------------------------------

    def _admit(self, rec: PodRecord, pod: RawObj) -> bool:
        spec = pod.get("spec") or {}
        refusal = self._predicate_failure(rec, spec, self._nodes[rec.node])
        if refusal is None:
            try:
                # The resource predicate has made sure enough GPUs are free.
                rec.gpus = self.gpus.allocate(rec.uid, rec.node, pod_gpu_request(spec))
                rec.pod_ip = rec.host_ip if spec.get("hostNetwork") else self.ips.allocate(rec.uid, rec.node)
            except NoAddressError as e:
                self.gpus.release(rec.uid)
                refusal = (OUT_OF_PODS, str(e))
        if refusal is not None:
            reason, message = refusal
            self._log.warning("Rejected pod", pod=rec.ref, node=rec.node, reason=reason, error=message)
            self._events.emit(pod, WARNING, reason, message)
            rec.terminal, rec.terminal_reason = FAILED, (reason, REJECTED_PREFIX + message)
            return False
        rec.admitted = True
        rec.start_time = rec.start_time or _now_str()
        self._allocs[rec.uid] = PodAllocation(rec.ref, rec.node, rec.pod_ip, rec.gpus)
        self._save_allocs()
        rec.dir.mkdir(parents=True, exist_ok=True)
        self._log.progress("Admitted pod", pod=rec.ref, node=rec.node, ip=rec.pod_ip, gpus=",".join(rec.gpus))
        return True

    def _predicate_failure(
        self, rec: PodRecord, spec: Mapping[str, Any], agent: NodeAgent
    ) -> tuple[str, str] | None:
        """The kubelet's own admission predicates, first failure wins, in its order: resources,
        then node affinity. A Pod bound by ``nodeName`` skipped the scheduler, so this is where
        it is stopped; for a scheduled Pod they pass unless the Node changed in between."""
        requested = pod_gpu_request(spec)
        capacity = len(agent.table.uuids)
        used = capacity - len(self.gpus.free(rec.node))
        if requested and requested + used > capacity:
            return (
                f"OutOf{GPU_RESOURCE}",
                f"Node didn't have enough resource: {GPU_RESOURCE}, requested: {requested},"
                f" used: {used}, capacity: {capacity}",
            )
        if node_mismatch(spec, rec.node, agent.labels):
            return NODE_AFFINITY, f"Predicate {NODE_AFFINITY} failed: {NODE_AFFINITY_MISMATCH}"
        return None

    def _release(self, rec: PodRecord) -> None:
        """Free the pod's GPUs and IP; only once its processes are gone."""
        self.gpus.release(rec.uid)
        self.ips.release(rec.uid)
        self._tokens.forget(rec.uid)
        if self._allocs.pop(rec.uid, None) is not None:
            self._save_allocs()

    def _save_allocs(self) -> None:
        """Write allocations.json now, or, within ALLOC_SAVE_INTERVAL_S of the last write, once
        at the end of that interval: each write is the whole file, so a burst of thousands of
        admissions must not write it thousands of times. A lone change is written at once."""
        if self._save_later is not None:
            return  # a write is already due, and will include this change
        loop = asyncio.get_running_loop()
        wait = self._saved_at + ALLOC_SAVE_INTERVAL_S - loop.time()
        if wait > 0:
            self._save_later = loop.call_later(wait, self.flush_allocs)
            return
        self.flush_allocs()

    def flush_allocs(self) -> None:
        """Write allocations.json now (a deferred write is done here too)."""
        if self._save_later is not None:
            self._save_later.cancel()
            self._save_later = None
        self._saved_at = asyncio.get_running_loop().time()
        try:
            self._alloc_file.save(self._allocs)
        except OSError as e:
            self._log.error("Cannot save allocations", path=str(self._alloc_file.path), error=str(e))

    # -- containers -----------------------------------------------------------------------------

    async def _run_containers(self, rec: PodRecord, pod: RawObj, now: float) -> float | None:
        """Start what should run now; returns when to look again (a back-off ending), if ever."""
        spec = pod.get("spec") or {}
        for r, c in zip(rec.init, spec.get("initContainers") or [], strict=False):
            if r.succeeded:
                continue
            if r.running is None and not r.final:
                wait = await self._start(rec, pod, r, c, now)
                if wait is not None or r.running is None:
                    return wait if wait is not None else 0.0
            for a in rec.app:
                if not a.ever_ran:
                    a.set_waiting(ctr.POD_INITIALIZING)
            return None
        waits = []
        for r, c in zip(rec.app, spec.get("containers") or [], strict=False):
            if r.running is None and not r.final:
                wait = await self._start(rec, pod, r, c, now)
                if wait is not None:
                    waits.append(wait)
        return min(waits) if waits else None

    async def _start(
        self, rec: PodRecord, pod: RawObj, r: ContainerRecord, c: Mapping[str, Any], now: float
    ) -> float | None:
        """Try to start one container; returns how long until it should be tried again, if not now."""
        result = await self._launcher.start(rec, pod, r, c, now)
        if isinstance(result, Wait):
            return result.seconds
        if isinstance(result, Failed):
            return self._start_failed(rec, pod, r, result.message, result.container_id, now)
        if self.records.get(rec.uid) is not rec:
            # The node was removed while this start was in flight: kill_node killed the processes
            # it knew and dropped the record, so nothing else would ever stop this one.
            result.handle.kill()
            self._log.info(
                "Killed a container started as its node was removed", pod=rec.ref, container=r.name
            )
            return None
        if not r.init:
            self._start_probes(rec, r, c, result.handle, now)
        return None

    def _start_failed(
        self, rec: PodRecord, pod: RawObj, r: ContainerRecord, message: str, cid: str | None, now: float
    ) -> float | None:
        stamp = _now_str()
        r.on_start_failed(Termination(ctr.START_ERROR_EXIT_CODE, ctr.START_ERROR, stamp, stamp, message, cid))
        self._log.warning("Container failed to start", pod=rec.ref, container=r.name, error=message)
        self._events.emit(pod, WARNING, "Failed", f"Error: {message}")
        return self._after_exit(rec, pod, r, ctr.START_ERROR_EXIT_CODE, 0.0, now)

    def _after_exit(
        self, rec: PodRecord, pod: RawObj, r: ContainerRecord, code: int, ran_for: float, now: float
    ) -> float | None:
        """Decide what follows an exit: nothing (final), or a restart after the returned delay."""
        policy = str((pod.get("spec") or {}).get("restartPolicy") or "Always")
        if pod["metadata"].get("deletionTimestamp") or rec.terminal is not None:
            r.final = True
            return None
        if r.init:
            if code == 0:
                r.final, r.ready = True, True
                return 0.0
            if policy == "Never":
                r.final = True
                return None
            return r.schedule_restart(now, ran_for)
        if ctr.will_restart(policy, code):
            delay = r.schedule_restart(now, ran_for)
            if delay > 0:
                pod_ref = f"{rec.name}_{rec.namespace}({rec.uid})"
                self._events.emit(
                    pod, WARNING, "BackOff", f"Back-off restarting failed container {r.name} in pod {pod_ref}"
                )
            return delay
        r.final = True
        return None

    def _on_exit(self, uid: str, name: str, container_id: str, exit_: Exit) -> None:
        """Runtime callback: note the exit and let the sync loop handle it."""
        rec = self.records.get(uid)
        if rec is not None:
            rec.pending_exits[name] = (container_id, exit_)
            self._enqueue(uid)

    def _absorb_exits(self, rec: PodRecord, pod: RawObj, now: float) -> None:
        """Apply the exits the runtime reported since the last sync (restarts wait for _start)."""
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

    # -- probes -----------------------------------------------------------------------------------

    def _start_probes(
        self, rec: PodRecord, r: ContainerRecord, c: Mapping[str, Any], handle: ContainerHandle, now: float
    ) -> None:
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
        rec = self.records.get(uid)
        if rec is None:
            return
        word = "succeeded" if ok else f"failed: {detail}"
        self._log.progress(f"{kind.capitalize()} probe {word}", pod=rec.ref, container=name)
        pod = self._lookup(uid)
        if not ok and pod is not None:
            self._events.emit(pod, WARNING, "Unhealthy", f"{kind.capitalize()} probe failed: {detail}")
        self._enqueue(uid)

    def _refresh_readiness(self, rec: PodRecord, pod: RawObj) -> None:
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
                self._stop_container(rec, r.name, self._grace(pod, deleting=False))

    # -- status -----------------------------------------------------------------------------------

    def _phase(self, rec: PodRecord, pod: RawObj, terminating: bool = False) -> str:
        policy = str((pod.get("spec") or {}).get("restartPolicy") or "Always")
        return rec.terminal or pod_phase(policy, rec.init, rec.app, terminating)

    async def _write_status(self, rec: PodRecord, pod: RawObj, now: float) -> float | None:
        """Patch the status if it differs from the API's; returns a re-check delay when the
        informer may still lag behind our previous write."""
        meta, spec, current = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        phase = self._phase(rec, pod)
        gates = [str(g.get("conditionType")) for g in spec.get("readinessGates") or []]
        others = {str(c.get("type")): str(c.get("status")) for c in current.get("conditions") or []}
        generation = meta.get("generation")
        conditions = owned_conditions(phase, rec.init, rec.app, rec.sandbox_ready, gates, others)
        reason, message = rec.terminal_reason or (None, None)
        body = status_body(
            PodStatusInput(
                phase=phase,
                conditions=rec.conditions.stamp(conditions, _now_str(), generation),
                init=rec.init,
                app=rec.app,
                pod_ip=rec.pod_ip,
                host_ip=rec.host_ip,
                start_time=rec.start_time,
                pod_ref=f"{rec.name}_{rec.namespace}({rec.uid})",
                generation=generation,
                reason=reason,
                message=message,
            )
        )
        if status_up_to_date(body, current):
            rec.last_sent = body
            return None
        if body == rec.last_sent and now - rec.last_sent_at < STATUS_LAG_S:
            return STATUS_LAG_S
        try:
            await self._kube.patch(
                PODS, rec.name, status_patch(rec.uid, body), rec.namespace, subresource="status"
            )
        except ApiError as e:
            if e.not_found or e.conflict:
                return None  # gone or replaced by a namesake; the informer will say which
            raise
        rec.last_sent, rec.last_sent_at = body, now
        return None

    # -- termination ------------------------------------------------------------------------------

    def _grace(self, pod: RawObj, deleting: bool) -> float:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        value = meta.get("deletionGracePeriodSeconds") if deleting else None
        if value is None:
            value = spec.get("terminationGracePeriodSeconds", 30)
        return max(0.0, min(float(value), self._s.max_grace))

    def _stop_container(self, rec: PodRecord, name: str, grace: float) -> None:
        handle = rec.handles.get(name)
        if handle is None or name in rec.stopping:
            return
        task = asyncio.get_running_loop().create_task(handle.stop(grace), name=f"stop-{rec.ref}-{name}")
        rec.stopping[name] = task
        task.add_done_callback(lambda _: rec.stopping.pop(name, None))

    async def _finish(self, rec: PodRecord, pod: RawObj, deleting: bool, now: float) -> Outcome:
        """Stop everything, report the terminal phase, release resources, finish a deletion."""
        grace = self._grace(pod, deleting)
        for name in list(rec.handles):
            if name not in rec.stopping:
                self._events.emit(pod, NORMAL, "Killing", f"Stopping container {name}")
            self._stop_container(rec, name, grace)
        for worker in rec.probes.values():
            worker.cancel()
        rec.probes.clear()
        if rec.handles:
            return RequeueAfter(grace + 2.0, "waiting for containers to stop")
        stamp = _now_str()
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
        rec.terminal = rec.terminal or self._phase(rec, pod, terminating=True)
        rec.sandbox_ready = False
        await self._write_status(rec, pod, now)
        self._release(rec)
        if deleting and not rec.delete_sent:
            await self._delete(rec)
        return Done()

    async def _delete(self, rec: PodRecord) -> None:
        try:
            await self._kube.delete(PODS, rec.name, rec.namespace, uid=rec.uid, grace_period_seconds=0)
        except ApiError as e:
            if not (e.not_found or e.conflict):
                raise
        rec.delete_sent = True
        self._log.progress("Pod terminated and deleted", pod=rec.ref, phase=rec.terminal)

    async def _forget(self, rec: PodRecord) -> Outcome:
        """The pod is gone from the API: stop its processes, free everything, drop its files."""
        rec.handles = {n: h for n, h in rec.handles.items() if h.status() is None}
        for name in list(rec.handles):
            self._stop_container(rec, name, GONE_GRACE_S)
        for worker in rec.probes.values():
            worker.cancel()
        rec.probes.clear()
        if rec.handles:
            return RequeueAfter(GONE_GRACE_S + 2.0, "waiting for the processes of a deleted pod")
        self._release(rec)
        self.records.pop(rec.uid, None)
        await asyncio.to_thread(shutil.rmtree, rec.dir, True)
        return Done()

    async def kill_node(self, node: str) -> None:
        """The node's machine died: SIGKILL its pods' processes, wait for them, forget its pods."""
        recs = [r for r in self.records.values() if r.node == node]
        handles = [h for rec in recs for h in rec.handles.values()]
        for h in handles:
            h.kill()
        if handles:
            await asyncio.gather(*(h.stop(0) for h in handles), return_exceptions=True)
        for rec in recs:
            for worker in rec.probes.values():
                worker.cancel()
            self.records.pop(rec.uid, None)
            self._tokens.forget(rec.uid)
            self._allocs.pop(rec.uid, None)
        self.gpus.release_node(node)
        self.ips.release_node(node)
        self._save_allocs()
        self._log.info("Killed the pods of a removed node", node=node, pods=len(recs), processes=len(handles))

    # -- recovery -------------------------------------------------------------------------------

    def _new_record(self, pod: RawObj, agent: NodeAgent, now: float) -> PodRecord:
        meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        uid = str(meta["uid"])
        backoff = partial(CrashBackoff, self._s.backoff_base, self._s.backoff_cap)
        init = [
            ContainerRecord(str(c["name"]), str(c.get("image", "")), backoff(), init=True)
            for c in spec.get("initContainers") or []
        ]
        app = [
            ContainerRecord(str(c["name"]), str(c.get("image", "")), backoff())
            for c in spec.get("containers") or []
        ]
        rec = PodRecord(
            uid=uid,
            namespace=str(meta["namespace"]),
            name=str(meta["name"]),
            node=agent.name,
            dir=self._pods_dir / pod_dir_name(str(meta["namespace"]), str(meta["name"]), uid),
            host_ip=agent.ip,
            init=init,
            app=app,
            conditions=ConditionClock.from_api(status.get("conditions") or []),
            start_time=status.get("startTime"),
        )
        alloc = self._allocs.get(uid)
        if alloc is not None or status.get("podIP"):
            self._recover(rec, pod, alloc, now)
        return rec

    def _recover(self, rec: PodRecord, pod: RawObj, alloc: PodAllocation | None, now: float) -> None:
        """A previous kubelet admitted this pod: take over its IP, GPUs and container history."""
        status = pod.get("status") or {}
        rec.admitted = True
        rec.pod_ip = status.get("podIP") or (alloc.ip if alloc else None)
        if rec.pod_ip and rec.pod_ip != rec.host_ip and not self.ips.restore(rec.uid, rec.node, rec.pod_ip):
            self._log.error("Pod IP is taken by another pod", pod=rec.ref, ip=rec.pod_ip)
        rec.gpus = alloc.gpus if alloc else ()
        if rec.gpus and not self.gpus.restore(rec.uid, rec.node, rec.gpus):
            self._log.error("Recorded GPUs are held by another pod", pod=rec.ref, gpus=",".join(rec.gpus))
        wanted = pod_gpu_request(pod.get("spec") or {})
        if not rec.gpus and wanted:
            # No record survived (lost file, or the node was removed and re-added): allocate anew.
            try:
                rec.gpus = self.gpus.allocate(rec.uid, rec.node, wanted)
            except InsufficientGpusError as e:
                rec.terminal, rec.terminal_reason = FAILED, (UNEXPECTED_ADMISSION, REJECTED_PREFIX + str(e))
        self._allocs[rec.uid] = PodAllocation(rec.ref, rec.node, rec.pod_ip, rec.gpus)
        self._save_allocs()
        by_name = {
            str(s.get("name")): s
            for s in (*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or []))
        }
        for r in (*rec.init, *rec.app):
            api = by_name.get(r.name)
            if ctr.recover(r, api) and api is not None:
                started = str(((api.get("state") or {}).get("running") or {}).get("startedAt") or _now_str())
                r.running = Running(str(api.get("containerID") or ""), started, now)
                term = Termination(
                    ctr.STATUS_UNKNOWN_EXIT_CODE,
                    ctr.STATUS_UNKNOWN,
                    _now_str(),
                    started,
                    RESTARTED_MESSAGE,
                    r.running.container_id,
                )
                r.on_exited(term, now)
                self._after_exit(rec, pod, r, term.exit_code, 0.0, now)
            elif r.init and r.last is not None and r.last.exit_code == 0:
                r.final, r.ready = True, True
        self._log.info(
            "Recovered pod from a previous kubelet", pod=rec.ref, ip=rec.pod_ip, gpus=",".join(rec.gpus)
        )

    # -- logs -------------------------------------------------------------------------------------

    def find(self, node: str, namespace: str, name: str) -> PodRecord | None:
        for rec in self.records.values():
            if rec.node == node and rec.namespace == namespace and rec.name == name:
                return rec
        return None


async def _exec_probe(handle: ContainerHandle, command: tuple[str, ...] | list[str], timeout: float) -> bool:
    """An exec probe runs in the container: only allowlisted programs, with its environment."""
    if not command or os.path.basename(command[0]) not in images.COMMAND_ALLOWLIST:
        return False
    with contextlib.suppress(OSError):
        return await handle.exec_sync(list(command), timeout) == 0
    return False


def _ref(pod: RawObj) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"
