"""No orphans, without Kubernetes: children die with their parent (PDEATHSIG) even when it is
SIGKILLed, survive the thread that started them, and stop (TERM, deadline, KILL) with their group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dpsim.localcluster import procs
from helpers import wait_for

REPO = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")


def gone(pid: int) -> bool:
    return procs.proc_start_ticks(pid) is None


def test_child_dies_when_its_parent_is_sigkilled(tmp_path: Path) -> None:
    code = (
        "from pathlib import Path; from dpsim.localcluster.procs import Child\n"
        f"c = Child('sleeper', ['sleep', '600'], log_path=Path({str(tmp_path)!r}) / 'l', "
        f"pid_dir=Path({str(tmp_path)!r}) / 'pids')\n"
        "print(c.pid, flush=True)\n"
        "input()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert not gone(child_pid)
        rec = procs.read_pid(tmp_path / "pids", "sleeper")
        assert rec is not None and rec.pid == child_pid and rec.alive()
        parent.kill()  # no finally, no atexit: only the kernel can clean up now
        parent.wait(10)
        wait_for(lambda: gone(child_pid), 10, f"child {child_pid} to die with its parent")
        assert not rec.alive()
    finally:
        parent.kill()
        parent.wait(10)


def test_child_outlives_the_thread_that_started_it(tmp_path: Path) -> None:
    """PDEATHSIG is per thread; the spawner thread keeps a child started from a dying thread alive."""
    box: list[procs.Child] = []
    t = threading.Thread(
        target=lambda: box.append(
            procs.Child("sleeper", ["sleep", "600"], log_path=tmp_path / "l", pid_dir=tmp_path / "pids")
        )
    )
    t.start()
    t.join(10)
    child = box[0]
    try:
        # Give a wrongly delivered SIGKILL time to land: the thread is gone; the child must run on.
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            assert child.running()
            time.sleep(0.05)
    finally:
        procs.stop_children([child], 5)
    assert not child.running()


def test_stop_escalates_to_sigkill_and_takes_the_group(tmp_path: Path) -> None:
    # A shell that ignores SIGTERM (inherited by its sleep) and reports its grandchild's pid.
    script = "trap '' TERM; sleep 600 & echo $! > grandchild; wait"
    child = procs.Child(
        "stubborn", ["sh", "-c", script], log_path=tmp_path / "l", pid_dir=tmp_path / "pids", cwd=tmp_path
    )
    grandchild = int(wait_for(lambda: (tmp_path / "grandchild").read_text().strip(), 10, "grandchild pid"))
    began = time.monotonic()
    procs.stop_children([child], 1.0)
    assert time.monotonic() - began >= 1.0  # it waited for the SIGTERM deadline
    assert child.popen.returncode == -signal.SIGKILL
    wait_for(lambda: gone(grandchild), 10, "grandchild killed with the group")
    assert procs.read_pid(tmp_path / "pids", "stubborn") is None


def test_stop_records_of_processes_that_are_not_our_children(tmp_path: Path) -> None:
    # Double fork: the sleeper is reparented away from us, as after a supervisor crash.
    out = subprocess.run(
        ["sh", "-c", "setsid sleep 600 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True, check=True
    )
    pid = int(out.stdout)
    rec = procs.record_pid(tmp_path, "orphan", pid)
    assert rec is not None and rec.alive()
    assert procs.read_pids(tmp_path) == [rec]
    assert procs.stop_records([rec], 5.0) == ["orphan"]
    assert not rec.alive()


def test_a_recycled_pid_is_not_ours() -> None:
    me = procs.PidRecord("me", os.getpid(), procs.proc_start_ticks(os.getpid()) or 0)
    assert me.alive()
    assert not procs.PidRecord("impostor", os.getpid(), me.start_ticks + 1).alive()
    assert procs.stop_records([procs.PidRecord("impostor", os.getpid(), me.start_ticks + 1)], 1.0) == []


def test_poll_until_reports_what_and_last_state() -> None:
    with pytest.raises(procs.WaitTimeout, match=r"waiting for the moon: still new"):
        procs.poll_until(lambda: None, 0.2, "the moon", describe=lambda: "still new")
    assert procs.poll_until(lambda: 42, 1.0, "an answer") == 42
