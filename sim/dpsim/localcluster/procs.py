"""Child processes of the local cluster: how they start, how they stop, and how a crash is cleaned up.

Owns three guarantees, so that no component ever outlives whoever started it:

* every child gets ``PR_SET_PDEATHSIG=SIGKILL`` (Linux) and its own process group, so it dies with
  its parent even when the parent is SIGKILLed and never runs a ``finally``;
* every child's pid (and its kernel start time, so a recycled pid is never mistaken for it) is
  recorded under ``<state_dir>/pids/<name>``, so ``dpctl local-cluster down`` can clean up after a
  supervisor that crashed or was killed;
* stopping is SIGTERM to the process group, a deadline, then SIGKILL.

It also holds :func:`poll_until`, the one deadline-bounded polling loop the package uses.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

PR_SET_PDEATHSIG = 1


class WaitTimeout(TimeoutError):
    """A :func:`poll_until` deadline passed; the message says what was awaited and the last state."""


def poll_until(
    check: Callable[[], T | None],
    timeout: float,
    what: str,
    *,
    interval: float = 0.05,
    max_interval: float = 1.0,
    describe: Callable[[], str] | None = None,
) -> T:
    """Call ``check`` until it returns something other than None (returned) or ``timeout`` passes.

    The interval grows geometrically: fast first answers for things that are nearly ready, little
    CPU for things that take a while. ``check`` may raise to abort the wait (e.g. a process died).
    """
    deadline = time.monotonic() + timeout
    delay = interval
    while True:
        result = check()
        if result is not None:
            return result
        left = deadline - time.monotonic()
        if left <= 0:
            detail = f": {describe()}" if describe else ""
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(min(delay, left))
        delay = min(delay * 1.5, max_interval)


# --- spawning -------------------------------------------------------------------------------------


def _libc_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    # Resolved once, in the parent: a forked child must not load libraries before exec.
    fn: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    return fn


_PRCTL = _libc_prctl()


def _preexec(parent_pid: int) -> Callable[[], None]:
    def run() -> None:
        if _PRCTL is not None:
            _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died between fork and prctl; then no signal would ever come.
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return run


class _Spawner:
    """Forks every child from one daemon thread that lives as long as the process.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process. A caller
    in a short-lived thread (``asyncio.to_thread`` on a per-test event loop, whose executor is shut
    down with the loop) would see its cluster SIGKILLed when that thread ends. A daemon thread is
    never joined, so it ends only with the process, which is exactly the lifetime we want.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], subprocess.Popen[bytes]], Future[object]]] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while True:
            fn, fut = self._jobs.get()
            try:
                fut.set_result(fn())
            except BaseException as e:
                fut.set_exception(e)

    def run(self, fn: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="dpctl-spawner", daemon=True)
                self._thread.start()
        fut: Future[object] = Future()
        self._jobs.put((fn, fut))
        try:
            result = fut.result()
        except BaseException:
            # Interrupted (Ctrl-C) while the fork runs: nobody will own that child, so end it.
            fut.add_done_callback(_kill_unowned)
            raise
        assert isinstance(result, subprocess.Popen)
        return result


def _kill_unowned(fut: Future[object]) -> None:
    if fut.cancelled() or fut.exception() is not None:
        return
    proc = fut.result()
    if isinstance(proc, subprocess.Popen):
        proc.kill()
        proc.wait()


_SPAWNER = _Spawner()


def proc_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22).

    None when there is no such process or it is a zombie (dead, only waiting to be reaped).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) is in parentheses and may contain spaces and ')'; the rest follows the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    state, start = fields[0], fields[19]
    if state in ("Z", "X"):
        return None
    return int(start)


@dataclass(frozen=True)
class PidRecord:
    """A process we started: its pid plus its start time, which makes the pair unique across reuse."""

    name: str
    pid: int
    start_ticks: int

    def alive(self) -> bool:
        return proc_start_ticks(self.pid) == self.start_ticks


def record_pid(pid_dir: Path, name: str, pid: int) -> PidRecord | None:
    """Note ``pid`` as ``name`` under ``pid_dir``; None if it is already gone."""
    ticks = proc_start_ticks(pid)
    if ticks is None:
        return None
    pid_dir.mkdir(parents=True, exist_ok=True)
    tmp = pid_dir / f".{name}.tmp"
    tmp.write_text(f"{pid} {ticks}\n")
    os.replace(tmp, pid_dir / name)
    return PidRecord(name, pid, ticks)


def forget_pid(pid_dir: Path, name: str) -> None:
    (pid_dir / name).unlink(missing_ok=True)


def read_pid(pid_dir: Path, name: str) -> PidRecord | None:
    try:
        pid, ticks = (pid_dir / name).read_text().split()
        return PidRecord(name, int(pid), int(ticks))
    except (OSError, ValueError):
        return None


def read_pids(pid_dir: Path) -> list[PidRecord]:
    if not pid_dir.is_dir():
        return []
    records = (read_pid(pid_dir, p.name) for p in sorted(pid_dir.iterdir()) if not p.name.startswith("."))
    return [r for r in records if r is not None]


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group ``pid`` leads (our children lead their own), else the process."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop_records(records: Sequence[PidRecord], timeout: float) -> list[str]:
    """SIGTERM the recorded processes that are still the ones recorded, wait, then SIGKILL.

    For processes that are not our children (found in pid files after a crash), so liveness is
    polled through /proc rather than waited on. Returns the names of those that were running.
    """
    live = [r for r in records if r.alive()]
    for r in live:
        _signal_group(r.pid, signal.SIGTERM)
    try:
        poll_until(lambda: True if not any(r.alive() for r in live) else None, timeout, "processes to exit")
    except WaitTimeout:
        for r in live:
            if r.alive():
                _signal_group(r.pid, signal.SIGKILL)
        poll_until(
            lambda: True if not any(r.alive() for r in live) else None, 10.0, "SIGKILLed processes to exit"
        )
    return [r.name for r in live]


class Child:
    """One started component: its Popen, its log file and its pid record."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        pid_dir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.pid_dir = pid_dir
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # Appending keeps the previous run's log (and a restarted apiserver's first life) for post-mortems.
        with open(log_path, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} starting: {' '.join(argv)}\n".encode())
            log.flush()
            parent = os.getpid()
            self.popen = _SPAWNER.run(
                lambda: subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=dict(env) if env is not None else None,
                    cwd=cwd,
                    # Its own group: a signal to it (or Ctrl-C at a terminal) never hits the others.
                    process_group=0,
                    # Only a prctl and a getppid run between fork and exec, both async-signal-safe.
                    preexec_fn=_preexec(parent),  # noqa: PLW1509
                )
            )
        self.pid = self.popen.pid
        try:
            record_pid(pid_dir, name, self.pid)
        except BaseException:
            self.popen.kill()  # not recorded and not returned: it would have no owner
            self.popen.wait()
            raise

    def running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def exit_message(self) -> str:
        """What to tell a user whose component died: the exit status and the end of its log."""
        return (
            f"{self.name} exited with status {self.popen.returncode}; last log lines ({self.log_path}):\n"
            + (self.log_tail())
        )

    def signal(self, sig: signal.Signals) -> None:
        if self.running():
            _kill_group(self.pid, sig)


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    # The kernel never hands out a pid that is still some group's id, so this cannot hit a stranger.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def stop_children(children: Sequence[Child], timeout: float) -> None:
    """SIGTERM all of ``children`` at once, wait up to ``timeout``, SIGKILL the rest, reap them all."""
    for c in children:
        c.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for c in children:
        try:
            c.popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            c.signal(signal.SIGKILL)
            c.popen.wait(10.0)
        # The group may hold helpers the component forked; they go with it.
        _kill_group(c.pid, signal.SIGKILL)
        forget_pid(c.pid_dir, c.name)
