"""Hollow listeners: connections reach the server registered for the address they were made to."""

from __future__ import annotations

import asyncio
import errno
import random
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from dpsim.kubelet.hollownet import HollowListeners
from helpers import async_wait_for


def free_port(host: str = "0.0.0.0") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def hosts(n: int) -> list[str]:
    """Loopback addresses outside the local clusters' blocks (127.64.0.0 and up)."""
    block = random.randint(1, 60)
    return [f"127.{block}.{random.randint(0, 255)}.{i + 2}" for i in range(n)]


class Served:
    """An aiohttp server that says who it is, set up but not bound (like a hollow container's)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.app = web.Application()
        self.app.router.add_get("/who", self._who)
        self.release = asyncio.Event()
        self.app.router.add_get("/slow", self._slow)
        self.runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.5)

    async def _who(self, _: web.Request) -> web.Response:
        return web.Response(text=self.name)

    async def _slow(self, _: web.Request) -> web.Response:
        await self.release.wait()
        return web.Response(text="late")

    async def start(self) -> Served:
        await self.runner.setup()
        return self

    @property
    def factory(self) -> web.Server:
        assert self.runner.server is not None
        return self.runner.server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(force_close=True)  # a new connection per request
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=5)) as s:
        yield s


async def get(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as resp:
        return await resp.text()


@pytest.mark.parametrize("mode", ["pod", "any"])
async def test_each_connection_goes_to_the_server_of_its_destination(
    mode: str, session: aiohttp.ClientSession
) -> None:
    net = HollowListeners(mode)  # type: ignore[arg-type]
    a, b = await Served("a").start(), await Served("b").start()
    ip_a, ip_b = hosts(2)
    port = free_port()
    try:
        await net.register(ip_a, port, a.factory)
        await net.register(ip_b, port, b.factory)
        assert await get(session, f"http://{ip_a}:{port}/who") == "a"
        assert await get(session, f"http://{ip_b}:{port}/who") == "b"
        assert net.sockets() == (1 if mode == "any" else 2)
    finally:
        await net.close()
        await a.runner.cleanup()
        await b.runner.cleanup()


async def test_an_address_is_served_once() -> None:
    net = HollowListeners("pod")
    a = await Served("a").start()
    (ip,) = hosts(1)
    port = free_port()
    try:
        await net.register(ip, port, a.factory)
        with pytest.raises(OSError) as info:
            await net.register(ip, port, a.factory)
        assert info.value.errno == errno.EADDRINUSE
    finally:
        await net.close()
        await a.runner.cleanup()


async def test_pod_mode_refuses_connections_once_unregistered(session: aiohttp.ClientSession) -> None:
    net = HollowListeners("pod")
    a = await Served("a").start()
    (ip,) = hosts(1)
    port = free_port()
    try:
        await net.register(ip, port, a.factory)
        assert await get(session, f"http://{ip}:{port}/who") == "a"
        net.unregister(ip, port)
        assert net.sockets() == 0
        with pytest.raises(aiohttp.ClientConnectorError):
            await get(session, f"http://{ip}:{port}/who")
        # The address is free again, for the next instance.
        await net.register(ip, port, a.factory)
        assert await get(session, f"http://{ip}:{port}/who") == "a"
    finally:
        await net.close()
        await a.runner.cleanup()


async def test_any_mode_resets_connections_to_addresses_without_a_server(
    session: aiohttp.ClientSession,
) -> None:
    net = HollowListeners("any")
    a = await Served("a").start()
    ip, other = hosts(2)
    port = free_port()
    try:
        await net.register(ip, port, a.factory)
        with pytest.raises(aiohttp.ClientError):
            await get(session, f"http://{other}:{port}/who")
        assert await get(session, f"http://{ip}:{port}/who") == "a"
    finally:
        await net.close()
        await a.runner.cleanup()


async def test_abort_resets_connections_in_flight(session: aiohttp.ClientSession) -> None:
    net = HollowListeners("pod")
    a = await Served("a").start()
    (ip,) = hosts(1)
    port = free_port()
    try:
        await net.register(ip, port, a.factory)
        pending = asyncio.ensure_future(get(session, f"http://{ip}:{port}/slow"))
        await async_wait_for(lambda: a.factory.requests_count, 5, "the request to be in the handler")
        net.abort(ip, port)
        with pytest.raises(aiohttp.ClientError):
            await pending
    finally:
        a.release.set()
        await net.close()
        await a.runner.cleanup()


async def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="pod, any"):
        HollowListeners("everywhere")  # type: ignore[arg-type]
