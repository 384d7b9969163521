"""Prometheus metrics for the generic machinery, and the HTTP server for /metrics and health.

Implements the workqueue's and informer's metric hooks with client-go's series names, observes
every API call (verb, resource, code) and its wait for the client-side rate limit, and every
HTTP call to Pods (purpose, code), and serves ``/metrics``, ``/healthz`` and ``/readyz`` on one
port. Label values come from small fixed sets; no series is ever labelled with a Pod name.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from dpctl.workqueue.metrics import UnfinishedWork

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _Children:
    """A labelled metric's children, remembered by label values: prometheus_client's ``labels()``
    validates and takes a lock on every call, and these hooks run for every event and call.
    Label values come from small fixed sets, so this stays small."""

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class Metrics:
    """One registry per process; handed to the pieces that report."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.wq_depth = Gauge("workqueue_depth", "Current depth of the workqueue", ["name"], registry=r)
        self.wq_adds = Counter("workqueue_adds", "Adds handled by the workqueue", ["name"], registry=r)
        self.wq_latency = Histogram(
            "workqueue_queue_duration_seconds",
            "How long an item stays in the workqueue before being requested",
            ["name"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.wq_work = Histogram(
            "workqueue_work_duration_seconds",
            "How long processing an item from the workqueue takes",
            ["name"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.wq_retries = Counter(
            "workqueue_retries", "Retries handled by the workqueue", ["name"], registry=r
        )
        self._unfinished: dict[str, Callable[[], UnfinishedWork]] = {}
        r.register(_UnfinishedCollector(self._unfinished))
        self.list_duration = Histogram(
            "informer_list_duration_seconds",
            "Duration of informer lists",
            ["informer"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.watch_duration = Histogram(
            "informer_watch_duration_seconds",
            "How long informer watches lasted",
            ["informer"],
            buckets=(1, 10, 60, 300, 600, 1200),
            registry=r,
        )
        self.watch_restarts = Counter(
            "informer_watch_restarts", "Watches (re)started", ["informer"], registry=r
        )
        self.relists_gone = Counter(
            "informer_relists_on_gone",
            "Relists because the watch's resourceVersion expired (410)",
            ["informer"],
            registry=r,
        )
        self.informer_events = Counter(
            "informer_events", "Watch events applied", ["informer", "type"], registry=r
        )
        self.api_latency = Histogram(
            "dpctl_api_request_duration_seconds",
            "Kubernetes API calls by verb, resource and HTTP code (0 = no response)",
            ["verb", "resource", "code"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.api_wait = Histogram(
            "dpctl_api_rate_limit_wait_seconds",
            "Waits of API calls for the client-side rate limit (--kube-api-qps/--kube-api-burst)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.http_latency = Histogram(
            "dpctl_http_request_duration_seconds",
            "HTTP calls to requester stubs and inference servers by purpose and code (0 = no response)",
            ["purpose", "code"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

        self._wq_depth = _Children(self.wq_depth)
        self._wq_adds = _Children(self.wq_adds)
        self._wq_latency = _Children(self.wq_latency)
        self._wq_work = _Children(self.wq_work)
        self._wq_retries = _Children(self.wq_retries)
        self._list_duration = _Children(self.list_duration)
        self._watch_duration = _Children(self.watch_duration)
        self._watch_restarts = _Children(self.watch_restarts)
        self._relists_gone = _Children(self.relists_gone)
        self._informer_events = _Children(self.informer_events)
        self._api_latency = _Children(self.api_latency)
        self._http_latency = _Children(self.http_latency)

    # -- workqueue hooks (dpctl.workqueue.QueueMetrics)
    def register(self, queue: str, unfinished_work: Callable[[], UnfinishedWork]) -> None:
        self._unfinished[queue] = unfinished_work

    def set_depth(self, queue: str, depth: int) -> None:
        self._wq_depth(queue).set(depth)

    def inc_adds(self, queue: str) -> None:
        self._wq_adds(queue).inc()

    def observe_queue_latency(self, queue: str, seconds: float) -> None:
        self._wq_latency(queue).observe(seconds)

    def observe_work_duration(self, queue: str, seconds: float) -> None:
        self._wq_work(queue).observe(seconds)

    def inc_retries(self, queue: str) -> None:
        self._wq_retries(queue).inc()

    # -- informer hooks (dpctl.informer.InformerMetrics)
    def observe_list_duration(self, informer: str, seconds: float) -> None:
        self._list_duration(informer).observe(seconds)

    def observe_watch_duration(self, informer: str, seconds: float) -> None:
        self._watch_duration(informer).observe(seconds)

    def inc_watch_restarts(self, informer: str) -> None:
        self._watch_restarts(informer).inc()

    def inc_relists_gone(self, informer: str) -> None:
        self._relists_gone(informer).inc()

    def inc_events(self, informer: str, event_type: str) -> None:
        self._informer_events(informer, event_type).inc()

    # -- call observers
    def observe_api(self, verb: str, resource: str, code: int, seconds: float) -> None:
        self._api_latency(verb, resource, str(code)).observe(seconds)

    def observe_api_wait(self, seconds: float) -> None:
        self.api_wait.observe(seconds)

    def observe_http(self, purpose: str, code: int, seconds: float) -> None:
        self._http_latency(purpose, str(code)).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _UnfinishedCollector(Collector):
    def __init__(self, probes: dict[str, Callable[[], UnfinishedWork]]) -> None:
        self.probes = probes

    def collect(self) -> Iterable[GaugeMetricFamily]:
        total = GaugeMetricFamily(
            "workqueue_unfinished_work_seconds",
            "Seconds of work in progress not yet observed",
            labels=["name"],
        )
        longest = GaugeMetricFamily(
            "workqueue_longest_running_processor_seconds",
            "Seconds the longest running item has been processed",
            labels=["name"],
        )
        for name, probe in self.probes.items():
            work = probe()
            total.add_metric([name], work.total_seconds)
            longest.add_metric([name], work.longest_seconds)
        yield total
        yield longest


class HealthServer:
    """``/metrics``, ``/healthz`` (the loop answers and ``alive()`` holds) and ``/readyz``."""

    def __init__(self, metrics: Metrics, alive: Callable[[], str], ready: Callable[[], str]) -> None:
        """``alive``/``ready`` return "" when fine, else the reason (served with a 503)."""
        self.metrics = metrics
        self.alive = alive
        self.ready = ready
        self._runner: web.AppRunner | None = None
        self.started = time.monotonic()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._check(self.alive))
        app.router.add_get("/readyz", self._check(self.ready))
        return app

    async def start(self, host: str, port: int) -> int:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server  # the bound socket tells the real port when 0 was asked for
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), content_type="text/plain", charset="utf-8")

    @staticmethod
    def _check(probe: Callable[[], str]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(_: web.Request) -> web.StreamResponse:
            problem = probe()
            return web.Response(status=503 if problem else 200, text=problem or "ok")

        return handler
