"""The container runtime: how a container instance starts, stops and reports its end.

:class:`ContainerRuntime` is the interface the pod sync loop uses (``start``, and on the handle
``status``, ``stop(grace)``, ``kill``), so the "hollow" runtime (``hollow``) can serve thousands
of pods in-process instead of processes. :class:`ProcessRuntime` runs each instance as a local process:

- its own process group, so stopping it reaches everything it started, and when its main process
  exits the rest of the group is killed, as a container's PID namespace would be; processes that
  left the group (a launcher's vLLM instances have groups of their own) are found by the
  :data:`CONTAINER_ENV` every process of the container inherits, and killed with it, as the
  runtime kills a container's whole cgroup;
- ``PR_SET_PDEATHSIG=SIGKILL``, so nothing outlives the kubelet, even a SIGKILLed one;
- stdin from /dev/null; stdout and stderr pumped into the CRI-format log file by the event loop
  (one entry per write, timestamped on arrival);
- a program name without a slash is looked up on the *container's* PATH (the nvidia-smi shim
  first); a program that cannot be executed fails to start like containerd's ``StartError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import shutil
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dpsim.kubelet.logfiles import CriLogWriter
from dpsim.localcluster.procs import _preexec
from dpsim.simenv import CONTAINER_ENV

_READ_CHUNK = 64 * 1024
# How long output still in the pipes may take to reach the log once the process has exited.
_DRAIN_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    """What a real runtime needs beyond a :class:`Launch`: the image and how to run it."""

    image: str
    command: tuple[str, ...]  # the pod's ``command``: replaces the image's entrypoint (and cmd)
    args: tuple[str, ...]  # the pod's ``args``: replace the image's cmd
    hostname: str
    working_dir: str | None = None
    user: str | None = None  # uid[:gid] from the securityContext; the image's USER when unset
    read_only_root: bool = False
    drop_all_caps: bool = False
    no_new_privileges: bool = False
    mounts: tuple[Mount, ...] = ()


@dataclass(frozen=True)
class Launch:
    container_id: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: Path
    log_path: Path
    # Set for an image that runs as a real container (``podman``); the process runtime uses argv.
    container: ContainerSpec | None = None


@dataclass(frozen=True)
class Exit:
    exit_code: int
    finished_at: dt.datetime
    signal: int | None = None


class StartFailed(RuntimeError):
    """The instance could not be started; the message reads like the runtime's."""


class ContainerHandle(Protocol):
    @property
    def container_id(self) -> str: ...

    def status(self) -> Exit | None:
        """None while running, else how it ended."""
        ...

    async def stop(self, grace: float) -> Exit:
        """SIGTERM, up to ``grace`` seconds, then SIGKILL; returns how it ended."""
        ...

    def kill(self) -> None:
        """SIGKILL now, without waiting (a machine dying)."""
        ...

    async def exec_sync(self, argv: list[str], timeout: float) -> int:
        """Run a command "in" the container (its environment and directory); its exit code, or
        -1 when it did not finish in time. Raises OSError when it cannot run."""
        ...


ExitCallback = Callable[[Exit], None]


class ContainerRuntime(Protocol):
    async def start(self, launch: Launch, on_exit: ExitCallback) -> ContainerHandle:
        """Start an instance; ``on_exit`` (sync, quick) is called once when it has ended.
        Raises :class:`StartFailed`."""
        ...

    async def shutdown(self, grace: float) -> None:
        """Stop every instance (the kubelet is exiting)."""
        ...


def _exit_of(returncode: int) -> Exit:
    now = dt.datetime.now(dt.UTC)
    if returncode < 0:
        return Exit(128 - returncode, now, -returncode)
    return Exit(returncode, now)


async def exec_in(launch: Launch, argv: list[str], timeout: float) -> int:
    """Run a command "in" a container: its environment and directory, a process group of its own.
    Its exit code, or -1 when it did not finish in time; OSError when it cannot run."""
    env = launch.env
    program = shutil.which(argv[0], path=env.get("PATH", "")) if "/" not in argv[0] else argv[0]
    if program is None:
        raise FileNotFoundError(argv[0])
    proc = await asyncio.create_subprocess_exec(
        program,
        *argv[1:],
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=launch.cwd,
        env=dict(env),
        process_group=0,
        preexec_fn=_preexec(os.getpid()),
    )
    try:
        async with asyncio.timeout(timeout):
            return await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        return -1


class _ProcessHandle:
    def __init__(self, launch: Launch, proc: asyncio.subprocess.Process, log: CriLogWriter) -> None:
        self._launch = launch
        self._id = launch.container_id
        self._proc = proc
        self._log = log
        self._exit: Exit | None = None
        self._done = asyncio.Event()

    @property
    def container_id(self) -> str:
        return self._id

    @property
    def pid(self) -> int:
        return self._proc.pid

    def status(self) -> Exit | None:
        return self._exit

    async def stop(self, grace: float) -> Exit:
        if self._exit is None:
            self._signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(max(grace, 0.0)):
                    await self._done.wait()
            except TimeoutError:
                self._signal(signal.SIGKILL)
        await self._done.wait()
        assert self._exit is not None
        return self._exit

    def kill(self) -> None:
        if self._exit is None:
            self._signal(signal.SIGKILL)

    async def exec_sync(self, argv: list[str], timeout: float) -> int:
        return await exec_in(self._launch, argv, timeout)

    def _signal(self, sig: signal.Signals) -> None:
        # Until the leader is reaped its pid is the group's id and cannot be reused.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    async def supervise(self, on_exit: ExitCallback) -> None:
        assert self._proc.stdout is not None and self._proc.stderr is not None
        pumps = [
            asyncio.create_task(self._pump("stdout", self._proc.stdout)),
            asyncio.create_task(self._pump("stderr", self._proc.stderr)),
        ]
        try:
            await self._main_process_exited()
            # The container is its main process: whatever it left behind goes with it. That also
            # closes the pipes it held, which Process.wait() waits for.
            self._signal(signal.SIGKILL)
            await asyncio.to_thread(kill_marked, CONTAINER_ENV, self._id)
            returncode = await self._proc.wait()
            _, pending = await asyncio.wait(pumps, timeout=_DRAIN_TIMEOUT_S)
            for p in pending:
                p.cancel()
            self._exit = _exit_of(returncode)
        finally:
            for p in pumps:
                p.cancel()
            self._log.close()
            if self._exit is None:  # cancelled (kubelet shutting down): make sure it is gone
                self._signal(signal.SIGKILL)
                self._exit = _exit_of(-signal.SIGKILL)
            self._done.set()
        on_exit(self._exit)

    async def _main_process_exited(self) -> None:
        """Wait for the main process alone: ``Process.wait()`` also waits until every holder of its
        pipes has gone, which a process left running in the background never does."""
        try:
            fd = os.pidfd_open(self._proc.pid)
        except ProcessLookupError:
            return  # already gone and reaped
        except OSError:
            # No pidfd (Linux < 5.3): fall back to waiting for the pipes too.
            await self._proc.wait()
            return
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()

        def on_readable() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(fd, on_readable)
        try:
            await readable
        finally:
            loop.remove_reader(fd)
            os.close(fd)

    async def _pump(self, stream: str, reader: asyncio.StreamReader) -> None:
        while chunk := await reader.read(_READ_CHUNK):
            self._log.write(stream, chunk)
        self._log.flush_stream(stream)


def reap_orphans(state_dir: Path, marker: str = "DPCTL_SIM_STATE") -> list[int]:
    """SIGKILL processes a previous kubelet of ``state_dir`` left behind; returns their pids.

    PR_SET_PDEATHSIG reaches a container's main process only; something it started in the
    background outlives a SIGKILLed kubelet. Every container process, and whatever it starts,
    inherits ``DPCTL_SIM_STATE=<state dir>``, which identifies it beyond doubt (unlike a pid or
    process group id, which the kernel reuses).
    """
    return kill_marked(marker, str(state_dir))


def kill_marked(marker: str, value: str) -> list[int]:
    """SIGKILL every process whose environment has ``marker=value``; returns their pids. Reads
    /proc; only our own processes are readable."""
    wanted = f"{marker}={value}".encode()
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted in env:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    return killed


class ProcessRuntime:
    """Every container instance a local process (see the module docstring)."""

    def __init__(self) -> None:
        self._handles: dict[str, _ProcessHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, launch: Launch, on_exit: ExitCallback) -> ContainerHandle:
        program = launch.argv[0]
        if "/" not in program:
            found = shutil.which(program, path=launch.env.get("PATH", ""))
            if found is None:
                raise StartFailed(
                    f'failed to create containerd task: exec: "{program}": executable file not found in $PATH'
                )
            program = found
        launch.cwd.mkdir(parents=True, exist_ok=True)
        log = CriLogWriter(launch.log_path)
        try:
            proc = await asyncio.create_subprocess_exec(
                program,
                *launch.argv[1:],
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=launch.cwd,
                env={**launch.env, CONTAINER_ENV: launch.container_id},
                process_group=0,
                preexec_fn=_preexec(os.getpid()),
            )
        except OSError as e:
            log.note(f"failed to start {launch.argv[0]}: {e}")
            log.close()
            raise StartFailed(
                f"failed to create containerd task: exec: {launch.argv[0]!r}: {e.strerror or e}"
            ) from e
        handle = _ProcessHandle(launch, proc, log)
        self._handles[launch.container_id] = handle

        def finished(exit_: Exit) -> None:
            self._handles.pop(launch.container_id, None)
            on_exit(exit_)

        task = asyncio.get_running_loop().create_task(
            handle.supervise(finished), name=f"ctr-{launch.container_id[:12]}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return handle

    def running(self) -> int:
        return len(self._handles)

    async def shutdown(self, grace: float) -> None:
        handles = list(self._handles.values())
        if handles:
            await asyncio.gather(*(h.stop(grace) for h in handles), return_exceptions=True)
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
