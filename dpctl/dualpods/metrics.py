"""Prometheus series of the dual-pods logic: actuations, binds, wakes, sleeps, evictions, errors.

The actuation histogram measures, per path, the time from the requester's container starting
to its readiness being relayed — what the user waits for. ``cold`` means a new runner was
created, ``hot`` that a sleeping one was woken. ``dpctl_controller_added_seconds{step}`` is the
controller's own share of it: from the informer event that made a step possible to the call
that does it (see :mod:`dpctl.dualpods.latency`). The population gauges are computed from the
informer cache when scraped, so they can never drift from the truth.
"""

from __future__ import annotations

import contextvars
import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from dpctl import api
from dpctl.clients import inference, launcher, requester
from dpctl.dualpods import podview
from dpctl.dualpods.latency import STEPS, Step
from dpctl.dualpods.podview import RawObj
from dpctl.dualpods.ports import Counted, DeleteReason, ErrorReason, Path

ACTUATION_BUCKETS = (0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 240, 480, 960)
# Upstream's buckets of fma_actuation_seconds and fma_launcher_create_seconds (up to 32 minutes).
FMA_BUCKETS = (0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 240, 480, 960, 1920)
# fma_duality keeps a series at 0 for each pair that was bound, as upstream's does; only the
# latest this many unbound pairs keep theirs, so a long-lived controller's series stay bounded.
MAX_UNBOUND_DUALITY_SERIES = 1000
# The InferenceServerConfig of the reconcile an HTTP call is made in ("" on the direct path), for
# fma_http_latency_seconds' isc_name: set per reconcile, so every call under it carries it.
CURRENT_ISC: contextvars.ContextVar[str] = contextvars.ContextVar("dpctl_current_isc", default="")
# Our clients' purposes by upstream's names of them (and methods) in fma_http_latency_seconds.
FMA_PURPOSES: Final = {
    launcher.PURPOSE_LIST: ("list_instances", "GET"),
    launcher.PURPOSE_CREATE: ("create_instance", "PUT"),
    launcher.PURPOSE_DELETE: ("delete_instance", "DELETE"),
    inference.PURPOSE_IS_SLEEPING: ("query_sleeping", "GET"),
    inference.PURPOSE_SLEEP: ("sleep", "POST"),
    inference.PURPOSE_WAKE_UP: ("wake", "POST"),
    requester.PURPOSE_ACCELERATORS: ("get_gpu_uuids", "GET"),
    requester.PURPOSE_MEMORY: ("get_accel_memory_usage", "GET"),
    requester.PURPOSE_BECOME_READY: ("relay_ready", "POST"),
    requester.PURPOSE_BECOME_UNREADY: ("relay_unready", "POST"),
}
DUALITY_LABELS = (
    "exported_namespace", "requester_name", "exported_pod", "exported_container", "instance_id", "UUID", "node",
)  # fmt: skip
# Fine around the 100 ms a step may take, so quantiles read from the buckets mean something.
ADDED_BUCKETS = (
    0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30,
)  # fmt: skip


class DualPodsMetrics:
    """The metrics half of the :class:`~dpctl.dualpods.ports.Reporter` port."""

    def __init__(
        self, registry: CollectorRegistry, pods: Callable[[], Iterable[RawObj]], namespace: str = ""
    ) -> None:
        r = registry
        self._namespace = namespace
        self.actuation = Histogram(
            "dpctl_actuation_seconds",
            "From the requester's container running to its readiness relayed",
            ["path"],
            buckets=ACTUATION_BUCKETS,
            registry=r,
        )
        self.added = Histogram(
            "dpctl_controller_added_seconds",
            "From the informer event that made a step possible to the controller sending its call",
            ["step"],
            buckets=ADDED_BUCKETS,
            registry=r,
        )
        for step in STEPS:
            self.added.labels(step)
        self.counters: dict[Counted, Counter] = {
            "bind": Counter("dpctl_binds", "Sleeping runners bound to a requester", registry=r),
            "wake": Counter("dpctl_wakes", "Inference servers woken", registry=r),
            "sleep": Counter("dpctl_sleeps", "Inference servers put to sleep", registry=r),
            "eviction": Counter(
                "dpctl_sleeper_evictions", "Sleepers deleted to respect the sleeper limit", registry=r
            ),
        }
        self.runner_deletions = Counter(
            "dpctl_runner_deletions", "Runners deleted, by reason", ["reason"], registry=r
        )
        self.status_errors = Counter(
            "dpctl_status_errors", "Status errors set on requesters, by reason", ["reason"], registry=r
        )
        self.relayed_bytes = Counter(
            "dpctl_log_relay_bytes", "Bytes of runner logs relayed to requester stubs", registry=r
        )
        self.relay_streams = Gauge(
            "dpctl_log_relay_streams", "Log relays open (one per bound pair being served)", registry=r
        )
        # The launcher path's series, by upstream's names and labels (launcher contract §10).
        self.fma_actuation = Histogram(
            "fma_actuation_seconds",
            "From the requester's container running to its readiness relayed, launcher path",
            ["exported_namespace", "path", "instancesDeleted", "isc_name"],
            buckets=FMA_BUCKETS,
            registry=r,
        )
        self.fma_launcher_create = Histogram(
            "fma_launcher_create_seconds",
            "Time to create a launcher Pod",
            ["exported_namespace", "lcfg_name", "success"],
            buckets=FMA_BUCKETS,
            registry=r,
        )
        self.fma_duality = Gauge(
            "fma_duality",
            "1 while a requester is bound to a launcher instance, 0 after",
            DUALITY_LABELS,
            registry=r,
        )
        self._unbound_duality: dict[tuple[str, ...], None] = {}
        self.fma_http = Histogram(
            "fma_http_latency_seconds",
            "HTTP calls of the controller, by upstream's purpose names",
            ["purpose", "method", "exported_namespace", "isc_name", "status_code"],
            registry=r,
        )
        r.register(_Population(pods))

    def relayed(self, nbytes: int) -> None:
        self.relayed_bytes.inc(nbytes)

    def streams(self, open_: int) -> None:
        self.relay_streams.set(open_)

    def count(self, what: Counted) -> None:
        self.counters[what].inc()

    def runner_deleted(self, reason: DeleteReason) -> None:
        self.runner_deletions.labels(reason).inc()

    def status_error(self, reason: ErrorReason) -> None:
        self.status_errors.labels(reason).inc()

    def actuated(self, path: Path, requester: RawObj, isc: str = "", instances_deleted: int = 0) -> None:
        started = podview.container_started_at(requester)
        if not started:
            return
        try:
            t0 = dt.datetime.fromisoformat(started.replace("Z", "+00:00"))
        except ValueError:
            return
        seconds = max(0.0, (dt.datetime.now(dt.UTC) - t0).total_seconds())
        self.actuation.labels(path).observe(seconds)
        if isc:
            namespace = str(podview.meta(requester).get("namespace") or "")
            self.fma_actuation.labels(namespace, path, str(instances_deleted), isc).observe(seconds)

    def observe_http(self, purpose: str, code: int, seconds: float) -> None:
        """An HTTP call ended (the client's observer): into fma_http_latency_seconds, if upstream
        has a name for its purpose."""
        named = FMA_PURPOSES.get(purpose)
        if named is not None:
            self.fma_http.labels(named[0], named[1], self._namespace, CURRENT_ISC.get(), str(code)).observe(
                seconds
            )

    def launcher_created(self, lc: str, seconds: float, success: bool) -> None:
        self.fma_launcher_create.labels(self._namespace, lc, str(success).lower()).observe(seconds)

    def duality(self, launcher: RawObj, instance_id: str, gpu_uuids: Sequence[str], bound: bool) -> None:
        for series in _duality_series(launcher, instance_id, gpu_uuids):
            self.fma_duality.labels(*series).set(1 if bound else 0)
            if bound:
                self._unbound_duality.pop(series, None)
                continue
            self._unbound_duality[series] = None
            while len(self._unbound_duality) > MAX_UNBOUND_DUALITY_SERIES:
                oldest = next(iter(self._unbound_duality))
                del self._unbound_duality[oldest]
                self.fma_duality.remove(*oldest)

    def added_latency(self, step: Step, seconds: float) -> None:
        self.added.labels(step).observe(seconds)


def _duality_series(launcher: RawObj, instance_id: str, gpu_uuids: Sequence[str]) -> list[tuple[str, ...]]:
    """The label values of a pair's fma_duality series: one per GPU of the instance."""
    bound = podview.bound_requester(launcher)
    common = (
        str(podview.meta(launcher).get("namespace") or ""),
        bound[1] if bound else "",
        podview.name(launcher),
        api.INFERENCE_SERVER_CONTAINER,
        instance_id,
    )
    return [(*common, uuid, podview.runner_node(launcher)) for uuid in gpu_uuids or [""]]


class _Population(Collector):
    def __init__(self, pods: Callable[[], Iterable[RawObj]]) -> None:
        self.pods = pods

    def collect(self) -> Iterable[GaugeMetricFamily]:
        requesters = bound = sleeping = 0
        for pod in self.pods():
            if podview.is_requester(pod):
                requesters += 1
            elif podview.is_runner(pod):
                if podview.bound_requester(pod) is None:
                    sleeping += 1
                else:
                    bound += 1
        yield GaugeMetricFamily("dpctl_requesters", "Server-requesting Pods", value=requesters)
        yield GaugeMetricFamily(
            "dpctl_runners_bound", "Server-running Pods bound to a requester", value=bound
        )
        yield GaugeMetricFamily(
            "dpctl_runners_sleeping", "Unbound (sleeping) server-running Pods", value=sleeping
        )
