"""The pod sync loop: what the simulated kubelet does for each pod bound to one of its nodes.

One workqueue item per pod UID; :meth:`PodSyncer.sync` looks at the pod (from the informer's
cache) and at the kubelet's own record of it (``podrecord``), and runs the steps that are due,
each in its own module:

1. admission (``admission``): the kubelet's predicates (GPUs free, node affinity), then the
   pod's GPUs and IP (``resources``); a rejected pod fails with the kubelet's words;
2. the "sandbox": the pod's directory, and API credentials (token + kubeconfig, ``tokens``) when
   it gets them;
3. containers (``lifecycle``): init containers one at a time in order, then every app container,
   restarts per ``restartPolicy`` with crash-loop back-off; probes (``probing``) decide
   readiness, and a failed liveness probe restarts its container;
4. status (``statussync``): written only when it differs from what the API has;
5. termination (``termination``): on ``deletionTimestamp`` or a terminal phase stop everything,
   report it, release GPUs and IP, delete the pod; a pod gone from the API has its processes
   stopped and its files removed;
6. recovery (``recovery``): after a kubelet restart, every container process is gone; records are
   rebuilt from the API status and ``allocations.json`` at each pod's first sync, and containers
   the API says were running are reported exited (``ContainerStatusUnknown``, 137) and restarted
   as their policy says.

Nothing here blocks: stopping runs in background tasks, and process exits and probe results
arrive through callbacks that only record and enqueue. This module wires the steps and keeps the
records; it decides only the order.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterable, Mapping
from functools import partial

import aiohttp

from dpctl.kube import Kube, RawObj, objects
from dpctl.log import KV
from dpctl.workqueue.outcome import Done, Outcome, RequeueAfter, Retry
from dpsim.kubelet.admission import Admission
from dpsim.kubelet.allocations import PodAllocation
from dpsim.kubelet.containers import CrashBackoff, now_rfc3339
from dpsim.kubelet.devices import pod_gpu_request
from dpsim.kubelet.events import EventSink
from dpsim.kubelet.lifecycle import Lifecycle
from dpsim.kubelet.nodes import NodeAgent
from dpsim.kubelet.podman import PodmanRuntime
from dpsim.kubelet.podrecord import TRANSIENT_ERRORS, PodRecord, SyncSettings, container_records, pod_dir_name
from dpsim.kubelet.probing import Probing
from dpsim.kubelet.recovery import claimed_ip, needs_recovery, recover, startup_claims
from dpsim.kubelet.resources import PodResources
from dpsim.kubelet.runtime import ContainerRuntime
from dpsim.kubelet.status import TERMINAL_PHASES, ConditionClock
from dpsim.kubelet.statussync import StatusWriter, phase
from dpsim.kubelet.termination import Terminator
from dpsim.kubelet.tokens import TokenManager


class PodSyncer:
    """The sync of every pod of this kubelet's nodes. It takes the kubelet's parts; each step
    gets only those it uses."""

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
        podman: PodmanRuntime | None = None,
    ) -> None:
        self.records: dict[str, PodRecord] = {}
        self._s = settings
        self._lookup = lookup
        self._nodes = nodes
        self._tokens = tokens
        self._log = log
        self._pods_dir = settings.state_dir / "pods"
        self._resources = PodResources(settings.state_dir / "allocations.json", log, settings.address_plan)
        self.gpus = self._resources.gpus
        self.ips = self._resources.ips
        self._admission = Admission(self._resources, nodes, events, log)
        self._status = StatusWriter(kube)
        self._termination = Terminator(
            kube, self.records, self._resources, tokens, events, self._status.write, settings.max_grace, log
        )
        self._probing = Probing(self.records, lookup, session, enqueue, events, self._termination.grace, log)
        self._lifecycle = Lifecycle(
            kube, settings, runtime, self.records, self._probing, enqueue, events, log, podman
        )

    # -- start-up -------------------------------------------------------------------------------

    def restore(self, pods: Iterable[RawObj]) -> None:
        """Before any sync: re-take the IPs and GPUs of the live pods a previous kubelet admitted,
        so a new pod can never be given one of them. Drops allocations of pods that are gone."""
        node_ips = {name: agent.ip for name, agent in self._nodes.items()}
        self._resources.restore(startup_claims(pods, self._resources.load_recorded(), node_ips))

    def add_node(self, agent: NodeAgent, index: int) -> None:
        self._resources.add_node(agent.name, agent.table.uuids, index)

    def remove_orphan_dirs(self, live_uids: set[str]) -> None:
        """Pod directories of pods that no longer exist (deleted while the kubelet was down)."""
        if not self._pods_dir.is_dir():
            return
        for d in self._pods_dir.iterdir():
            if d.name.rsplit("_", 1)[-1] not in live_uids:
                shutil.rmtree(d, ignore_errors=True)

    def flush_allocs(self) -> None:
        """Write allocations.json now (a deferred write is done here too)."""
        self._resources.flush()

    # -- the sync -------------------------------------------------------------------------------

    async def sync(self, uid: str) -> Outcome:
        pod = self._lookup(uid)
        rec = self.records.get(uid)
        if pod is None:
            return await self._termination.forget(rec) if rec is not None else Done()
        agent = self._nodes.get(str((pod.get("spec") or {}).get("nodeName", "")))
        if agent is None or not agent.runs_pods:
            return Done()
        now = asyncio.get_running_loop().time()
        if rec is None:
            rec = self._new_record(pod, agent, now)
            self.records[uid] = rec
        try:
            return await self._sync(rec, pod, now)
        except TRANSIENT_ERRORS as e:
            return Retry(f"{type(e).__name__}: {e}")

    async def _sync(self, rec: PodRecord, pod: RawObj, now: float) -> Outcome:
        self._lifecycle.absorb_exits(rec, pod, now)
        deleting = objects.is_deleting(pod)
        api_phase = (pod.get("status") or {}).get("phase")
        if rec.terminal is None and api_phase in TERMINAL_PHASES:
            rec.terminal = str(api_phase)  # never leave a terminal phase
        if deleting or rec.terminal is not None:
            return await self._termination.finish(rec, pod, deleting, now)
        if not rec.admitted and not self._admission.admit(rec, pod):
            return await self._termination.finish(rec, pod, deleting, now)
        if not rec.sandbox_ready:
            why = await self._sandbox(rec, pod)
            if why is not None:
                await self._status.write(rec, pod, now)
                return Retry(f"API credentials for the pod: {why}")
        wait = await self._lifecycle.run(rec, pod, now)
        self._probing.refresh_readiness(rec, pod)
        ended = phase(rec, pod)
        if ended in TERMINAL_PHASES:
            rec.terminal = ended
            return await self._termination.finish(rec, pod, deleting, now)
        lag = await self._status.write(rec, pod, now)
        delays = [d for d in (wait, lag) if d is not None]
        return RequeueAfter(min(delays), "back-off or status check") if delays else Done()

    async def _sandbox(self, rec: PodRecord, pod: RawObj) -> str | None:
        """Step 2: the pod's directory and API credentials; why not, when they cannot be had yet."""
        rec.dir.mkdir(parents=True, exist_ok=True)
        try:
            rec.kubeconfig = await self._tokens.ensure(pod, rec.dir)
        except (*TRANSIENT_ERRORS, RuntimeError) as e:
            return str(e)
        rec.sandbox_ready = True
        return None

    # -- recovery (the pure rules are recovery.recover) -----------------------------------------

    def _new_record(self, pod: RawObj, agent: NodeAgent, now: float) -> PodRecord:
        meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        uid, namespace, name = str(meta["uid"]), str(meta["namespace"]), str(meta["name"])
        backoff = partial(CrashBackoff, self._s.backoff_base, self._s.backoff_cap)
        init, app = container_records(spec, backoff)
        rec = PodRecord(
            uid=uid,
            namespace=namespace,
            name=name,
            node=agent.name,
            dir=self._pods_dir / pod_dir_name(namespace, name, uid),
            host_ip=agent.ip,
            init=init,
            app=app,
            conditions=ConditionClock.from_api(status.get("conditions") or []),
            start_time=status.get("startTime"),
        )
        alloc = self._resources.recorded(uid)
        if not needs_recovery(pod, alloc):
            return rec
        retaken = self._resources.retake(
            uid,
            rec.node,
            rec.host_ip,
            claimed_ip(pod, alloc),
            alloc.gpus if alloc else (),
            pod_gpu_request(spec),
        )
        found = recover(pod, alloc, retaken, backoff, now, now_rfc3339())
        rec.admitted = True
        rec.pod_ip, rec.gpus, rec.init, rec.app = found.pod_ip, found.gpus, found.init, found.app
        rec.terminal, rec.terminal_reason = found.terminal, found.terminal_reason
        self._resources.record(uid, PodAllocation(rec.ref, rec.node, rec.pod_ip, rec.gpus))
        for report in found.reports:
            self._log.log(report.level, report.message, **report.fields)
        return rec

    # -- nodes and logs -------------------------------------------------------------------------

    async def kill_node(self, node: str) -> None:
        """The node's machine died: SIGKILL its pods' processes, wait for them, forget its pods."""
        await self._termination.kill_node(node)

    def find(self, node: str, namespace: str, name: str) -> PodRecord | None:
        for rec in self.records.values():
            if rec.node == node and rec.namespace == namespace and rec.name == name:
                return rec
        return None
