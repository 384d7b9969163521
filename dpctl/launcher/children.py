"""The instances' processes: start one, learn of its exit without polling, stop it.

Each child runs in its own process group (a signal to the launcher's group must not reach the
vLLM servers, and a stop must reach the whole server, EngineCore included), with no descriptor
inherited from the launcher but stdin (``/dev/null``), and stdout and stderr appended to its log
file. A leaked copy of the launcher's sockets would keep client connections open after the
launcher closed them (upstream #550).

Exit detection uses a pidfd on the event loop: readable once the child has exited, so nothing
polls. A stop is SIGTERM to the child, then, after the grace period, SIGKILL to its group.

Two programs: :class:`CommandProgram` execs a command line with the instance's options appended
(the vLLM emulator in the local cluster, or ``vllm serve``); :class:`VllmProgram` imports vLLM
once in the launcher and forks each instance from it, so an instance skips the imports.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import stat
import subprocess
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Child(Protocol):
    pid: int

    def reap(self) -> int:
        """The exit code (negative: the signal that ended it); call once the child has exited."""
        ...


class Program(Protocol):
    def start(self, argv: Sequence[str], env: Mapping[str, str], log_fd: int) -> Child:
        """Start an instance with these `vllm serve` arguments; raises OSError."""
        ...


class _PopenChild:
    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        # Kept referenced: a Popen collected while running is reaped behind our back by the
        # next Popen's clean-up, and the pidfd's waiter would lose the exit code.
        self._popen = popen
        self.pid = popen.pid

    def reap(self) -> int:
        return self._popen.wait()


class CommandProgram:
    def __init__(self, command: Sequence[str]) -> None:
        if not command:
            raise ValueError("the instance command is empty")
        self.command = tuple(command)

    def start(self, argv: Sequence[str], env: Mapping[str, str], log_fd: int) -> Child:
        popen = subprocess.Popen(
            [*self.command, *argv],
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=subprocess.STDOUT,
            env=dict(env),
            close_fds=True,
            process_group=0,
        )
        return _PopenChild(popen)


class _ForkedChild:
    def __init__(self, pid: int) -> None:
        self.pid = pid

    def reap(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)


class VllmProgram:
    """vLLM's OpenAI server in a forked child, its options parsed by vLLM's own CLI parser."""

    def __init__(self) -> None:
        # The slow part, once: each fork inherits the imported modules.
        self._server = importlib.import_module("vllm.entrypoints.openai.api_server")
        self._cli_args = importlib.import_module("vllm.entrypoints.openai.cli_args")
        self._parser_class: Any = _first_attribute(
            ("vllm.utils.argparse_utils", "vllm.utils"), "FlexibleArgumentParser"
        )
        self._uvloop = importlib.import_module("uvloop")

    def start(self, argv: Sequence[str], env: Mapping[str, str], log_fd: int) -> Child:
        pid = os.fork()
        if pid == 0:  # the child: never returns
            self._child(argv, env, log_fd)
        return _ForkedChild(pid)

    def _child(self, argv: Sequence[str], env: Mapping[str, str], log_fd: int) -> None:
        code = 1
        try:
            os.setpgrp()
            # The launcher's signal handling came with the fork: its handlers only poke the
            # launcher's event loop, which this process does not run, so SIGTERM would be lost.
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            _close_inherited_sockets()
            os.environ.clear()
            os.environ.update(env)
            parser = self._cli_args.make_arg_parser(self._parser_class(description="vLLM OpenAI server"))
            args = parser.parse_args(list(argv))
            self._cli_args.validate_parsed_serve_args(args)
            self._uvloop.run(self._server.run_server(args))
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


def _first_attribute(modules: Sequence[str], name: str) -> Any:
    # vLLM has moved some helpers between releases.
    for module in modules:
        with contextlib.suppress(ImportError, AttributeError):
            return getattr(importlib.import_module(module), name)
    raise ImportError(f"vLLM has no {name} in {', '.join(modules)}")


def _close_inherited_sockets() -> None:
    """Close the launcher's sockets in a forked child; its pipes and files stay (vLLM may use them)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.fstat(fd).st_mode):
                    os.close(fd)


class ChildProcess:
    """A started child on the running event loop; ``exited`` resolves to its exit code."""

    def __init__(self, child: Child, on_exit: Callable[[int], None]) -> None:
        self.pid = child.pid
        self._child = child
        self._on_exit = on_exit
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[int] = loop.create_future()
        self._pidfd = os.pidfd_open(child.pid)
        loop.add_reader(self._pidfd, self._reap)

    def _reap(self) -> None:
        asyncio.get_running_loop().remove_reader(self._pidfd)
        os.close(self._pidfd)
        code = self._child.reap()
        self.exited.set_result(code)
        self._on_exit(code)

    async def stop(self, grace_s: float) -> int:
        """SIGTERM, then SIGKILL to the whole group if it still runs after ``grace_s``; the exit code."""
        if not self.exited.done():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self.exited), grace_s)
            except TimeoutError:
                log.warning(
                    "Instance process %d still running %g s after SIGTERM; killing its group",
                    self.pid,
                    grace_s,
                )
                # Not yet reaped, so the group id is still this child's.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
        return await asyncio.shield(self.exited)


def start_child(
    program: Program,
    argv: Sequence[str],
    env: Mapping[str, str],
    log_path: Path,
    on_exit: Callable[[int], None],
) -> ChildProcess:
    """Start ``program`` appending its output to ``log_path``; raises OSError."""
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        child = program.start(argv, env, log_fd)
    finally:
        os.close(log_fd)
    return ChildProcess(child, on_exit)
