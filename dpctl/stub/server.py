"""The requester stub's two HTTP servers (contract §3) over one small state object.

The probes app answers the kubelet's readiness probe with the readiness the controller relayed;
the SPI app tells the controller the container's GPUs and their memory in use, takes the relayed
readiness, and takes the relayed inference-server log (``set-log``), which it appends to the
container's stdout so that ``kubectl logs <requester>`` shows it. The apps are built by factories
over a ``StubState`` and injectable sources and log sink, so the same handlers can run in this
process or be hosted by the thousand inside a hollow kubelet.

Answers match upstream's stub (``pkg/server/requester/coordination/server.go`` at 553c7b7) in
status and text, with these deliberate differences: a GPU discovery failure is 503 (retryable),
not 500; a set-log body over ``MAX_LOG_CHUNK_BYTES`` is 413 (upstream reads any size); a
``startPos`` that is not plain decimal digits (Go's ParseInt would take ``+5``) is 400 with our
words.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from dpctl.api import (
    ACCELERATOR_MEMORY_PATH,
    BECOME_READY_PATH,
    BECOME_UNREADY_PATH,
    DIALECTS,
    READY_PATH,
    SET_LOG_PATH,
    SET_LOG_START_PARAM,
)
from dpctl.faults import Faults
from dpctl.stub.discovery import DiscoveryError, GpuDiscovery
from dpctl.stub.memory import MemorySource, default_memory
from dpctl.stub.serving import bind, start_runner

log = logging.getLogger(__name__)

# One set-log call carries at most this much log. The controller sends what vLLM wrote since its
# last call, a few KiB a second even while loading; 1 MiB is minutes of that, and bounds what one
# request makes the stub hold in memory.
MAX_LOG_CHUNK_BYTES: Final = 1 << 20
# Go's int64, the type of upstream's offset: a larger startPos is a parse error there too.
_MAX_START_POS: Final = (1 << 63) - 1
_DECIMAL: Final = re.compile(r"[0-9]+")

# Where relayed log bytes go: the container's stdout (the stub's own log is on stderr).
LogSink = Callable[[bytes], None]


@dataclass
class StubState:
    """Readiness as last relayed by the controller (a restarted stub starts unready), and how many
    bytes of the relayed log it has written (a restarted stub starts from 0, like its stdout)."""

    ready: bool = False
    log_length: int = 0


_STATE: Final = web.AppKey("state", StubState)
_DISCOVERY: Final = web.AppKey("discovery", GpuDiscovery)
_MEMORY: Final = web.AppKey("memory", MemorySource)
_LOG_SINK: Final = web.AppKey[LogSink]("log_sink")


def stdout_sink(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def make_probes_app(state: StubState, faults: Faults | None = None) -> web.Application:
    app = web.Application()
    if faults is not None:
        faults.install(app)
    app[_STATE] = state
    app.router.add_get(READY_PATH, _ready)
    return app


def make_spi_app(
    state: StubState,
    discovery: GpuDiscovery,
    faults: Faults | None = None,
    *,
    memory: MemorySource | None = None,
    log_sink: LogSink = stdout_sink,
) -> web.Application:
    """``memory`` defaults to this container's NVML / ``nvidia-smi``."""
    # The cap on a request body is aiohttp's; set here so it is ours on purpose, not by default.
    app = web.Application(client_max_size=MAX_LOG_CHUNK_BYTES)
    if faults is not None:
        faults.install(app)
    app[_STATE] = state
    app[_DISCOVERY] = discovery
    app[_MEMORY] = memory if memory is not None else default_memory()
    app[_LOG_SINK] = log_sink
    for dialect in DIALECTS:  # an old and a new controller alike find the GPUs
        app.router.add_get(dialect.accelerators_path, _accelerators)
    app.router.add_get(ACCELERATOR_MEMORY_PATH, _accelerator_memory)
    app.router.add_post(BECOME_READY_PATH, _become_ready)
    app.router.add_post(BECOME_UNREADY_PATH, _become_unready)
    app.router.add_post(SET_LOG_PATH, _set_log)
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


async def _accelerator_memory(request: web.Request) -> web.Response:
    """200 and ``{"GPU-...": MiB used, ...}``; 500 and the reasons as text, as upstream's stub."""
    try:
        used = await request.app[_MEMORY].memory_used_mib()
    except DiscoveryError as e:
        log.error("Returning errors to memory query: %s", e)
        return web.Response(status=500, text=f"{e}\n")
    return web.json_response(used)


async def _set_log(request: web.Request) -> web.Response:
    """Append the part of the chunk beyond what was written already (upstream's semantics: a
    repeated or overlapping chunk adds only what is new, a chunk starting beyond the end is 400)."""
    start_text = request.query.get(SET_LOG_START_PARAM, "")
    if not start_text:
        return _set_log_answer(400, f"Missing {SET_LOG_START_PARAM} parameter")
    if start_text.startswith("-") and _DECIMAL.fullmatch(start_text[1:]):
        return _set_log_answer(
            400, f"Starting position {int(start_text)} is unacceptable because it is negative"
        )
    if not _DECIMAL.fullmatch(start_text) or int(start_text) > _MAX_START_POS:
        return _set_log_answer(
            400, f"Failed to parse {start_text!r} as an int64: {SET_LOG_START_PARAM} must be a byte offset"
        )
    start = int(start_text)
    try:
        chunk = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _set_log_answer(
            413, f"Log chunk larger than {MAX_LOG_CHUNK_BYTES} bytes; send the log in smaller chunks"
        )
    state = request.app[_STATE]
    # No await from here on: the check and the write are one step for concurrent calls.
    length = state.log_length
    if start > length:
        return _set_log_answer(400, f"Starting position {start} is beyond the current contentLength={length}")
    if start + len(chunk) <= length:
        return _set_log_answer(
            200,
            f"Accepted startPos={start}, chunkLength={len(chunk)}, but that has nothing new;"
            f" still contentLength={length}",
        )
    news = chunk[length - start :]
    try:
        request.app[_LOG_SINK](news)
    except OSError as e:
        return _set_log_answer(500, f"Failed to write log chunk: {e}")
    state.log_length += len(news)
    message = (
        f"Accepted startPos={start}, chunkLength={len(chunk)}; addedContentLength={len(news)},"
        f" new contentLength={state.log_length}"
    )
    log.info("%s", message)
    return _set_log_answer(200, message)


def _set_log_answer(status: int, message: str) -> web.Response:
    # Upstream's line ending, so a client that reads its answers reads ours.
    return web.Response(status=status, text=message + "\r\n")


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
