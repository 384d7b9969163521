"""The kubelet endpoint's log serving (choice of file, options, follow) and the admin API with its client."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web

from dpctl.log import get as get_logger
from dpsim.kubelet import ctl
from dpsim.kubelet.admin import AdminServer
from dpsim.kubelet.containers import ContainerRecord, CrashBackoff, Running
from dpsim.kubelet.logfiles import CriLogWriter, LogOptions
from dpsim.kubelet.logserver import LogRequestError, parse_options, resolve_target, stream_logs
from dpsim.kubelet.nodes import NodeAgent
from dpsim.kubelet.podrecord import PodRecord
from dpsim.kubelet.status import ConditionClock


def pod_record(tmp_path: Path, restarts: int, running: bool) -> PodRecord:
    r = ContainerRecord("c", "img", CrashBackoff(1, 8))
    r.restart_count = restarts
    if running:
        r.running = Running("id", "t", 0.0)
    for i in range(restarts + 1):
        w = CriLogWriter(tmp_path / "logs" / "c" / f"{i}.log")
        w.write("stdout", f"instance {i}\nsecond line\n".encode())
        w.close()
    return PodRecord("u", "ns", "p", "node-1", tmp_path, "127.64.0.1", [], [r], ConditionClock())


def test_current_and_previous_files(tmp_path: Path) -> None:
    rec = pod_record(tmp_path, restarts=2, running=True)
    assert resolve_target(rec, "p", "c", previous=False).path.name == "2.log"
    assert resolve_target(rec, "p", "c", previous=True).path.name == "1.log"
    assert resolve_target(rec, "p", "c", previous=False).live()
    assert not resolve_target(rec, "p", "c", previous=True).live()


@pytest.mark.parametrize(
    ("restarts", "ever_ran", "previous", "status", "message"),
    [
        (0, True, True, 400, 'previous terminated container "c" in pod "p" not found'),
        (0, False, False, 400, 'container "c" in pod "p" is waiting to start: ImagePullBackOff'),
    ],
)
def test_kubelet_errors(
    tmp_path: Path, restarts: int, ever_ran: bool, previous: bool, status: int, message: str
) -> None:
    rec = pod_record(tmp_path, restarts, running=ever_ran)
    if not ever_ran:
        rec.app[0].set_waiting("ImagePullBackOff")
    with pytest.raises(LogRequestError) as e:
        resolve_target(rec, "p", "c", previous)
    assert (e.value.status, str(e.value)) == (status, message)
    with pytest.raises(LogRequestError) as gone:
        resolve_target(None, "p", "c", False)
    assert gone.value.status == 404


def test_parse_options() -> None:
    opts = parse_options({"follow": "true", "tailLines": "3", "timestamps": "1", "previous": "false"})
    assert opts == LogOptions(tail_lines=3, timestamps=True, follow=True)
    assert parse_options({"sinceSeconds": "10"}).since_time is not None
    with pytest.raises(LogRequestError):
        parse_options({"tailLines": "x"})


async def test_follow_streams_new_lines_until_the_container_ends(tmp_path: Path) -> None:
    rec = pod_record(tmp_path, restarts=0, running=True)
    target = resolve_target(rec, "p", "c", previous=False)

    async def handler(request: web.Request) -> web.StreamResponse:
        return await stream_logs(request, target, parse_options(dict(request.query)))

    app = web.Application()
    app.router.add_get("/logs", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/logs"
            async with session.get(
                url, params={"limitBytes": "5"}, timeout=aiohttp.ClientTimeout(total=10)
            ) as r:
                assert await r.read() == b"insta"
            async with session.get(
                url, params={"follow": "true", "tailLines": "1"}, timeout=aiohttp.ClientTimeout(total=10)
            ) as r:
                assert await r.content.readline() == b"second line\n"
                w = CriLogWriter(target.path)
                w.write("stdout", b"later\n")
                w.close()
                assert await r.content.readline() == b"later\n"
                rec.app[0].running = None  # the container ended: the stream ends
                assert await r.read() == b""
    finally:
        await runner.cleanup()


class FakeAgent:
    def __init__(self, name: str) -> None:
        self.name, self.state, self.calls = name, "ready", cast(list[str], [])

    async def make_not_ready(self) -> None:
        self.calls.append("not-ready")
        self.state = "not-ready"

    async def make_ready(self) -> None:
        raise RuntimeError("node node-1 is removed; add it instead")

    async def remove(self) -> None:
        self.state = "removed"

    async def add(self) -> None:
        self.state = "ready"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state}


def test_admin_api_and_its_client(tmp_path: Path) -> None:
    agents = {"node-1": FakeAgent("node-1")}
    added: list[str] = []

    async def add_node(name: str) -> NodeAgent:
        added.append(name)
        agents[name] = FakeAgent(name)
        return cast(NodeAgent, agents[name])

    loop = asyncio.new_event_loop()
    server = AdminServer(tmp_path, "127.0.0.1", cast(Any, agents), add_node, get_logger("test"))
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        assert ctl.node_action(tmp_path, "node-1", "not-ready") == {"name": "node-1", "state": "not-ready"}
        with pytest.raises(RuntimeError, match="HTTP 409: node node-1 is removed"):
            ctl.node_action(tmp_path, "node-1", "ready")
        with pytest.raises(RuntimeError, match="HTTP 404: no node 'node-9'"):
            ctl.node_action(tmp_path, "node-9", "remove")
        assert ctl.node_action(tmp_path, "node-3", "add")["state"] == "ready"
        assert added == ["node-3"]
        status, body = ctl.call(tmp_path, "GET", "/nodes")
        assert status == 200
        assert [n["name"] for n in body["nodes"]] == ["node-1", "node-3"]
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    assert not (tmp_path / ctl.ADMIN_FILE).exists()
    with pytest.raises(RuntimeError, match="is sim-kubelet running"):
        ctl.node_action(tmp_path, "node-1", "ready")
