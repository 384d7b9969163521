"""``make bench``: actuation latency and scale of the dual-pods controller on a hollow local cluster.

    .venv/bin/python -m bench.run [--requesters R] [--nodes N] [--gpus-per-node G] [--quick] ...

Brings up a local cluster whose simulated kubelet is *hollow* (requester stubs and vLLM emulators
served in-process), runs ``dpctl controller`` as a local process (so its CPU and peak RSS come
from ``/proc``), and runs three scenarios:

1. **cold burst**: R requesters at once, one ReplicaSet per node (``n<k>-a``), every GPU filled
   when R = N·G; every actuation creates a runner.
2. **wake churn**: sets scaled to 0 and back up. Round 1 brings the same model back on the same
   GPUs, so every requester wakes its sleeper (hot); round 2 brings half the GPUs back with the
   other model (cold, a new runner beside a sleeper) and half with the same (hot), at once.
3. **restart**: the namespace is filled up to 10,000 Pods with gated Pods that never run, then
   the controller is restarted: time from its start to caches synced, and to its first reconcile.

Figures (median and p99 over the run): the controller-added latency per step (its own histogram
``dpctl_controller_added_seconds``), end-to-end actuation per path (requester created → Ready, on
the benchmark's watch), API writes per actuation (the controller's own
``dpctl_api_request_duration_seconds`` counts, create/patch/update/delete), controller CPU per
actuation, peak RSS, and sync time with 10,000 Pods. Also what bounds them: the API server's and
the pods' latencies as the controller saw them, and its workqueue wait, in the same run.

Prints a one-line JSON summary last; the full result goes to ``bench/results/<timestamp>.json``
with a plot of cold and hot actuation latencies beside it. Builds nothing: the Kubernetes
binaries come from ``hack/bins/build.sh``'s cache (``make bins``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop
import yaml

from bench import launcher, report
from bench.observe import ControllerProcess, PodTracker
from bench.workload import MODELS, Timing, filler_pod, gpu_map, replica_set, set_name
from dpctl.clients.requester import PURPOSE_ACCELERATORS as GPU_QUERY
from dpctl.kube import CONFIGMAPS, NAMESPACES, PODS, REPLICASETS, SERVICEACCOUNTS, ApiError, Kube
from dpsim.kubelet import ctl
from dpsim.localcluster.bins import BinsError, resolve_bins
from dpsim.localcluster.cluster import LocalCluster
from dpsim.localcluster.controlplane import CONTROLLER_MANAGER, SCHEDULER, ControlPlaneSettings, Layout

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "bench"
# The recipe's real delays (vLLM loading a 2B model, waking from level-1 sleep, falling asleep),
# divided by TIME_SCALE so a run takes minutes. Probe periods cannot go below 1 s.
REAL_LOAD_S, REAL_WAKE_S, REAL_SLEEP_S = 30.0, 2.0, 1.0
TIME_SCALE = 10.0
API_CONCURRENCY = 64
SCENARIOS = ("all", "direct", "launcher")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--requesters", type=int, default=None, help="requesters in the cold burst (default N·G)")
    p.add_argument(
        "--nodes",
        type=int,
        default=None,
        help="simulated GPU nodes (default 32, what a 2-core machine runs in minutes; --quick 4)",
    )
    p.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node (default 8)")
    p.add_argument("--quick", action="store_true", help="a small run for a smoke test (4 nodes, 2,000 Pods)")
    p.add_argument(
        "--pods-total", type=int, default=None, help="Pods in the namespace at the restart (10,000)"
    )
    p.add_argument(
        "--churn-fraction", type=float, default=0.5, help="share of the sets each churn round moves"
    )
    p.add_argument("--time-scale", type=float, default=TIME_SCALE, help="real delays divided by this")
    p.add_argument(
        "--probe-period",
        type=int,
        default=None,
        help="readiness probe period of both pods, seconds (default 1; 2 above 32 nodes, 5 above 64, so"
        " that one process can probe every container)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=128,
        help="the controller's --num-workers (default 128; the chart's default, 32, queues a burst of hundreds)",
    )
    p.add_argument("--verbosity", type=int, default=2, help="the controller's -v")
    p.add_argument("--state-dir", type=Path, default=None, help="the cluster's state (default: a temp dir)")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results", help="where results go")
    p.add_argument("--keep", action="store_true", help="leave the cluster and controller running")
    p.add_argument("--timeout", type=float, default=900.0, help="longest wait for one phase (s)")
    p.add_argument(
        "--profile",
        action="append",
        default=[],
        metavar="PROCESS",
        help="sample PROCESS (controller, sim-kubelet) with py-spy during the actuation scenarios (repeatable)",
    )
    p.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="all",
        help="direct: the cold burst, wake churn and restart; launcher: the launcher path's cold, warm"
        " and hot rounds alone (bench/launcher.py); all (default): both, the launcher path after the"
        " direct churn and before the restart",
    )
    p.add_argument(
        "--launcher-nodes",
        type=int,
        default=None,
        help="nodes the launcher path uses, every GPU of each (default: 2, or fewer when there are;"
        " each launcher Pod is two processes and each instance one, so hundreds would swamp the machine)",
    )
    args = p.parse_args(argv)
    if args.nodes is None:
        args.nodes = 4 if args.quick else 32
    if args.requesters is None:
        args.requesters = args.nodes * args.gpus_per_node
    if args.probe_period is None:
        args.probe_period = 1 if args.nodes <= 32 else 2 if args.nodes <= 64 else 5
    if args.launcher_nodes is None:
        args.launcher_nodes = min(args.nodes, 2)
    if not 1 <= args.launcher_nodes <= args.nodes:
        p.error(f"--launcher-nodes {args.launcher_nodes} must be 1 to --nodes ({args.nodes})")
    if args.pods_total is None:
        args.pods_total = 2000 if args.quick else 10000
    if args.requesters > args.nodes * args.gpus_per_node:
        p.error(f"--requesters {args.requesters} exceeds the GPUs ({args.nodes} x {args.gpus_per_node})")
    return args


@dataclass
class Phase:
    """One measured window: what the controller spent, what it wrote, what actuated in it."""

    name: str
    started: float
    ended: float = 0.0
    cpu_s: float = 0.0
    calls: dict[str, float] = field(default_factory=dict)
    actuations: dict[str, list[float]] = field(default_factory=dict)
    load: list[float] = field(default_factory=list)
    # CPU seconds of every process of the cluster (and this benchmark) in the window.
    components_cpu_s: dict[str, float] = field(default_factory=dict)
    # The controller's work in the window: watch events applied, reconciles, HTTP calls to pods.
    work: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        n = sum(len(v) for v in self.actuations.values())
        return {
            "seconds": round(self.ended - self.started, 2),
            "actuations": {k: len(v) for k, v in self.actuations.items()},
            "controller_cpu_s": round(self.cpu_s, 3),
            "cpu_ms_per_actuation": round(1000 * self.cpu_s / n, 2) if n else None,
            "api_calls": {k: int(v) for k, v in sorted(self.calls.items())},
            "api_writes": int(report.writes(self.calls)),
            "api_writes_pods": int(report.writes(self.calls, ["pods"])),
            "api_writes_per_actuation": round(report.writes(self.calls) / n, 2) if n else None,
            "api_pod_writes_per_actuation": round(report.writes(self.calls, ["pods"]) / n, 2) if n else None,
            "load_avg_after": self.load,
            "components_cpu_s": {k: round(v, 2) for k, v in sorted(self.components_cpu_s.items())},
            "controller_work": {k: int(v) for k, v in sorted(self.work.items())},
            "controller_work_per_actuation": {k: round(v / n, 2) for k, v in sorted(self.work.items())}
            if n
            else None,
        }


class Bench:
    def __init__(self, args: argparse.Namespace, stamp: str) -> None:
        self.args = args
        self.stamp = stamp
        scale = args.time_scale
        self.timing = Timing(
            REAL_LOAD_S / scale, REAL_WAKE_S / scale, REAL_SLEEP_S / scale, probe_period_s=args.probe_period
        )
        self.state_dir: Path = args.state_dir or Path(tempfile.mkdtemp(prefix="dpctl-bench-"))
        self.cluster: LocalCluster | None = None
        self.kube: Kube | None = None
        self.tracker = PodTracker()
        self.controller: ControllerProcess | None = None
        self.phases: list[Phase] = []
        self.replicas: dict[str, int] = {}  # set name -> replicas asked
        self.created: set[str] = set()  # ReplicaSets that exist
        self.result: dict[str, Any] = {}

    # -- the cluster ----------------------------------------------------------------------------

    def start_cluster(self) -> LocalCluster:
        bins = resolve_bins(build=False)
        layout = Layout(self.state_dir.resolve())
        # Production control planes raise their clients' rate limits for bursts of this size;
        # the defaults (20 and 50 requests/s) would make the scheduler and the ReplicaSet
        # controller the whole story. The scheduler's limit lives in its config file.
        sched_cfg = self.state_dir / "bench-kube-scheduler.yaml"
        sched_cfg.parent.mkdir(parents=True, exist_ok=True)
        sched_cfg.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kubescheduler.config.k8s.io/v1",
                    "kind": "KubeSchedulerConfiguration",
                    "clientConnection": {
                        "kubeconfig": str(layout.scheduler_kubeconfig),
                        "qps": 500,
                        "burst": 1000,
                    },
                    "leaderElection": {"leaderElect": False},
                }
            )
        )
        settings = ControlPlaneSettings(
            extra_args={
                SCHEDULER: [f"--config={sched_cfg}"],
                CONTROLLER_MANAGER: [
                    "--kube-api-qps=500",
                    "--kube-api-burst=1000",
                    "--concurrent-replicaset-syncs=20",
                ],
            },
            start_timeout=300.0,
            # One simulated-kubelet process heartbeats every node's Lease; on a small machine under
            # a burst its heartbeats lag by tens of seconds, and the node lifecycle controller
            # would mark healthy nodes NotReady and evict their Pods (a 250-node run lost a node's
            # runners that way). Real nodes each have their own kubelet; the benchmark is about
            # the controller, so a lagging heartbeat must not look like a failed node.
            node_monitor_grace_period=600.0,
        )
        cluster = LocalCluster(
            self.state_dir,
            bins,
            nodes=self.args.nodes,
            gpus=self.args.gpus_per_node,
            kubelet_extra_args=["--hollow", "--workers=64", "--max-grace=5"],
            settings=settings,
        )
        self.cluster = cluster
        cluster.start(timeout=900.0)
        return cluster

    async def setup_namespace(self, kube: Kube) -> None:
        try:
            await kube.create(
                NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
            )
        except ApiError as e:
            if not e.conflict:
                raise
        await until(
            lambda: _exists(kube, SERVICEACCOUNTS, "default", NAMESPACE), 60, "ServiceAccount default"
        )
        assert self.cluster is not None
        await kube.create(CONFIGMAPS, gpu_map(self.cluster.state_dir, self.args.nodes), NAMESPACE)
        if self.args.scenario != "direct":
            await launcher.install_crds(kube)

    def controller_process(self) -> ControllerProcess:
        assert self.cluster is not None
        port = _free_port()
        args = [
            "-n",
            NAMESPACE,
            "--kubeconfig",
            str(self.cluster.kubeconfig),
            "--metrics-port",
            str(port),
            "--num-workers",
            str(self.args.workers),
            "-v",
            str(self.args.verbosity),
        ]
        env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
        env["DPCTL_LISTEN_HOST"] = "127.0.0.1"
        log = self.results_dir / f"{self.stamp}-controller.log"
        return ControllerProcess(args, log, port, env)

    @property
    def results_dir(self) -> Path:
        path: Path = self.args.results
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- measuring ------------------------------------------------------------------------------

    def begin(self, name: str) -> Phase:
        assert self.controller is not None
        phase = Phase(name, time.monotonic())
        phase.cpu_s = -self.controller.cpu_seconds()
        metrics = self.controller.metrics()
        phase.calls = {k: -v for k, v in report.api_calls(metrics).items()}
        phase.work = {k: -v for k, v in report.work(metrics).items()}
        phase.components_cpu_s = {k: -v for k, v in self.components_cpu().items()}
        log(f"phase {name}: begins (load {report.load_average()})")
        return phase

    def end(self, phase: Phase, path: str | None = None) -> Phase:
        """Close the window; ``path`` names the path of every actuation in it (the launcher path's
        windows each take one path by design), else the tracker's cold or hot per requester."""
        assert self.controller is not None
        phase.ended = time.monotonic()
        phase.cpu_s += self.controller.cpu_seconds()
        metrics = self.controller.metrics()
        after = report.api_calls(metrics)
        phase.calls = {k: v + phase.calls.get(k, 0.0) for k, v in after.items()}
        phase.work = {k: v + phase.work.get(k, 0.0) for k, v in report.work(metrics).items()}
        phase.calls = {k: v for k, v in phase.calls.items() if v}
        after_cpu = self.components_cpu()
        phase.components_cpu_s = {k: v + phase.components_cpu_s.get(k, 0.0) for k, v in after_cpu.items()}
        for req in self.tracker.requesters.values():
            if req.ready is not None and phase.started <= req.seen and req.ready <= phase.ended:
                phase.actuations.setdefault(path or req.path, []).append(req.ready - req.seen)
        phase.load = report.load_average()
        self.phases.append(phase)
        log(f"phase {phase.name}: {json.dumps(phase.as_dict())}")
        return phase

    def components_cpu(self) -> dict[str, float]:
        pids = dict(self.cluster.pids()) if self.cluster is not None else {}
        pids["bench"] = os.getpid()
        if self.controller is not None and self.controller.alive():
            pids["controller"] = self.controller.pid
        out = {}
        for name, pid in pids.items():
            try:
                out[name] = report.cpu_seconds(pid)
            except OSError:
                continue
        return out

    def start_profilers(self) -> list[subprocess.Popen[bytes]]:
        """py-spy on the processes named by --profile; collapsed stacks into the results."""
        if not self.args.profile:
            return []
        py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
        if py_spy is None:
            raise SystemExit("bench: --profile needs py-spy (.venv/bin/pip install py-spy)")
        pids = dict(self.cluster.pids()) if self.cluster is not None else {}
        if self.controller is not None:
            pids["controller"] = self.controller.pid
        procs = []
        for name in self.args.profile:
            if name not in pids:
                raise SystemExit(f"bench: --profile {name}: no such process (have {', '.join(sorted(pids))})")
            out = self.results_dir / f"{self.stamp}-{name}.pyspy.txt"
            cmd = [
                py_spy,
                "record",
                "--pid",
                str(pids[name]),
                "--rate",
                "100",
                "--format",
                "raw",
                "-o",
                str(out),
            ]
            procs.append(
                subprocess.Popen(
                    [*cmd, "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        return procs

    # -- scenarios ------------------------------------------------------------------------------

    async def cold_burst(self, kube: Kube) -> None:
        n, g, r = self.args.nodes, self.args.gpus_per_node, self.args.requesters
        per_node = [r // n + (1 if k < r % n else 0) for k in range(n)]
        phase = self.begin("cold_burst")
        sets = []
        for k, count in enumerate(per_node, start=1):
            if count:
                self.replicas[set_name(k, "a")] = count
                self.created.add(set_name(k, "a"))
                sets.append(replica_set(k, "a", count, self.timing))
        await gather_limited((kube.create(REPLICASETS, rs, NAMESPACE) for rs in sets), API_CONCURRENCY)
        await self.all_ready(r, "the cold burst")
        assert g
        await self.events_settled()
        self.end(phase)

    async def churn(self, kube: Kube, round_: int, mixed: bool) -> None:
        n = self.args.nodes
        moved = max(1, round(self.args.churn_fraction * n))
        first = (round_ * moved) % n
        nodes = [(first + i) % n + 1 for i in range(moved)]
        sets = {set_name(k, m) for k in nodes for m in MODELS if self.replicas.get(set_name(k, m))}
        before = {s: self.replicas.get(s, 0) for k in nodes for s in (set_name(k, m) for m in MODELS)}
        was = {k: sum(before[set_name(k, m)] for m in MODELS) for k in nodes}
        moving = sum(was.values())
        name = f"churn{round_ + 1}_{'mixed' if mixed else 'hot'}"

        down = self.begin(f"{name}_down")
        await self.scale({s: 0 for s in sets}, kube)
        expected_sleepers = self.tracker.sleepers() + moving
        await until(
            lambda: (
                not self.tracker.existing_requesters(sets) and self.tracker.sleepers() >= expected_sleepers
            ),
            self.args.timeout,
            f"{moving} requesters gone and their runners asleep",
        )
        await self.events_settled()
        self.end(down)

        up = self.begin(f"{name}_up")
        target: dict[str, int] = {}
        for k in nodes:
            if mixed:
                target[set_name(k, "a")] = math.ceil(was[k] / 2)
                target[set_name(k, "b")] = was[k] // 2
            else:
                target[set_name(k, "a")] = before[set_name(k, "a")]
                target[set_name(k, "b")] = before[set_name(k, "b")]
        await self.scale(target, kube)
        await self.all_ready(self.args.requesters, name)
        await self.events_settled()
        self.end(up)

    async def events_settled(self, quiet_s: float = 1.0, longest_s: float = 15.0) -> None:
        """Wait until the controller has written the Events of what just happened (it writes them
        in the background), so that they count in this window and not in the next one."""
        assert self.controller is not None
        deadline = time.monotonic() + longest_s
        last, since = -1.0, time.monotonic()
        while time.monotonic() < deadline:
            count = sum(v for k, v in report.api_calls(self.controller.metrics()).items() if "/events/" in k)
            if count != last:
                last, since = count, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return
            await asyncio.sleep(0.25)

    async def scale(self, replicas: dict[str, int], kube: Kube) -> None:
        async def one(name: str, count: int) -> None:
            if self.replicas.get(name, 0) == count:
                return
            self.replicas[name] = count
            if name not in self.created:
                k, model = int(name[1:].split("-", maxsplit=1)[0]), name.rsplit("-", 1)[1]
                self.created.add(name)
                await kube.create(REPLICASETS, replica_set(k, model, count, self.timing), NAMESPACE)
                return
            await kube.patch(REPLICASETS, name, {"spec": {"replicas": count}}, NAMESPACE, patch_type="merge")

        await gather_limited((one(name, count) for name, count in replicas.items()), API_CONCURRENCY)

    async def wait(self, check: Callable[[], bool], what: str) -> None:
        await until(check, self.args.timeout, what)

    async def all_ready(self, count: int, what: str, sets: set[str] | None = None) -> None:
        def done() -> bool:
            live = self.tracker.live_requesters(sets)
            return len(live) >= count and all(r.ready is not None for r in live)

        def progress() -> str:
            live = self.tracker.live_requesters(sets)
            return f"{sum(1 for r in live if r.ready is not None)} of {count} requesters Ready ({len(live)} exist)"

        await until(done, self.args.timeout, what, progress)

    async def restart(self, kube: Kube) -> dict[str, Any]:
        assert self.controller is not None
        total = self.args.pods_total
        have = len((await kube.list_all(PODS, NAMESPACE))[0])
        fillers = max(0, total - have)
        log(f"restart: creating {fillers} filler Pods ({have} Pods in the namespace)")
        started = time.monotonic()
        await gather_limited(
            (kube.create(PODS, filler_pod(i), NAMESPACE) for i in range(fillers)), API_CONCURRENCY
        )
        fill_s = time.monotonic() - started
        pods = len((await kube.list_all(PODS, NAMESPACE))[0])
        self.controller.stop()
        load_before = report.load_average()
        self.controller.start()
        controller = self.controller  # the lambda sees a name that stays narrowed
        await until(lambda: "First reconcile done" in controller.marks, 120, "the first reconcile")
        marks, t0 = self.controller.marks, self.controller.started
        synced_s = marks["Caches synced"] - t0
        first_s = marks["First reconcile done"] - t0

        def settled() -> bool:
            assert self.controller is not None
            m = self.controller.metrics()
            depth = report.counter_total(m, "workqueue_depth", {"name": "dualpods"})
            done = report.counter_total(m, "workqueue_work_duration_seconds_count", {"name": "dualpods"})
            return depth == 0 and done >= len(self.tracker.live_requesters())

        await until(settled, 300, "every requester reconciled after the restart")
        settle_s = time.monotonic() - t0
        memory = self.controller.memory_mb()
        return {
            "pods_in_namespace": pods,
            "fillers_created": fillers,
            "filler_create_s": round(fill_s, 1),
            "filler_creates_per_s": round(fillers / fill_s, 1) if fill_s else None,
            "start_to_synced_s": round(synced_s, 3),
            "cpu_s_to_synced": round(self.controller.cpu_marks.get("Caches synced", 0.0), 3),
            "start_to_first_reconcile_s": round(first_s, 3),
            "start_to_all_reconciled_s": round(settle_s, 3),
            "peak_rss_mb": round(memory.get("VmHWM", 0.0), 1),
            "rss_mb": round(memory.get("VmRSS", 0.0), 1),
            "load_avg_before": load_before,
        }

    # -- the whole run --------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        args = self.args
        began = time.monotonic()
        load_start = report.load_average()
        log(
            f"starting a hollow local cluster: {args.nodes} nodes x {args.gpus_per_node} GPUs in {self.state_dir}"
        )
        cluster = await asyncio.to_thread(self.start_cluster)
        cluster_s = time.monotonic() - began
        log(f"cluster Ready in {cluster_s:.1f} s")
        kube = self.kube = await Kube.connect(str(cluster.kubeconfig), pool_size=API_CONCURRENCY)
        await self.setup_namespace(kube)
        informer = self.tracker.start(kube, NAMESPACE)
        watch = asyncio.create_task(informer.run(), name="bench-watch")
        try:
            await informer.wait_synced()
            self.controller = self.controller_process()
            self.controller.start()
            await until(self.controller.ready, 120, "the controller's caches synced")
            profilers = self.start_profilers()
            launcher_path: dict[str, Any] | None = None
            direct_metrics: report.Samples | None = None
            try:
                if args.scenario != "launcher":
                    await self.cold_burst(kube)
                    await self.churn(kube, 0, mixed=False)
                    await self.churn(kube, 1, mixed=True)
                    # The direct path's histograms (added latency, call latencies) as they stand
                    # before the launcher path adds to them.
                    direct_metrics = self.controller.metrics()
                if args.scenario != "direct":
                    if args.scenario == "all":
                        await self.clear_direct(kube)
                    launcher_path = await launcher.scenario(self, kube, NAMESPACE)
            finally:
                stop_profilers(profilers)
            run_metrics = direct_metrics or self.controller.metrics()
            memory = self.controller.memory_mb()
            restart = await self.restart(kube) if args.scenario != "launcher" else None
            violations = ctl.call(cluster.state_dir, "GET", "/ledger")[1]
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        return self.summarise(
            run_metrics, memory, restart, violations, cluster_s, load_start, began, launcher_path
        )

    async def clear_direct(self, kube: Kube) -> None:
        """Before the launcher path: the direct sets scaled to 0 and their sleepers deleted, so
        that every GPU is free for launcher-path requesters (not measured)."""
        sets = {s for s in self.created if s.startswith("n")}
        await self.scale({s: 0 for s in sets}, kube)
        await until(
            lambda: (
                not self.tracker.existing_requesters(sets)
                and not any(r.bound_to for r in self.tracker.runners.values() if not r.launcher)
            ),
            self.args.timeout,
            "the direct requesters gone and their runners unbound",
        )
        runners = [r for r in self.tracker.runners.values() if not r.launcher and not r.gone]
        await gather_limited((kube.delete(PODS, r.name, NAMESPACE) for r in runners), API_CONCURRENCY)
        await until(
            lambda: not any(not r.launcher for r in self.tracker.runners.values()),
            self.args.timeout,
            "the direct runners deleted",
        )

    def summarise(
        self,
        metrics: report.Samples,
        memory: dict[str, float],
        restart: dict[str, Any] | None,
        ledger: Any,
        cluster_s: float,
        load_start: list[float],
        began: float,
        launcher_path: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        args = self.args
        direct = [p for p in self.phases if not p.name.startswith("launcher_")]
        by_path: dict[str, list[float]] = {"cold": [], "hot": []}
        for phase in direct:
            for path, values in phase.actuations.items():
                by_path.setdefault(path, []).extend(values)
        # The same actuations from the stub's container running: without the time the API
        # server, the scheduler and the kubelet took to get the requester there.
        from_running: dict[str, list[float]] = {"cold": [], "hot": []}
        for req in self.tracker.requesters.values():
            direct_req = not req.set.startswith("l")
            if direct_req and req.ready is not None and req.running is not None and req.path in from_running:
                from_running[req.path].append(req.ready - req.running)
        actuating = [p for p in direct if not p.name.endswith("_down")]
        actuations = sum(len(v) for p in actuating for v in p.actuations.values())
        cpu = sum(p.cpu_s for p in actuating)
        cold = next((p for p in direct if p.name == "cold_burst"), None)
        hot = next((p for p in direct if p.name == "churn1_hot_up"), None)

        def per(phase: Phase | None, resources: Iterable[str] | None = None) -> float | None:
            if phase is None:
                return None
            n = sum(len(v) for v in phase.actuations.values())
            return round(report.writes(phase.calls, resources) / n, 2) if n else None

        added = {
            step: report.hist_p50_p99(
                report.histogram(metrics, "dpctl_controller_added_seconds", {"step": step}), scale=1000
            )
            for step in ("create", "wake", "relay")
        }
        api_latency = {
            verb: report.hist_p50_p99(
                _merged(metrics, "dpctl_api_request_duration_seconds", {"verb": verb, "resource": "pods"}),
                1000,
            )
            for verb in ("create", "patch", "delete")
        }
        http_latency = {
            purpose: report.hist_p50_p99(
                _merged(metrics, "dpctl_http_request_duration_seconds", {"purpose": purpose}), 1000
            )
            for purpose in sorted(
                {
                    lab.get("purpose", "")
                    for lab, _ in metrics.get("dpctl_http_request_duration_seconds_count", [])
                }
            )
        }
        # Each step's latency against the p99s of the calls it waits for before its own call
        # (docs/benchmarks.md, "What bounds the latency"): what the controller adds beyond them.
        inside = {
            "create": [http_latency.get(GPU_QUERY, {})],
            "wake": [http_latency.get(GPU_QUERY, {}), api_latency["patch"]],
        }
        added_ratio = {
            step: report.ratio(added[step]["p99"], [call.get("p99") for call in calls])
            for step, calls in inside.items()
        }
        queue_wait = report.hist_p50_p99(
            report.histogram(metrics, "workqueue_queue_duration_seconds", {"name": "dualpods"}), 1000
        )
        peak_rss = max(memory.get("VmHWM", 0.0), restart["peak_rss_mb"] if restart else 0.0)
        lost = sum(report.conflicts(p.calls) for p in direct)
        summary = {
            "requesters": args.requesters,
            "nodes": args.nodes,
            "gpus_per_node": args.gpus_per_node,
            "added_latency_ms": {k: {"p50": v["p50"], "p99": v["p99"]} for k, v in added.items()},
            "added_p99_over_calls_p99": added_ratio,
            "actuation_s": {
                k: report.p50_p99(v, digits=2) for k, v in by_path.items() if k in ("cold", "hot")
            },
            "actuation_from_stub_running_s": {
                k: report.p50_p99(v, digits=2) for k, v in from_running.items()
            },
            "api_writes_per_actuation": {"cold": per(cold), "hot": per(hot)},
            "api_pod_writes_per_actuation": {"cold": per(cold, ["pods"]), "hot": per(hot, ["pods"])},
            "api_conflicts": {
                "total": int(lost),
                "per_actuation": round(lost / actuations, 3) if actuations else None,
            },
            # Calls that waited for the controller's token bucket, and for how long in all.
            "api_rate_limit_waits": {
                "calls": int(sum(v for _, v in metrics.get("dpctl_api_rate_limit_wait_seconds_count", []))),
                "seconds": round(
                    sum(v for _, v in metrics.get("dpctl_api_rate_limit_wait_seconds_sum", [])), 3
                ),
            },
            "cpu_ms_per_actuation": round(1000 * cpu / actuations, 2) if actuations else None,
            "peak_rss_mb": round(peak_rss, 1),
            "sync_s_10k": restart["start_to_synced_s"] if restart else None,
            "pods_at_restart": restart["pods_in_namespace"] if restart else None,
            "actuations": {k: len(v) for k, v in by_path.items()},
            "violations": len(ledger.get("violations", [])) if isinstance(ledger, dict) else None,
            "readiness_flaps": self.tracker.flaps,
            "delays_s": {
                "load": self.timing.load_s,
                "wake": self.timing.wake_s,
                "sleep": self.timing.sleep_s,
            },
            "load_avg": {"start": load_start, "end": report.load_average()},
            "scenario": args.scenario,
        }
        if not direct:
            # No direct scenario ran: the controller's histograms are all the launcher path's,
            # and are in launcher_path, by its own windows.
            summary["added_latency_ms"] = summary["added_p99_over_calls_p99"] = None
        if launcher_path is not None:
            direct_cpu = summary["cpu_ms_per_actuation"]
            lx_cpu = launcher_path["cpu_ms_per_actuation"]
            # The launcher path against the direct path of the same run (same sitting, same load).
            launcher_path["cpu_ratio_to_direct"] = (
                round(lx_cpu / direct_cpu, 2)
                if isinstance(direct_cpu, float) and lx_cpu and direct_cpu
                else None
            )
            summary["launcher_path"] = launcher_path
        full = {
            "summary": summary,
            "command": "python -m bench.run " + shlex.join(sys.argv[1:]),
            "machine": report.machine(),
            "timing": {
                "real_s": {"load": REAL_LOAD_S, "wake": REAL_WAKE_S, "sleep": REAL_SLEEP_S},
                "time_scale": args.time_scale,
                "probe_period_s": self.timing.probe_period_s,
                "probe_timeout_s": self.timing.probe_timeout_s,
            },
            "controller": {
                "num_workers": args.workers,
                "verbosity": args.verbosity,
                "peak_rss_mb_run": round(memory.get("VmHWM", 0.0), 1),
                "added_latency_ms": added,
                "api_latency_ms_pods": api_latency,
                "http_latency_ms": http_latency,
                "workqueue_wait_ms": queue_wait,
            },
            "phases": {p.name: p.as_dict() for p in self.phases},
            "restart": restart,
            "ledger": ledger,
            "cluster_ready_s": round(cluster_s, 1),
            "total_s": round(time.monotonic() - began, 1),
            "actuation_latencies_s": {k: [round(x, 4) for x in v] for k, v in by_path.items()},
        }
        return full

    async def close(self) -> None:
        if self.args.keep:
            if self.cluster is not None:
                log(f"left running: export KUBECONFIG={self.cluster.kubeconfig}")
            return
        if self.controller is not None:
            self.controller.stop()
        if self.kube is not None:
            await self.kube.close()
        if self.cluster is not None:
            await asyncio.to_thread(self.cluster.stop)
        if self.args.state_dir is None:
            shutil.rmtree(self.state_dir, ignore_errors=True)


def stop_profilers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _merged(samples: report.Samples, name: str, match: dict[str, str]) -> list[tuple[float, float]]:
    """One histogram summed over the series that match (e.g. every HTTP code)."""
    total: dict[float, float] = {}
    for labels, value in samples.get(f"{name}_bucket", []):
        if all(labels.get(k) == v for k, v in match.items()):
            le = float(labels["le"])
            total[le] = total.get(le, 0.0) + value
    return sorted(total.items())


async def _exists(kube: Kube, res: Any, name: str, namespace: str) -> bool:
    try:
        await kube.get(res, name, namespace)
    except ApiError as e:
        if e.not_found:
            return False
        raise
    return True


async def until(
    check: Callable[[], bool | Awaitable[bool]],
    timeout: float,
    what: str,
    progress: Callable[[], str] | None = None,
) -> None:
    """Poll ``check`` (the benchmark's own state, mostly) until true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_note = time.monotonic()
    while True:
        value = check()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{what}: not done after {timeout:g} s" + (f" ({progress()})" if progress else "")
            )
        if progress is not None and time.monotonic() - last_note > 15:
            last_note = time.monotonic()
            log(f"waiting for {what}: {progress()}")
        await asyncio.sleep(0.1)


async def gather_limited(coros: Iterable[Awaitable[Any]], limit: int) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(c: Awaitable[Any]) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def amain(args: argparse.Namespace) -> int:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    bench = Bench(args, stamp)
    # SIGTERM and Ctrl-C end the run cleanly: the cluster and the controller are stopped.
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
    try:
        result = await bench.run()
    finally:
        await bench.close()
    out = bench.results_dir / f"{stamp}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    lat = result["actuation_latencies_s"]
    if args.scenario != "launcher":
        report.plot(
            lat.get("cold", []),
            lat.get("hot", []),
            bench.results_dir / f"{stamp}.png",
            f"Actuation latency: {args.requesters} requesters, {args.nodes} nodes x {args.gpus_per_node} GPUs "
            f"(load {bench.timing.load_s:g} s, wake {bench.timing.wake_s:g} s)",
        )
    log(f"full result: {out}")
    print(json.dumps(result["summary"], separators=(",", ":")), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return uvloop.run(amain(args))
    except asyncio.CancelledError:
        print("bench: interrupted", file=sys.stderr)
        return 130
    except BinsError as e:
        print(f"bench: no Kubernetes binaries ({e}); run `make bins` first", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
