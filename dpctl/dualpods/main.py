"""``dpctl controller``: flags, start-up checks, and the process lifecycle of the controller.

Start-up fails fast with a sentence a user can act on (no namespace, no credentials, API server
unreachable, no permission to list Pods) and a non-zero exit. Without permission to read Nodes
it runs, says so once, and cannot notice cordoned or departing Nodes. SIGTERM stops the workers
after their current item, hands the leader Lease over, and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable

import uvloop
from pydantic import ValidationError

from dpctl import log
from dpctl.clients.http import HttpClient
from dpctl.clients.inference import InferenceClient
from dpctl.clients.launcher import LauncherClient
from dpctl.clients.requester import RequesterClient
from dpctl.dualpods.adapters import kube_ports
from dpctl.dualpods.config import ControllerConfig
from dpctl.dualpods.controller import ISCS, LCS, Controller
from dpctl.dualpods.logrelay import NO_RELAY, LogRelay, RelaySettings
from dpctl.dualpods.metrics import DualPodsMetrics
from dpctl.dualpods.reconcile import Settings
from dpctl.events import EventRecorder
from dpctl.kube import NODES, PODS, ApiError, Kube, TokenBucket
from dpctl.leaderelection import LeaderElector, LeaseSettings
from dpctl.metrics import HealthServer, Metrics

# A watch that has said nothing for this long (bookmarks arrive about every minute) is stuck.
STALE_INFORMER_S = 600.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-n",
        "--namespace",
        default=os.environ.get("POD_NAMESPACE", ""),
        help="namespace to manage (default $POD_NAMESPACE)",
    )
    p.add_argument(
        "--kubeconfig", default=None, help="kubeconfig file (default: in-cluster, else $KUBECONFIG)"
    )
    p.add_argument("--context", default=None, help="kubeconfig context")
    p.add_argument("--sleeper-limit", type=int, default=2, help="sleeping runners kept per GPU (default 2)")
    p.add_argument("--num-workers", type=int, default=32, help="inference servers reconciled concurrently")
    p.add_argument(
        "--kube-api-qps",
        type=float,
        default=500.0,
        help="API server requests a second the controller sends at most, sustained (default 500)",
    )
    p.add_argument(
        "--kube-api-burst",
        type=int,
        default=1000,
        help="API server requests the controller may send at once above --kube-api-qps (default 1000)",
    )
    p.add_argument("-v", "--verbosity", type=int, default=2, help="log verbosity like klog's -v (default 2)")
    p.add_argument("--log-format", choices=["text", "json"], default="text")
    p.add_argument(
        "--metrics-port", type=int, default=8002, help="port of /metrics, /healthz, /readyz (0 = off)"
    )
    p.add_argument(
        "--debug-accelerator-memory",
        action="store_true",
        help="before waking a sleeper, ask the requester's stub for GPU memory in use and wait while"
        " any of the runner's GPUs has more than --wake-memory-budget-mib in use (upstream's flag)",
    )
    p.add_argument(
        "--wake-memory-budget-mib",
        type=int,
        default=None,
        help="with --debug-accelerator-memory: MiB in use per GPU that a wake tolerates (default, as"
        " upstream: 4096 per sleeper --sleeper-limit allows; more means a server has not let go yet)",
    )
    p.add_argument(
        "--log-relay",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="copy each bound runner's inference-server log to its requester, for `kubectl logs`"
        " (needs get on pods/log; default on)",
    )
    p.add_argument(
        "--log-relay-bytes-per-second",
        type=int,
        default=65536,
        help="the most each relay sends per second (default 65536)",
    )
    p.add_argument(
        "--instance-start-timeout",
        type=float,
        default=900.0,
        help="seconds a launcher's vLLM instance may take to answer /is_sleeping after its start"
        " before it is deleted (default 900)",
    )
    p.add_argument("--leader-elect", action="store_true", help="coordinate replicas through a Lease")
    p.add_argument("--lease-name", default="dpctl-controller")
    p.add_argument("--lease-duration", type=float, default=15.0, help="seconds")
    p.add_argument("--renew-deadline", type=float, default=10.0, help="seconds")
    p.add_argument("--retry-period", type=float, default=2.0, help="seconds")


def run(args: argparse.Namespace) -> int:
    try:
        cfg = ControllerConfig(
            namespace=args.namespace,
            kubeconfig=args.kubeconfig,
            context=args.context,
            sleeper_limit=args.sleeper_limit,
            num_workers=args.num_workers,
            kube_api_qps=args.kube_api_qps,
            kube_api_burst=args.kube_api_burst,
            verbosity=args.verbosity,
            log_format=args.log_format,
            metrics_port=args.metrics_port,
            metrics_host=os.environ.get("DPCTL_LISTEN_HOST", "0.0.0.0"),
            leader_elect=args.leader_elect,
            lease_name=args.lease_name,
            lease_duration_s=args.lease_duration,
            renew_deadline_s=args.renew_deadline,
            retry_period_s=args.retry_period,
            identity=f"{socket.gethostname()}_{os.getpid()}",
            debug_accelerator_memory=args.debug_accelerator_memory,
            wake_memory_budget_mib=args.wake_memory_budget_mib,
            log_relay=args.log_relay,
            log_relay_bytes_per_s=args.log_relay_bytes_per_second,
            instance_start_timeout_s=args.instance_start_timeout,
        )
    except ValidationError as err:
        for e in err.errors():
            field = ".".join(str(x) for x in e["loc"]).replace("_", "-")
            hint = " (use -n/--namespace or $POD_NAMESPACE)" if field == "namespace" else ""
            print(f"dpctl controller: --{field}: {e['msg']}{hint}", file=sys.stderr)
        return 2
    log.setup(cfg.verbosity, cfg.log_format)
    return uvloop.run(_main(cfg))


async def _connect(cfg: ControllerConfig, metrics: Metrics) -> tuple[Kube, bool, bool]:
    """Credentials, reachability and permissions; raises SystemExit(1) with the reason."""
    logger = log.get("controller")
    try:
        limiter = TokenBucket(cfg.kube_api_qps, cfg.kube_api_burst, on_wait=metrics.observe_api_wait)
        kube = await Kube.connect(cfg.kubeconfig, cfg.context, observer=metrics.observe_api, limiter=limiter)
    except Exception as err:  # any loader failure means the same thing to the user
        logger.error("Cannot load Kubernetes credentials", error=str(err))
        raise SystemExit(1) from None
    try:
        version = await kube.request_json("GET", "/version", timeout=10)
        await kube.list_page(PODS, cfg.namespace, limit=1)
    except ApiError as err:
        await kube.close()
        what = "list Pods in namespace " + cfg.namespace if err.forbidden else "reach the API server"
        logger.error(f"Cannot {what}", server=kube.host, error=str(err))
        raise SystemExit(1) from None
    except (OSError, TimeoutError) as err:
        await kube.close()
        logger.error("Cannot reach the API server", server=kube.host, error=repr(err))
        raise SystemExit(1) from None
    watch_nodes = True
    try:
        await kube.list_page(NODES, limit=1)
    except ApiError as err:
        if not err.forbidden:
            raise
        watch_nodes = False
        logger.warning(
            "Cannot read Nodes (bind a ClusterRole for nodes get/list/watch, e.g. the chart's NodeViewClusterRole); "
            "cordoned and departing Nodes will not be noticed"
        )
    logger.info("Connected", server=kube.host, version=version.get("gitVersion"), namespace=cfg.namespace)
    return kube, watch_nodes, await _launcher_path(kube, cfg.namespace)


async def _launcher_path(kube: Kube, namespace: str) -> bool:
    """Whether the launcher path's objects can be read; off (said once) when their CRDs are not
    installed or the controller may not read them: the direct path works either way."""
    for kind in (ISCS, LCS):
        try:
            await kube.list_page(kind, namespace, limit=1)
        except ApiError as err:
            if not (err.not_found or err.forbidden):
                raise
            why = "are not installed" if err.not_found else "are not readable by the controller (RBAC)"
            log.get("controller").warning(
                f"The launcher path is off: {kind.plural}.fma.llm-d.ai {why}; install the chart's CRDs"
                " and restart the controller to serve requesters that name an InferenceServerConfig"
            )
            return False
    return True


async def _main(cfg: ControllerConfig) -> int:
    logger = log.get("controller")
    metrics = Metrics()
    try:
        kube, watch_nodes, launcher_path = await _connect(cfg, metrics)
    except SystemExit as exit_:
        return int(exit_.code or 1)
    controller_ref: list[Controller] = []
    dual_metrics = DualPodsMetrics(
        metrics.registry, lambda: controller_ref[0].pods.store.list() if controller_ref else [], cfg.namespace
    )

    def observe_http(purpose: str, code: int, seconds: float) -> None:
        metrics.observe_http(purpose, code, seconds)
        dual_metrics.observe_http(purpose, code, seconds)

    http = HttpClient(observer=observe_http)
    events = EventRecorder(kube, cfg.namespace, "dual-pods-controller")
    requesters = RequesterClient(http)
    # The relays' log streams get a connection pool of their own, without a limit: each holds its
    # connection for as long as its runner serves (HTTP/1.1 has one stream per connection), and
    # in the shared pool 64 of them left no connection for any other call, so every reconcile
    # timed out (the benchmark's cold burst stalled at 64 bound runners).
    streams = (
        await Kube.connect(
            cfg.kubeconfig, cfg.context, observer=metrics.observe_api, pool_size=0, limiter=kube.limiter
        )
        if cfg.log_relay
        else None
    )
    relay = (
        LogRelay(streams, requesters, dual_metrics, RelaySettings(bytes_per_s=cfg.log_relay_bytes_per_s))
        if streams is not None
        else None
    )
    ports = kube_ports(
        kube,
        cfg.namespace,
        requesters,
        InferenceClient(http),
        events,
        dual_metrics,
        relay or NO_RELAY,
        LauncherClient(http),
    )
    controller = Controller(
        kube,
        cfg.namespace,
        ports,
        Settings(
            sleeper_limit=cfg.sleeper_limit,
            wake_memory_budget=cfg.wake_memory_budget(),
            instance_start_timeout_s=cfg.instance_start_timeout_s,
        ),
        num_workers=cfg.num_workers,
        watch_nodes=watch_nodes,
        launcher_path=launcher_path,
        queue_metrics=metrics,
        informer_metrics=metrics,
    )
    controller_ref.append(controller)
    elector = (
        LeaderElector(
            kube,
            LeaseSettings(
                cfg.lease_name,
                cfg.namespace,
                cfg.identity,
                cfg.lease_duration_s,
                cfg.renew_deadline_s,
                cfg.retry_period_s,
            ),
        )
        if cfg.leader_elect
        else None
    )
    health = HealthServer(metrics, alive=lambda: _alive(controller), ready=lambda: _ready(controller))
    if cfg.metrics_port:
        port = await health.start(cfg.metrics_host, cfg.metrics_port)
        logger.info("Serving /metrics, /healthz and /readyz", port=port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    background = [
        asyncio.create_task(events.run(), name="events"),
        asyncio.create_task(controller.run_informers(), name="informers"),
    ]
    try:
        return await _serve(controller, elector, stop)
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if relay is not None:
            await relay.close()
        if streams is not None:
            await streams.close()
        await health.stop()
        await http.close()
        await kube.close()


async def _serve(controller: Controller, elector: LeaderElector | None, stop: asyncio.Event) -> int:
    """Run the workers, only while leading when electing; the exit code.

    SIGTERM (``stop``) lets the workers finish their items, then hands the Lease over. A leader
    that loses its Lease (or whose election task fails) stops its workers at once, without
    draining: another replica may take over as soon as the Lease expires, and a reconcile cut
    short is safe (everything is rebuilt from the API). It exits 1, so the kubelet restarts it
    as a standby.
    """
    logger = log.get("controller")
    election: asyncio.Task[None] | None = None
    workers: asyncio.Task[None] | None = None
    code = 0
    try:
        if elector is not None:
            election = asyncio.create_task(elector.run(), name="leader-election")
            logger.info("Waiting to become leader", lease=elector.s.name, identity=elector.s.identity)
            await _first(stop.wait(), elector.leading.wait(), election)
            if not elector.leading.is_set():
                if not stop.is_set():
                    logger.error("Leader election ended unexpectedly", error=_ended(election))
                    code = 1
                return code
        workers = asyncio.create_task(controller.run_workers(), name="workers")
        await _first(stop.wait(), election if election is not None else asyncio.Event().wait(), workers)
        lost = False
        if election is not None and election.done() and not stop.is_set():
            lost = True
            logger.error("Not the leader any more; stopping the workers now", error=_ended(election))
            code = 1  # restarted by the kubelet, it comes back as a standby
        logger.info("Shutting down")
        controller.queue.shut_down()
        if lost:
            workers.cancel()
            await asyncio.gather(workers, return_exceptions=True)
        else:
            await _bounded(workers, 30.0)
    finally:
        # Only now, with the workers stopped, is the Lease handed over.
        for task in (workers, election):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    return code


def _ended(task: asyncio.Task[None]) -> str:
    """Why a task that should run forever ended: its exception, or "" when it returned."""
    if not task.done() or task.cancelled():
        return ""
    err = task.exception()
    return repr(err) if err is not None else ""


async def _first(*aws: Awaitable[object]) -> None:
    """Wait until one finishes; cancel the others (tasks handed in are left running)."""
    futures = [a if isinstance(a, asyncio.Task) else asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for f, a in zip(futures, aws, strict=True):
            if f is not a:
                f.cancel()


async def _bounded(task: asyncio.Task[None], seconds: float) -> None:
    try:
        await asyncio.wait_for(asyncio.shield(task), seconds)
    except TimeoutError:
        task.cancel()
    except Exception as err:  # a crashed worker set must not hide the shutdown
        log.get("controller").error("Workers ended with an error", error=repr(err))


def _alive(controller: Controller) -> str:
    now = time.monotonic()
    for informer in controller.informers:
        if informer.has_synced() and now - informer.last_event_monotonic > STALE_INFORMER_S:
            return (
                f"informer {informer.name} has seen nothing for {int(now - informer.last_event_monotonic)} s"
            )
    return ""


def _ready(controller: Controller) -> str:
    pending = [i.name for i in controller.informers if not i.has_synced()]
    return f"caches not synced: {', '.join(pending)}" if pending else ""
