"""The Prometheus exposition and the health endpoints, over real HTTP on loopback."""

from __future__ import annotations

import aiohttp

from dpctl.metrics import HealthServer, Metrics
from dpctl.workqueue import RateLimitingQueue


async def test_queue_hooks_use_client_go_series_names() -> None:
    metrics = Metrics()
    queue: RateLimitingQueue[str] = RateLimitingQueue("q", metrics=metrics)
    queue.add("a")
    item = await queue.get()
    queue.done(item)
    text = metrics.exposition().decode()
    for series in (
        "workqueue_adds_total",
        "workqueue_depth",
        "workqueue_queue_duration_seconds_count",
        "workqueue_work_duration_seconds_count",
        "workqueue_unfinished_work_seconds",
        "workqueue_longest_running_processor_seconds",
    ):
        assert series in text, series
    assert 'workqueue_adds_total{name="q"} 1.0' in text


async def test_health_endpoints_report_the_reason() -> None:
    state = {"ready": "caches not synced: pods"}
    server = HealthServer(Metrics(), alive=lambda: "", ready=lambda: state["ready"])
    port = await server.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
            async with s.get(f"http://127.0.0.1:{port}/readyz") as r:
                assert r.status == 503 and "pods" in await r.text()
            state["ready"] = ""
            async with s.get(f"http://127.0.0.1:{port}/readyz") as r:
                assert r.status == 200
            async with s.get(f"http://127.0.0.1:{port}/healthz") as r:
                assert r.status == 200
            async with s.get(f"http://127.0.0.1:{port}/metrics") as r:
                assert r.status == 200
                assert "# TYPE workqueue_depth gauge" in await r.text()
    finally:
        await server.stop()


def test_hooks_reuse_one_child_per_label_set() -> None:
    from prometheus_client import CollectorRegistry

    from dpctl.metrics import Metrics

    m = Metrics(CollectorRegistry())
    for code in (200, 200, 409):
        m.observe_api("patch", "pods", code, 0.01)
        m.inc_events("pods", "MODIFIED")
    count = m.registry.get_sample_value
    assert (
        count(
            "dpctl_api_request_duration_seconds_count", {"verb": "patch", "resource": "pods", "code": "200"}
        )
        == 2
    )
    assert (
        count(
            "dpctl_api_request_duration_seconds_count", {"verb": "patch", "resource": "pods", "code": "409"}
        )
        == 1
    )
    assert count("informer_events_total", {"informer": "pods", "type": "MODIFIED"}) == 3
