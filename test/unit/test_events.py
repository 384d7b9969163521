"""Event recording: aggregation of repeats, per-object rate limits, bounded pending queue."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from dpctl.events import EventRecorder
from helpers import async_wait_for


class FakeKube:
    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.patched: list[tuple[str, dict[str, Any]]] = []

    async def create(self, res: Any, body: Any, namespace: str | None = None, **_: Any) -> dict[str, Any]:
        obj = {**body, "metadata": {**body["metadata"], "name": f"ev-{len(self.created)}"}}
        self.created.append(obj)
        return obj

    async def patch(
        self, res: Any, name: str, body: Any, namespace: str | None = None, **_: Any
    ) -> dict[str, Any]:
        self.patched.append((name, body))
        return {}


def pod(uid: str = "u1") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns", "uid": uid}}


async def test_repeats_are_aggregated_into_one_event_with_a_count() -> None:
    kube = FakeKube()
    rec = EventRecorder(kube, "ns", "dual-pods-controller")  # type: ignore[arg-type]
    task = asyncio.create_task(rec.run())
    for _ in range(3):
        rec.record(pod(), "Warning", "GpuMap", "the gpu-map is missing")
    await async_wait_for(lambda: len(kube.patched) == 2, 5, "two count bumps")
    assert len(kube.created) == 1
    assert kube.created[0]["involvedObject"]["uid"] == "u1"
    assert kube.created[0]["source"]["component"] == "dual-pods-controller"
    assert [p[1]["count"] for p in kube.patched] == [2, 3]
    task.cancel()


async def test_a_stuck_object_cannot_flood_the_api() -> None:
    kube = FakeKube()
    rec = EventRecorder(kube, "ns", "c", per_object_burst=5, per_object_rate=0.0)  # type: ignore[arg-type]
    task = asyncio.create_task(rec.run())
    for i in range(100):
        rec.record(pod(), "Warning", "X", f"distinct message {i}")
    rec.record(pod("other"), "Normal", "Y", "another object is unaffected")
    await async_wait_for(lambda: len(kube.created) == 6, 5, "five events of the stuck object and one other")
    assert rec.dropped == 95
    task.cancel()


async def test_pending_queue_is_bounded() -> None:
    rec = EventRecorder(FakeKube(), "ns", "c", max_pending=3, per_object_burst=100)  # type: ignore[arg-type]
    for i in range(10):
        rec.record(pod(f"u{i}"), "Normal", "R", "m")
    assert rec.dropped == 7


async def test_a_dropped_connection_loses_one_event_not_the_recorder() -> None:
    """aiohttp's ServerDisconnectedError is not an OSError; it must not end the drain task."""

    class Flaky(FakeKube):
        def __init__(self) -> None:
            super().__init__()
            self.failures = 1

        async def create(
            self, res: Any, body: Any, namespace: str | None = None, **kw: Any
        ) -> dict[str, Any]:
            if self.failures:
                self.failures -= 1
                raise aiohttp.ServerDisconnectedError()
            return await super().create(res, body, namespace, **kw)

    kube = Flaky()
    rec = EventRecorder(kube, "ns", "c")  # type: ignore[arg-type]
    task = asyncio.create_task(rec.run())
    rec.record(pod("u1"), "Normal", "R", "lost with the connection")
    rec.record(pod("u2"), "Normal", "R", "recorded after it")
    await async_wait_for(lambda: len(kube.created) == 1, 5, "the second event recorded")
    assert not task.done()
    assert kube.created[0]["involvedObject"]["uid"] == "u2"
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
