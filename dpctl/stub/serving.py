"""Hosting aiohttp apps in a small container process: bind up front, serve until SIGTERM, stop fast.

Shared by the requester stub and the vLLM emulator. Listeners are bound before the process says
it started (a caller must be able to connect as soon as that line appears, and a taken port must
fail the process rather than leave it half up), and SIGTERM stops the process well inside a pod's
30 s grace period.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from aiohttp import web

# How long in-flight requests may finish after SIGTERM; far below the 30 s grace period.
SHUTDOWN_TIMEOUT_S: Final = 2.0


async def start_runner(app: web.Application) -> web.AppRunner:
    # No access log: probes every few seconds would drown the lines a user reads.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    return runner


async def bind(runner: web.AppRunner, host: str, port: int) -> None:
    """Start listening; raises OSError (e.g. address in use) before anything is served."""
    site = web.TCPSite(runner, host, port)
    await site.start()


@contextmanager
def termination_signals() -> Iterator[asyncio.Future[signal.Signals]]:
    """From entry on, SIGTERM or SIGINT resolves the yielded future instead of killing the process.

    Enter it before binding: a signal that arrives once a caller can connect must be graceful.
    """
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()
    watched = (signal.SIGTERM, signal.SIGINT)

    def on_signal(sig: signal.Signals) -> None:
        if not received.done():
            received.set_result(sig)

    for sig in watched:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield received
    finally:
        for sig in watched:
            loop.remove_signal_handler(sig)
