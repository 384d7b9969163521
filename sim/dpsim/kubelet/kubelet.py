"""The simulated kubelet process: wires nodes, the pod informer, the sync workers and the servers.

Two informers: every scheduled pod (what to sync), and the Nodes (their labels, for admission).

Start-up order matters for restart safety: the pod informer lists every scheduled pod first, the
IPs and GPUs recorded for live pods are re-taken, stale pod directories are removed, and only then
do the workers start, so no new pod can be handed an address or a GPU an old one still holds.

State directory (``--state-dir``), what survives a restart:

- ``allocations.json``: IP and GPUs per live pod UID (see ``allocations``);
- ``gpus/<node>.json``: each node's GPU table (deterministic, rewritten at registration);
- ``pods/<ns>_<name>_<uid>/``: per pod ``home/``, ``tmp/``, ``serviceaccount/`` (``token``,
  ``ca.crt``, ``namespace``), ``kubeconfig``, ``volumes/<emptyDir>/`` (real containers)
  and ``logs/<container>/<n>.log`` (current and previous instance); removed with the pod;
- ``bin/nvidia-smi``: the shim every container finds first on its PATH;
- ``kubelet/pki/<node>.{crt,key}``: each node's serving certificate (reissued at start);
- ``kubelet-admin.json``: the admin API's port and pid, removed on a clean exit.

Container processes never survive the kubelet; what the API says about them is reconciled on
the next start (see ``podsync``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import aiohttp

from dpctl import log
from dpctl.informer import Informer, kube_lister
from dpctl.kube import NODES, PODS, Kube, RawObj, objects
from dpctl.workqueue.queue import RateLimitingQueue
from dpctl.workqueue.workers import run_workers
from dpsim.kubelet.admin import AdminServer
from dpsim.kubelet.events import PodEvents
from dpsim.kubelet.hollow import HollowRuntime, LedgerMode
from dpsim.kubelet.hollownet import ListenMode
from dpsim.kubelet.ips import LOOPBACK, AddressPlan, node_index, node_name
from dpsim.kubelet.logserver import LogServer
from dpsim.kubelet.nodes import NodeAgent, NodeShape
from dpsim.kubelet.podman import PodmanRuntime
from dpsim.kubelet.podrecord import SyncSettings
from dpsim.kubelet.podsync import PodSyncer
from dpsim.kubelet.runtime import ProcessRuntime, reap_orphans
from dpsim.kubelet.tokens import ClusterAccess, TokenManager
from dpsim.localcluster import pki
from dpsim.nvidiasmi import write_nvidia_smi_shim
from dpsim.pythonpath import with_our_packages

_log = log.get("sim-kubelet")

# Bounds the queue by distinct pods with pending work; far above what one process serves.
MAX_QUEUED_PODS: Final = 20000
RESYNC_S: Final = 60.0
TOKEN_CHECK_S: Final = 60.0
SHUTDOWN_GRACE_S: Final = 2.0
SUPERVISOR_RESTART_S: Final = 1.0
# Passed from the kubelet's own environment to every container (the rest comes from the pod).
HOST_ENV_KEYS: Final = ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONPATH")


class KubeletError(RuntimeError):
    """The kubelet cannot run; the message says why in words a user can act on."""


@dataclass(frozen=True)
class KubeletConfig:
    kubeconfig: Path
    state_dir: Path
    nodes: int
    gpus: int
    gpu_product: str = "NVIDIA-L40S"
    node_prefix: str = "node-"
    ca_cert: Path | None = None
    ca_key: Path | None = None
    kubelet_port: int = 10250
    # Where node and pod addresses come from, and which of its blocks is this cluster's (ips.py).
    address_plan: AddressPlan = LOOPBACK
    address_block: int = 0
    # The host's network namespace, when this kubelet runs in the local cluster's own: image
    # pulls reach a registry on the host's loopback from there.
    host_netns: Path | None = None
    backoff_base: float = 1.0
    backoff_cap: float = 300.0
    max_grace: float = 30.0
    status_interval: float = 60.0
    workers: int = 8
    python: str = field(default_factory=lambda: sys.executable)
    # Requester stubs and vLLM emulators in this process (see ``hollow``).
    hollow: bool = False
    hollow_listen: ListenMode = "pod"
    hollow_ledger: LedgerMode = "memory"
    # Images whose reference starts with one of these run as real containers under podman.
    podman_images: tuple[str, ...] = ()


def _base_env(python: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in HOST_ENV_KEYS if os.environ.get(k)}
    env["PYTHONPATH"] = with_our_packages(env.get("PYTHONPATH"))
    env["PATH"] = os.pathsep.join([str(Path(python).parent), env.get("PATH", "/usr/bin:/bin")])
    return env


async def _supervised(run: Callable[[], Awaitable[None]], what: str) -> None:
    """Keep a loop alive through a bug: log it and start over, instead of taking the kubelet down."""
    while True:
        try:
            await run()
            return
        except Exception:
            _log.exception(f"The {what} loop failed unexpectedly; restarting it")
            await asyncio.sleep(SUPERVISOR_RESTART_S)


def _uid_of(pod: RawObj) -> list[str]:
    return [objects.uid(pod)]


def _node_of(pod: RawObj) -> list[str]:
    return [str((pod.get("spec") or {}).get("nodeName", ""))]


class SimKubelet:
    """One running simulated kubelet. Build and run it with :meth:`serve`."""

    def __init__(
        self,
        cfg: KubeletConfig,
        kube: Kube,
        version: str,
        session: aiohttp.ClientSession,
        runtime: ProcessRuntime | HollowRuntime,
        podman: PodmanRuntime | None = None,
    ) -> None:
        self.cfg = cfg
        self.agents: dict[str, NodeAgent] = {}
        self._kube = kube
        self._version = version
        self._shape = NodeShape(cfg.gpus, cfg.gpu_product)
        self._group: asyncio.TaskGroup | None = None
        shim_dir = cfg.state_dir / "bin"
        write_nvidia_smi_shim(shim_dir, cfg.python)
        self._queue: RateLimitingQueue[str] = RateLimitingQueue("sim-kubelet-pods", max_depth=MAX_QUEUED_PODS)
        self._informer = Informer(
            "sim-kubelet-pods",
            kube_lister(kube, PODS, field_selector="spec.nodeName!="),
            indexers={"uid": _uid_of, "node": _node_of},
        )
        # Admission matches Pods against their Node's labels as the API has them now.
        self._node_informer = Informer("sim-kubelet-nodes", kube_lister(kube, NODES))
        self._node_informer.add_handlers(on_add=self._on_node, on_update=lambda _, new: self._on_node(new))
        access = ClusterAccess.from_kubeconfig(cfg.kubeconfig)
        settings = SyncSettings(
            state_dir=cfg.state_dir,
            python=cfg.python,
            shim_dir=shim_dir,
            backoff_base=cfg.backoff_base,
            backoff_cap=cfg.backoff_cap,
            max_grace=cfg.max_grace,
            base_env=_base_env(cfg.python),
            node_allocatable=self._shape.resources(),
            api_server=access.server,
            address_plan=cfg.address_plan,
        )
        self._tokens = TokenManager(kube, access)
        self._events = PodEvents(kube)
        self.syncer = PodSyncer(
            kube,
            settings,
            runtime,
            self._lookup,
            self.agents,
            self._tokens,
            session,
            self._enqueue,
            self._events,
            _log,
            podman,
        )
        ca = pki.load_ca(cfg.ca_cert, cfg.ca_key) if cfg.ca_cert and cfg.ca_key else None
        self._logs = LogServer(self.syncer.find, cfg.state_dir / "kubelet" / "pki", ca, cfg.ca_cert, _log)
        ledger = runtime.ledger if isinstance(runtime, HollowRuntime) else None
        # On the first node's address: the tests reach it wherever this kubelet's network is (the
        # host's loopback, or the local cluster's namespace through its veth pair).
        admin_host = cfg.address_plan.node_ip(cfg.address_block * cfg.address_plan.nodes_per_block)
        self._admin = AdminServer(cfg.state_dir, admin_host, self.agents, self._add_node, _log, ledger)
        self._informer.add_handlers(
            on_add=self._on_pod, on_update=lambda _, new: self._on_pod(new), on_delete=self._on_pod
        )

    @classmethod
    async def serve(cls, cfg: KubeletConfig) -> None:
        """Run until cancelled; every container process is stopped on the way out."""
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        kube = await Kube.connect(str(cfg.kubeconfig))
        session = aiohttp.ClientSession()
        runtime: ProcessRuntime | HollowRuntime = (
            HollowRuntime(cfg.state_dir, cfg.hollow_listen, cfg.hollow_ledger)
            if cfg.hollow
            else ProcessRuntime()
        )
        podman = (
            PodmanRuntime(cfg.state_dir, cfg.podman_images, _log, cfg.host_netns)
            if cfg.podman_images
            else None
        )
        kubelet: SimKubelet | None = None
        try:
            version = str((await kube.request_json("GET", "/version")).get("gitVersion", "v0.0.0"))
            kubelet = cls(cfg, kube, version, session, runtime, podman)
            await kubelet.run()
        finally:
            running = runtime.running() + (podman.running() if podman else 0)
            _log.info("Simulated kubelet stopping: stopping containers", containers=running)
            await asyncio.gather(
                runtime.shutdown(SHUTDOWN_GRACE_S), *([podman.shutdown(SHUTDOWN_GRACE_S)] if podman else [])
            )
            if kubelet is not None:
                await kubelet.close()
            await session.close()
            await kube.close()

    async def run(self) -> None:
        orphans = await asyncio.to_thread(reap_orphans, self.cfg.state_dir)
        if orphans:
            _log.warning("Killed processes a previous kubelet left behind", pids=orphans)
        for i in range(self.cfg.nodes):
            await self._add_agent(node_name(self.cfg.node_prefix, i))
        async with asyncio.TaskGroup() as group:
            self._group = group
            group.create_task(self._informer.run(), name="pod-informer")
            group.create_task(self._node_informer.run(), name="node-informer")
            for agent in self.agents.values():
                self._spawn(agent)
            await self._admin.start()
            _log.info(
                "Simulated kubelet running",
                nodes=self.cfg.nodes,
                gpus=self.cfg.gpus,
                version=self._version,
                hollow=self.cfg.hollow,
            )
            await self._informer.wait_synced()
            await self._node_informer.wait_synced()
            live = self._informer.store.list()
            self.syncer.restore(live)
            self.syncer.remove_orphan_dirs({objects.uid(p) for p in live})
            group.create_task(self._resync_loop(), name="resync")
            group.create_task(self._token_loop(), name="tokens")
            group.create_task(
                run_workers(self._queue, self.syncer.sync, self.cfg.workers, _log), name="pod-workers"
            )

    async def close(self) -> None:
        self.syncer.flush_allocs()
        await self._admin.close()
        await self._logs.close()
        await self._events.close()

    # -- nodes ----------------------------------------------------------------------------------

    async def _add_agent(self, name: str) -> NodeAgent:
        plan = self.cfg.address_plan
        index = node_index(name, self.cfg.node_prefix) + self.cfg.address_block * plan.nodes_per_block
        agent = NodeAgent(
            self._kube,
            name,
            plan.node_ip(index),
            self.cfg.kubelet_port,
            self._shape,
            self._version,
            self.cfg.state_dir,
            status_interval=self.cfg.status_interval,
            on_removed=self._node_removed,
            on_boot=self._logs.start_node,
            on_pods_resume=self._resume_pods,
            log=_log,
        )
        self.agents[name] = agent
        self.syncer.add_node(agent, index)
        try:
            await self._logs.start_node(agent)
        except OSError as e:
            raise KubeletError(
                f"node {name}: cannot serve its kubelet endpoint on {agent.ip}:{agent.port} ({e});"
                " is another local cluster running? (--kubelet-port picks another port)"
            ) from e
        return agent

    async def _add_node(self, name: str) -> NodeAgent:
        """The admin API's ``add`` for a node this process did not start with."""
        agent = await self._add_agent(name)
        self._spawn(agent)
        async with asyncio.timeout(60):
            await agent.registered.wait()
        return agent

    def _spawn(self, agent: NodeAgent) -> None:
        if self._group is None:
            raise RuntimeError("the kubelet is not running")
        self._group.create_task(_supervised(agent.run, f"node {agent.name}"), name=f"node-{agent.name}")

    async def _node_removed(self, name: str) -> None:
        await self.syncer.kill_node(name)
        await self._logs.stop_node(name)

    def _on_node(self, node: RawObj) -> None:
        agent = self.agents.get(objects.name(node))
        if agent is not None:
            agent.observe(node)

    def _resume_pods(self, name: str) -> None:
        for pod in self._informer.store.by_index("node", name):
            self._enqueue(objects.uid(pod))

    # -- pods -----------------------------------------------------------------------------------

    def _lookup(self, uid: str) -> RawObj | None:
        found = self._informer.store.by_index("uid", uid)
        return found[0] if found else None

    def _on_pod(self, pod: RawObj) -> None:
        node = str((pod.get("spec") or {}).get("nodeName", ""))
        if node in self.agents:
            self._enqueue(objects.uid(pod))

    def _enqueue(self, uid: str) -> None:
        self._queue.add(uid)

    async def _resync_loop(self) -> None:
        """Like the kubelet's periodic sync: every pod is looked at again now and then, so a
        missed event or a lost write is repaired (a sync with nothing to do writes nothing)."""
        while True:
            await asyncio.sleep(RESYNC_S)
            for uid in list(self.syncer.records):
                with contextlib.suppress(Exception):
                    self._enqueue(uid)

    async def _token_loop(self) -> None:
        while True:
            await asyncio.sleep(TOKEN_CHECK_S)
            failed = await self._tokens.refresh_due()
            if failed:
                _log.warning("Could not refresh some pod tokens; will retry", pods=len(failed))
