"""The requester stub's HTTP surface over real loopback sockets: every path, method and status,
readiness relay, GPU discovery failures answered 503 and retried, and binding both-or-neither."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dpctl.stub.discovery import DiscoveryError, FirstSuccess
from dpctl.stub.server import BindError, StubServer, StubState, make_probes_app, make_spi_app

UUID_A = "GPU-11111111-2222-3333-4444-555555555555"

# A client of a TestServer serving an Application.
Client = TestClient[web.Request, web.Application]


class Flaky:
    """Fails with a reason until told to succeed."""

    def __init__(self) -> None:
        self.uuids: list[str] | None = None
        self.calls = 0

    async def discover(self) -> list[str]:
        self.calls += 1
        if self.uuids is None:
            raise DiscoveryError("nvidia-smi: not found on PATH")
        return self.uuids


@pytest.fixture
def state() -> StubState:
    return StubState()


@pytest.fixture
def flaky() -> Flaky:
    return Flaky()


@pytest.fixture
async def probes(state: StubState) -> AsyncIterator[Client]:
    async with TestClient(TestServer(make_probes_app(state), host="127.0.0.1")) as client:
        yield client


@pytest.fixture
async def spi(state: StubState, flaky: Flaky) -> AsyncIterator[Client]:
    app = make_spi_app(state, FirstSuccess([("flaky", flaky)]))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


async def test_ready_follows_the_relayed_readiness(probes: Client, spi: Client) -> None:
    resp = await probes.get("/ready")
    assert resp.status == 503
    resp = await spi.post("/v1/become-ready")
    assert (resp.status, await resp.text()) == (200, "OK")
    resp = await probes.get("/ready")
    assert (resp.status, await resp.text()) == (200, "OK")
    # Relaying the same readiness again is harmless.
    assert (await spi.post("/v1/become-ready")).status == 200
    assert (await probes.get("/ready")).status == 200
    resp = await spi.post("/v1/become-unready")
    assert (resp.status, await resp.text()) == (200, "OK")
    assert (await probes.get("/ready")).status == 503


async def test_accelerators_failure_is_503_with_reason_then_retried(spi: Client, flaky: Flaky) -> None:
    resp = await spi.get("/v1/dual-pod/accelerators")
    assert resp.status == 503
    assert await resp.text() == "no GPUs found: nvidia-smi: not found on PATH"
    flaky.uuids = [UUID_A]
    resp = await spi.get("/v1/dual-pod/accelerators")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert await resp.json() == [UUID_A]
    assert flaky.calls == 2


async def test_accelerators_success_is_kept(spi: Client, flaky: Flaky) -> None:
    flaky.uuids = [UUID_A]
    for _ in range(3):
        assert await (await spi.get("/v1/dual-pod/accelerators")).json() == [UUID_A]
    assert flaky.calls == 1


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/ready", 405),
        ("GET", "/nothing", 404),
        ("GET", "/v1/dual-pod/accelerators", 404),
        ("POST", "/v1/become-ready", 404),
    ],
)
async def test_probes_rejects(probes: Client, method: str, path: str, status: int) -> None:
    assert (await probes.request(method, path)).status == status


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/become-ready", 405),
        ("GET", "/v1/become-unready", 405),
        ("POST", "/v1/dual-pod/accelerators", 405),
        ("GET", "/ready", 404),
        ("POST", "/v1/dual-pods/accelerators", 405),
        ("GET", "/v1/dual-pods/accelerator", 404),
    ],
)
async def test_spi_rejects(spi: Client, method: str, path: str, status: int) -> None:
    assert (await spi.request(method, path)).status == status


async def test_server_binds_both(unused_tcp_port_factory: Callable[[], int], flaky: Flaky) -> None:
    probes_port, spi_port = unused_tcp_port_factory(), unused_tcp_port_factory()
    server = StubServer(StubState(ready=True), flaky, "127.0.0.1", probes_port, spi_port)
    await server.start()
    try:
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(f"http://127.0.0.1:{probes_port}/ready") as resp:
                assert resp.status == 200
            async with session.post(f"http://127.0.0.1:{spi_port}/v1/become-unready") as resp:
                assert resp.status == 200
            async with session.get(f"http://127.0.0.1:{probes_port}/ready") as resp:
                assert resp.status == 503
    finally:
        await server.stop()


async def test_server_binds_both_or_neither(unused_tcp_port_factory: Callable[[], int], flaky: Flaky) -> None:
    probes_port = unused_tcp_port_factory()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        spi_port = taken.getsockname()[1]
        server = StubServer(StubState(), flaky, "127.0.0.1", probes_port, spi_port)
        with pytest.raises(BindError) as caught:
            await server.start()
    assert caught.value.listener == "spi"
    assert f"127.0.0.1:{spi_port}" in str(caught.value)
    # The probes listener was released again.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", probes_port))


class Memory:
    """A memory source whose answer (or failure) a test sets; counts the calls."""

    def __init__(self) -> None:
        self.used: dict[str, int] | None = None
        self.calls = 0

    async def memory_used_mib(self) -> dict[str, int]:
        self.calls += 1
        if self.used is None:
            raise DiscoveryError("cannot measure GPU memory: nvidia-smi: not found on PATH")
        return dict(self.used)


async def test_memory_usage_is_upstreams_json_and_measured_every_time(state: StubState, flaky: Flaky) -> None:
    memory = Memory()
    app = make_spi_app(state, FirstSuccess([("flaky", flaky)]), memory=memory)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        memory.used = {UUID_A: 41461}
        resp = await client.get("/v1/dual-pods/accelerator-memory-usage")
        assert (resp.status, resp.content_type, await resp.json()) == (
            200,
            "application/json",
            {UUID_A: 41461},
        )
        memory.used = {UUID_A: 512}
        assert await (await client.get("/v1/dual-pods/accelerator-memory-usage")).json() == {UUID_A: 512}
        assert memory.calls == 2


async def test_memory_usage_failure_is_500_with_the_reason(state: StubState, flaky: Flaky) -> None:
    app = make_spi_app(state, FirstSuccess([("flaky", flaky)]), memory=Memory())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        resp = await client.get("/v1/dual-pods/accelerator-memory-usage")
        assert resp.status == 500
        assert await resp.text() == "cannot measure GPU memory: nvidia-smi: not found on PATH\n"
