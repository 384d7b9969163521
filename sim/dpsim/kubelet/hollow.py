"""The hollow runtime (``sim-kubelet --hollow``): stubs and vLLM emulators served in-process.

For thousands of pods one process per container is too much. :class:`HollowRuntime` runs the two
programs that dual pods are made of inside the kubelet's own event loop instead:

- ``dpctl requester`` (the requester image): ``make_probes_app`` and ``make_spi_app`` over one
  ``StubState``, the very handlers and state class the stub process serves;
- ``dpctl vllm-emulator serve ...`` (the vLLM image): ``make_emulator_app`` over an ``Emulator``
  with the same command line, environment (delays, sleep mode, fault injection), GPU resolution
  (``CUDA_VISIBLE_DEVICES`` over the container's devices) and a seat in the GPU ledger.

Every other image (the controller, ``nvidia-smi`` utility pods) still runs as a process, through
the :class:`~dpsim.kubelet.runtime.ProcessRuntime` this runtime wraps.

A hollow container behaves as its process would, as far as anyone outside can tell:

- it serves at the pod's IP on its ports, through :class:`~.hollownet.HollowListeners`, so
  probes, the controller and tests reach it over TCP as before;
- a start the process would not survive (a bad flag or variable, no GPU, a port conflict, CUDA
  out of memory) is an exit with that process's exit code and its log line;
- it writes the program's log lines to the container's CRI log file (``kubectl logs``);
- ``stop(grace)`` is SIGTERM: it stops accepting, lets requests in flight finish (the program's
  2 s shutdown timeout), gives its GPUs back and exits 0; ``kill()`` is SIGKILL: its connections
  are reset at once and it exits 137 (its GPUs are still given back, as a dead process's are);
- ``exec`` (exec probes) runs a process in the container's environment, as for a process.

GPU discovery in a hollow stub reads what the ``nvidia-smi`` shim would print, without starting
the shim, then ``NVIDIA_VISIBLE_DEVICES``, the order of the process's sources on a simulated node;
memory in use likewise, from this runtime's ledger. The relayed server log (set-log) goes to the
container's CRI log as stdout, where the process's stdout would go.

The servers run on an event loop of their own, in a thread of the kubelet (:class:`ServerLoop`),
as a container's process runs beside the kubelet: when the kubelet is busy starting a thousand
Pods, a stub still answers the controller in milliseconds, not after the kubelet's backlog.
Starting, stopping and exits cross between the two loops; nothing else is shared but the ledger
(which locks).

The ledger is this process's :class:`InProcessLedger` (``memory``, the default) or the cluster's
sqlite file (``sqlite``, shared with process containers and read by tests). Holders are
``Holder.from_env`` of the container, so the kubelet's pid: in the sqlite file their holds die
with the kubelet, as those of processes die with them.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import logging
import signal
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from aiohttp import web

from dpctl.api import (
    LISTEN_HOST_ENV,
)
from dpctl.faults import Faults
from dpctl.gpuenv import NVIDIA_VISIBLE_DEVICES_ENV, SIM_NODE_ENV
from dpctl.stub.discovery import (
    NVIDIA_SMI_COMMAND,
    FirstSuccess,
    VisibleDevicesDiscovery,
    _parse_nvidia_smi,
)
from dpctl.stub.main import EXIT_BIND_FAILED as EXIT_STUB_BIND_FAILED
from dpctl.stub.main import EXIT_USAGE, stub_ports
from dpctl.stub.memory import NVIDIA_SMI_MEMORY_COMMAND, parse_nvidia_smi_memory
from dpctl.stub.server import StubState, make_probes_app, make_spi_app
from dpctl.stub.serving import start_runner
from dpsim import nvidiasmi
from dpsim.emulator.args import USAGE, ServeArgsError, parse_serve_args
from dpsim.emulator.devices import DeviceError, GpuSeat, resolve_cuda_devices
from dpsim.emulator.gputable import GpuTable, load_gpu_table
from dpsim.emulator.ledger import Footprint, GpuLedger, Hold, Holder, Ledger, MemoryLedger
from dpsim.emulator.main import EXIT_BIND_FAILED as EXIT_EMULATOR_BIND_FAILED
from dpsim.emulator.main import EXIT_GPU_FAILED
from dpsim.emulator.server import EMULATED_VLLM_VERSION, Emulator, EmulatorConfig, make_emulator_app
from dpsim.kubelet.hollownet import HollowListeners, ListenMode
from dpsim.kubelet.logfiles import MAX_ENTRY, CriLogWriter
from dpsim.kubelet.runtime import (
    ContainerHandle,
    ContainerRuntime,
    Exit,
    ExitCallback,
    Launch,
    ProcessRuntime,
    exec_in,
)
from dpsim.simenv import ledger_path, state_dir

LedgerMode = Literal["memory", "sqlite"]
LEDGER_MODES: Final[tuple[LedgerMode, ...]] = ("memory", "sqlite")
HollowKind = Literal["requester", "vllm-emulator"]
_T = TypeVar("_T")

_KILLED: Final = 128 + signal.SIGKILL

_STUB_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_VLLM_FORMAT: Final = "%(levelname)s %(asctime)s [%(module)s.py:%(lineno)d] %(message)s"
_ANY_HOST: Final = frozenset({"", "0.0.0.0", "::"})


def hollow_kind(argv: Sequence[str]) -> HollowKind | None:
    """Which program a launch runs, when it is one this runtime hosts (see ``images``)."""
    words = tuple(argv[1:5])
    if words[:3] == ("-m", "dpctl", "requester"):
        return "requester"
    if words == ("-m", "dpctl", "vllm-emulator", "serve"):
        return "vllm-emulator"
    return None


class InProcessLedger(MemoryLedger):
    """The ledger of servers that all live in this process: a holder holds until it exits.

    Every holder has the kubelet's pid, so the per-holder liveness check of :class:`MemoryLedger`
    (two system calls per hold, on every call) says nothing here; hollow containers give their
    GPUs back explicitly, also when killed.
    """

    def _live(self) -> list[Hold]:
        return list(self._holds.values())


class _CriLogHandler(logging.Handler):
    """A container's log lines, into its CRI log file (opened per line: lines are few)."""

    def __init__(self, path: Path, fmt: str, datefmt: str | None = None) -> None:
        super().__init__(logging.INFO)
        self.path = path
        self.setFormatter(logging.Formatter(fmt, datefmt))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            writer = CriLogWriter(self.path)
            try:
                writer.write("stderr", (self.format(record) + "\n").encode())
            finally:
                writer.close()
        except Exception:
            self.handleError(record)


def _container_logger(name: str, launch: Launch, fmt: str, datefmt: str | None = None) -> logging.Logger:
    # Not from logging.getLogger: that registry keeps every logger forever.
    logger = logging.Logger(name, logging.INFO)
    logger.propagate = False
    logger.addHandler(_CriLogHandler(launch.log_path, fmt, datefmt))
    return logger


class _SimNvidiaSmi:
    """What the container's ``nvidia-smi`` shim would print, computed here instead of in a process,
    with memory in use from this runtime's ledger (which the shim could not see in ``memory`` mode)."""

    def __init__(self, env: Mapping[str, str], ledger: GpuLedger) -> None:
        self.env = env
        self.ledger = ledger

    def _run(self, command: Sequence[str]) -> tuple[int, str, str]:
        parser = argparse.ArgumentParser(prog="nvidia-smi")
        nvidiasmi.add_arguments(parser)
        out, err = io.StringIO(), io.StringIO()
        code = nvidiasmi.report(parser.parse_args(list(command[1:])), self.env, out, err, self.ledger)
        return code, out.getvalue(), err.getvalue()

    async def discover(self) -> list[str]:
        return _parse_nvidia_smi(*self._run(NVIDIA_SMI_COMMAND))

    async def memory_used_mib(self) -> dict[str, int]:
        # In a worker thread: the sqlite ledger may wait for its lock.
        return parse_nvidia_smi_memory(*await asyncio.to_thread(self._run, NVIDIA_SMI_MEMORY_COMMAND))


class _CriStdout:
    """The stub's stdout (where it appends the relayed server log) in the container's CRI log.

    The file is opened per write (thousands of stubs must not hold a descriptor each); a last
    line without its newline waits here for the rest, at most one CRI entry of it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._rest = b""

    def __call__(self, data: bytes) -> None:
        buf = self._rest + data
        cut = buf.rfind(b"\n") + 1
        if len(buf) - cut > MAX_ENTRY:
            cut = len(buf)
        self._rest = buf[cut:]
        if cut:
            writer = CriLogWriter(self.path)
            try:
                writer.write("stdout", buf[:cut])
            finally:
                writer.close()


@dataclass
class _Serving:
    """What a running hollow container holds, in the order it was taken."""

    listeners: list[tuple[str, int]] = field(default_factory=list)
    runners: list[web.AppRunner] = field(default_factory=list)
    emulator: Emulator | None = None


class HollowHandle:
    """One hollow container instance (implements :class:`~.runtime.ContainerHandle`)."""

    def __init__(
        self, launch: Launch, net: HollowListeners, log: logging.Logger, on_exit: ExitCallback
    ) -> None:
        self._launch = launch
        self._net = net
        self._log = log
        self._on_exit = on_exit
        self._serving = _Serving()
        self._exit: Exit | None = None
        self._done = asyncio.Event()
        self._ending: asyncio.Task[None] | None = None
        self._killed = False

    @property
    def container_id(self) -> str:
        return self._launch.container_id

    def status(self) -> Exit | None:
        return self._exit

    async def stop(self, grace: float) -> Exit:
        if self._exit is None:
            self._begin_end()
            try:
                async with asyncio.timeout(max(grace, 0.0)):
                    await self._done.wait()
            except TimeoutError:
                self.kill()
        await self._done.wait()
        assert self._exit is not None
        return self._exit

    def kill(self) -> None:
        if self._exit is not None or self._killed:
            return
        self._killed = True
        for host, port in self._serving.listeners:
            self._net.abort(host, port)
        self._begin_end()

    async def exec_sync(self, argv: list[str], timeout: float) -> int:
        return await exec_in(self._launch, argv, timeout)

    # -- life -------------------------------------------------------------------------------

    async def serve(self, host: str, port: int, app: web.Application) -> None:
        """Set the app up and serve it at ``host:port``; OSError when the address is taken."""
        runner = await start_runner(app)
        self._serving.runners.append(runner)
        server = runner.server
        assert server is not None  # set up by start_runner
        await self._net.register(host, port, server)
        self._serving.listeners.append((host, port))

    def own(self, emulator: Emulator) -> None:
        """The emulator whose GPUs go back when this container ends."""
        self._serving.emulator = emulator

    def exited(self, code: int, why: str = "") -> HollowHandle:
        """The program ended by itself before it served (its process would have exited)."""
        if why:
            self._log.error("%s", why)
        self._begin_end(code)
        return self

    def _begin_end(self, code: int = 0) -> None:
        if self._ending is None:
            self._ending = asyncio.get_running_loop().create_task(
                self._end(code), name=f"hollow-end-{self.container_id[-12:]}"
            )

    async def _end(self, code: int) -> None:
        serving = self._serving
        try:
            for host, port in serving.listeners:
                self._net.unregister(host, port)
            for runner in reversed(serving.runners):
                try:
                    await runner.cleanup()
                except Exception:
                    self._log.exception("Shutting down a server failed")
            if serving.emulator is not None:
                await serving.emulator.release_gpus()
            if not self._killed and serving.runners:
                self._log.info("Application shutdown complete.")
        finally:
            now = dt.datetime.now(dt.UTC)
            self._exit = Exit(_KILLED, now, signal.SIGKILL) if self._killed else Exit(code, now)
            self._done.set()
            self._on_exit(self._exit)


class ServerLoop:
    """An event loop in a daemon thread of its own, where hollow servers run."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="hollow-servers", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    async def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on the server loop; await its result from the caller's loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def call(self, fn: Callable[[], None]) -> None:
        self.loop.call_soon_threadsafe(fn)

    def close(self) -> None:
        """Stop the loop (everything on it must have ended) and wait for its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


class _OnServerLoop:
    """The kubelet's side of a :class:`HollowHandle` that lives on a :class:`ServerLoop`."""

    def __init__(self, handle: HollowHandle, servers: ServerLoop) -> None:
        self._handle = handle
        self._servers = servers

    @property
    def container_id(self) -> str:
        return self._handle.container_id

    def status(self) -> Exit | None:
        return self._handle.status()

    async def stop(self, grace: float) -> Exit:
        return await self._servers.run(self._handle.stop(grace))

    def kill(self) -> None:
        self._servers.call(self._handle.kill)

    async def exec_sync(self, argv: list[str], timeout: float) -> int:
        return await self._handle.exec_sync(argv, timeout)  # a process, started from the caller's loop


class HollowRuntime:
    """Hosts requester stubs and vLLM emulators in-process; everything else as processes.

    ``own_loop`` (the default) runs the servers on a :class:`ServerLoop`; without it they share
    the caller's loop (simpler to reason about in tests of the servers themselves).
    """

    def __init__(
        self,
        state: Path,
        listen: ListenMode = "pod",
        ledger: LedgerMode = "memory",
        processes: ContainerRuntime | None = None,
        own_loop: bool = True,
    ) -> None:
        if ledger not in LEDGER_MODES:
            raise ValueError(f"ledger must be one of {', '.join(LEDGER_MODES)}, not {ledger!r}")
        self.net = HollowListeners(listen)
        self.ledger: GpuLedger = InProcessLedger() if ledger == "memory" else Ledger(ledger_path(state))
        self._processes: ContainerRuntime = processes or ProcessRuntime()
        self._servers = ServerLoop() if own_loop else None
        self._handles: dict[str, HollowHandle] = {}
        self._tables: dict[tuple[Path, str], GpuTable] = {}

    async def start(self, launch: Launch, on_exit: ExitCallback) -> ContainerHandle:
        kind = hollow_kind(launch.argv)
        if kind is None:
            return await self._processes.start(launch, on_exit)
        if self._servers is None:
            return await self._start(kind, launch, on_exit)
        caller = asyncio.get_running_loop()

        def exited(exit_: Exit) -> None:
            caller.call_soon_threadsafe(on_exit, exit_)

        handle = await self._servers.run(self._start(kind, launch, exited))
        return _OnServerLoop(handle, self._servers)

    async def _start(self, kind: HollowKind, launch: Launch, on_exit: ExitCallback) -> HollowHandle:
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "requester":
            log = _container_logger("dpctl.requester", launch, _STUB_FORMAT)
        else:
            log = _container_logger(
                "vllm.entrypoints.openai.api_server", launch, _VLLM_FORMAT, "%m-%d %H:%M:%S"
            )

        def finished(exit_: Exit) -> None:
            self._handles.pop(launch.container_id, None)
            on_exit(exit_)

        handle = HollowHandle(launch, self.net, log, finished)
        self._handles[launch.container_id] = handle
        if kind == "requester":
            return await self._start_stub(handle, launch, log)
        return await self._start_emulator(handle, launch, log)

    def running(self) -> int:
        """Container instances alive, hollow or processes."""
        processes = self._processes.running() if isinstance(self._processes, ProcessRuntime) else 0
        return len(self._handles) + processes

    def hollow(self) -> int:
        return len(self._handles)

    async def shutdown(self, grace: float) -> None:
        if self._servers is None:
            await self._stop_servers(grace)
        else:
            await self._servers.run(self._stop_servers(grace))
            self._servers.close()
        await self._processes.shutdown(grace)

    async def _stop_servers(self, grace: float) -> None:
        handles = list(self._handles.values())
        if handles:
            await asyncio.gather(*(h.stop(grace) for h in handles), return_exceptions=True)
        await self.net.close()

    # -- the two programs ---------------------------------------------------------------------

    async def _start_stub(self, handle: HollowHandle, launch: Launch, log: logging.Logger) -> HollowHandle:
        env = launch.env
        try:
            probes_port, spi_port = stub_ports(env)
            faults = Faults.from_env(env)
        except ValueError as e:
            return handle.exited(EXIT_USAGE, str(e))
        host = self._host(env, "")
        state = StubState()
        nvidia_smi = _SimNvidiaSmi(env, self.ledger)
        discovery = FirstSuccess(
            [("nvidia-smi", nvidia_smi), (NVIDIA_VISIBLE_DEVICES_ENV, VisibleDevicesDiscovery(env))]
        )
        spi = make_spi_app(state, discovery, faults, memory=nvidia_smi, log_sink=_CriStdout(launch.log_path))
        apps = (("probes", make_probes_app(state, faults), probes_port), ("spi", spi, spi_port))
        for listener, app, port in apps:
            try:
                await handle.serve(host, port, app)
            except OSError as e:
                why = f"cannot listen for {listener} on {host}:{port}: {e.strerror or e}"
                return handle.exited(EXIT_STUB_BIND_FAILED[listener], why)
        log.info(
            "Requester stub started: probes on %s, SPI on %s (hollow, in the simulated kubelet)",
            f"{host}:{probes_port}",
            f"{host}:{spi_port}",
        )
        return handle

    async def _start_emulator(
        self, handle: HollowHandle, launch: Launch, log: logging.Logger
    ) -> HollowHandle:
        env = launch.env
        try:
            serve = parse_serve_args(list(launch.argv[5:]))
        except ServeArgsError as e:
            return handle.exited(EXIT_USAGE, f"{USAGE}\nvllm serve: error: {e}")
        if serve.help:
            log.info("%s", USAGE)
            return handle.exited(0)
        try:
            config = EmulatorConfig.from_env(serve, env)
            faults = Faults.from_env(env)
        except ValueError as e:
            return handle.exited(EXIT_USAGE, str(e))
        log.info("vLLM API server version %s (dpctl emulator, hollow)", EMULATED_VLLM_VERSION)
        log.info("args: model=%s port=%d sleep_mode=%s", serve.model, serve.port, serve.enable_sleep_mode)
        try:
            seat = self._seat(env, config, log=log)
        except DeviceError as e:
            return handle.exited(EXIT_GPU_FAILED, str(e))
        emulator = Emulator(config, seat, log)
        handle.own(emulator)
        if not await emulator.take_gpus():
            return handle.exited(EXIT_GPU_FAILED)
        host = self._host(env, serve.host or "")
        try:
            await handle.serve(host, serve.port, make_emulator_app(emulator, faults))
        except OSError as e:
            why = (
                f"[Errno {e.errno}] error while attempting to bind on address ({host!r}, {serve.port}):"
                f" {e.strerror}"
            )
            return handle.exited(EXIT_EMULATOR_BIND_FAILED, why)
        log.info("Starting vLLM API server 0 on http://%s:%d", host, serve.port)
        log.info("Waiting for application startup.")
        return handle

    def _seat(self, env: Mapping[str, str], config: EmulatorConfig, *, log: logging.Logger) -> GpuSeat | None:
        """As ``placement_from_env``, with this runtime's ledger and cached GPU tables."""
        state = state_dir(env)
        if state is None:
            return None
        node = env.get(SIM_NODE_ENV)
        if not node:
            raise DeviceError(f"the simulated kubelet did not say which node ({SIM_NODE_ENV}) this runs on")
        table = self._tables.get((state, node))
        if table is None:
            try:
                table = self._tables[(state, node)] = load_gpu_table(state, node)
            except (OSError, ValueError) as e:
                raise DeviceError(f"cannot read the GPU table of node {node}: {e}") from e
        devices = resolve_cuda_devices(table, env)
        for warning in devices.warnings:
            log.warning("%s", warning)
        seat = GpuSeat(
            self.ledger,
            Holder.from_env(env),
            tuple(g.uuid for g in devices.gpus),
            config.oom_on_conflict,
            Footprint.of(table.memory_mib, config.args.gpu_memory_utilization),
            config.memory_release_delay_s,
        )
        log.info("Loading the model onto GPUs %s as %s", ", ".join(seat.gpus), seat.holder)
        return seat

    @staticmethod
    def _host(env: Mapping[str, str], asked: str) -> str:
        # In a container, "every address" is the pod's own address.
        pod_ip = env.get(LISTEN_HOST_ENV) or "127.0.0.1"
        return pod_ip if asked in _ANY_HOST else asked
