"""The requester stub's two HTTP servers (contract §3) over one small state object.

The probes app answers the kubelet's readiness probe with the readiness the controller relayed;
the SPI app tells the controller the container's GPUs and takes the relayed readiness. The apps
are built by factories over a ``StubState`` and an injectable ``GpuDiscovery``, so the same
handlers can run in this process or be hosted by the thousand inside a hollow kubelet.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from dpctl.api import BECOME_READY_PATH, BECOME_UNREADY_PATH, DIALECTS, READY_PATH
from dpctl.faults import Faults
from dpctl.stub.discovery import DiscoveryError, GpuDiscovery
from dpctl.stub.serving import bind, start_runner

log = logging.getLogger(__name__)


@dataclass
class StubState:
    """Readiness as last relayed by the controller; a restarted stub starts unready."""

    ready: bool = False


_STATE: Final = web.AppKey("state", StubState)
_DISCOVERY: Final = web.AppKey("discovery", GpuDiscovery)


def make_probes_app(state: StubState, faults: Faults | None = None) -> web.Application:
    app = web.Application()
    if faults is not None:
        faults.install(app)
    app[_STATE] = state
    app.router.add_get(READY_PATH, _ready)
    return app


def make_spi_app(state: StubState, discovery: GpuDiscovery, faults: Faults | None = None) -> web.Application:
    app = web.Application()
    if faults is not None:
        faults.install(app)
    app[_STATE] = state
    app[_DISCOVERY] = discovery
    for dialect in DIALECTS:  # an old and a new controller alike find the GPUs
        app.router.add_get(dialect.accelerators_path, _accelerators)
    app.router.add_post(BECOME_READY_PATH, _become_ready)
    app.router.add_post(BECOME_UNREADY_PATH, _become_unready)
    return app


async def _ready(request: web.Request) -> web.Response:
    if request.app[_STATE].ready:
        return web.Response(text="OK")
    return web.Response(status=503, text="not ready: the controller has not relayed readiness")


async def _accelerators(request: web.Request) -> web.Response:
    try:
        uuids = await request.app[_DISCOVERY].discover()
    except DiscoveryError as e:
        return web.Response(status=503, text=str(e))
    return web.json_response(uuids)


async def _become_ready(request: web.Request) -> web.Response:
    return _set_ready(request.app[_STATE], True)


async def _become_unready(request: web.Request) -> web.Response:
    return _set_ready(request.app[_STATE], False)


def _set_ready(state: StubState, ready: bool) -> web.Response:
    if state.ready != ready:
        log.info("The controller relayed readiness: now %s", "ready" if ready else "unready")
    state.ready = ready
    return web.Response(text="OK")


class BindError(OSError):
    """A listener could not be bound; ``listener`` says which (``probes`` or ``spi``)."""

    def __init__(self, listener: str, address: str, cause: OSError) -> None:
        super().__init__(cause.errno, f"cannot listen for {listener} on {address}: {cause.strerror or cause}")
        self.listener = listener


class StubServer:
    """Both listeners of one stub. ``start`` binds both or neither."""

    def __init__(
        self,
        state: StubState,
        discovery: GpuDiscovery,
        host: str,
        probes_port: int,
        spi_port: int,
        faults: Faults | None = None,
    ) -> None:
        self._apps = (
            ("probes", make_probes_app(state, faults), probes_port),
            ("spi", make_spi_app(state, discovery, faults), spi_port),
        )
        self._host = host
        self._runners: list[web.AppRunner] = []

    async def start(self) -> None:
        """Raises BindError, after releasing whatever it had bound."""
        try:
            for listener, app, port in self._apps:
                runner = await start_runner(app)
                self._runners.append(runner)
                try:
                    await bind(runner, self._host, port)
                except OSError as e:
                    raise BindError(listener, f"{self._host}:{port}", e) from e
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
