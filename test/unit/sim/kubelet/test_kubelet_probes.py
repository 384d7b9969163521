"""Probe timing and thresholds (pure, with explicit times) and one worker against a real server."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from dpsim.kubelet.probes import (
    ProbeSpec,
    ProbeSpecError,
    ProbeTracker,
    ProbeWorker,
    parse_probe,
)
from helpers import async_wait_for

CONTAINER = {"name": "c", "ports": [{"name": "probes", "containerPort": 8080}]}


def test_parse_applies_api_defaults_and_resolves_named_ports() -> None:
    spec = parse_probe({"httpGet": {"path": "/ready", "port": "probes"}}, CONTAINER)
    assert spec == ProbeSpec("http", port=8080, path="/ready")
    spec = parse_probe({"tcpSocket": {"port": 9}, "periodSeconds": 2, "failureThreshold": 1}, CONTAINER)
    assert spec is not None
    assert (spec.handler, spec.port, spec.period, spec.failure_threshold) == ("tcp", 9, 2.0, 1)
    assert parse_probe(None, CONTAINER) is None
    with pytest.raises(ProbeSpecError, match="'nope' is not a named port"):
        parse_probe({"httpGet": {"port": "nope"}}, CONTAINER)


def test_schedule_starts_after_the_initial_delay_then_every_period() -> None:
    t = ProbeTracker("readiness", ProbeSpec("http", initial_delay=5, period=2), started_at=100.0)
    assert t.next_due() == 105.0
    t.record(105.0, False)
    assert t.next_due() == 107.0
    t.record(107.3, False)
    assert t.next_due() == 109.0
    t.record(115.0, False)  # overran: the missed ticks are skipped
    assert t.next_due() == 117.0


def test_initial_results() -> None:
    spec = ProbeSpec("http")
    assert not ProbeTracker("readiness", spec, 0).result
    assert ProbeTracker("liveness", spec, 0).result
    assert not ProbeTracker("startup", spec, 0).result


def test_thresholds_need_consecutive_results() -> None:
    t = ProbeTracker("readiness", ProbeSpec("http", success_threshold=2, failure_threshold=3), 0)
    assert not t.record(1, True)
    assert t.record(2, True)
    assert t.result
    assert not t.record(3, False)
    assert not t.record(4, True)  # the run of failures is broken
    assert not t.record(5, False)
    assert not t.record(6, False)
    assert t.record(7, False)
    assert not t.result


async def test_worker_reports_readiness_and_a_liveness_failure_ends_it() -> None:
    healthy = {"ok": False}

    async def ready(_: web.Request) -> web.Response:
        return web.Response(status=200 if healthy["ok"] else 503)

    app = web.Application()
    app.router.add_get("/ready", ready)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    changes: list[tuple[str, bool]] = []
    async with aiohttp.ClientSession() as session:
        now = asyncio.get_running_loop().time()
        spec = ProbeSpec("http", port=port, path="/ready", period=0.05, timeout=1)
        worker = ProbeWorker(
            {"readiness": spec}, now, "127.0.0.1", session, lambda kind, ok, _: changes.append((kind, ok))
        )
        live = ProbeWorker(
            {"liveness": spec}, now, "127.0.0.1", session, lambda kind, ok, _: changes.append((kind, ok))
        )
        worker.start()
        live.start()
        try:
            await async_wait_for(lambda: ("liveness", False) in changes, 5, "liveness to fail")
            assert not worker.ready
            healthy["ok"] = True
            await async_wait_for(lambda: worker.ready, 5, "readiness")
        finally:
            worker.cancel()
            live.cancel()
            await runner.cleanup()
    assert changes.count(("liveness", False)) == 1  # the worker stops: the container is restarted
    assert ("readiness", True) in changes


async def test_startup_probe_gates_the_others() -> None:
    spec = ProbeSpec("grpc", period=0.01)  # unsupported: always fails
    async with aiohttp.ClientSession() as session:
        worker = ProbeWorker({"startup": spec, "readiness": spec}, 0.0, "127.0.0.1", session, lambda *_: None)
        assert not worker.started
        assert not worker.ready
        assert [t.kind for t in worker._active()] == ["startup"]
