"""Real aiohttp servers on loopback (port 0) and an HttpClient that records its observations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from dpctl.clients import HttpClient

Serve = Callable[[web.Application], Awaitable[int]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def reply(**response: Any) -> Handler:
    """A handler that always answers ``web.Response(**response)``."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(**response)

    return handler


async def hang(request: web.Request) -> web.Response:
    """A handler that never answers (a wedged Pod)."""
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start an app on 127.0.0.1 and return its port; everything is stopped after the test."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> int:
        # handler_cancellation: a handler that never answers is cancelled when the client gives up.
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.1)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return int(runner.addresses[0][1])

    yield start
    for runner in runners:
        await runner.cleanup()


class Observations:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, float]] = []

    def __call__(self, purpose: str, status: int, seconds: float) -> None:
        self.calls.append((purpose, status, seconds))


@pytest.fixture
def observations() -> Observations:
    return Observations()


@pytest.fixture
async def http(observations: Observations) -> AsyncIterator[HttpClient]:
    client = HttpClient(observations)
    yield client
    await client.close()
