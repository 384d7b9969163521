"""The process runtime: exits, logs, graceful and forced stops, process groups, and no orphans ever."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from dpsim.kubelet.logfiles import parse_entries
from dpsim.kubelet.runtime import Exit, Launch, ProcessRuntime, StartFailed, reap_orphans
from helpers import async_wait_for, wait_for


def launch(tmp_path: Path, *argv: str, name: str = "c") -> Launch:
    return Launch(f"id-{name}", argv, {"PATH": os.environ["PATH"]}, tmp_path, tmp_path / f"{name}.log")


def alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


async def test_exit_code_and_both_streams_reach_the_log(tmp_path: Path) -> None:
    rt = ProcessRuntime()
    exits: list[Exit] = []
    handle = await rt.start(launch(tmp_path, "sh", "-c", "echo out; echo err >&2; exit 3"), exits.append)
    await async_wait_for(lambda: exits, 10, "the exit")
    assert exits[0].exit_code == 3
    assert handle.status() == exits[0]
    entries = parse_entries((tmp_path / "c.log").read_bytes())
    assert sorted((e.stream, e.content) for e in entries) == [("stderr", b"err"), ("stdout", b"out")]
    assert rt.running() == 0


async def test_stop_is_sigterm_then_sigkill_for_the_whole_group(tmp_path: Path) -> None:
    rt = ProcessRuntime()
    polite = await rt.start(launch(tmp_path, "sleep", "30", name="polite"), lambda _: None)
    script = f"trap '' TERM; sleep 30 & echo $! > {tmp_path}/child; wait"
    stubborn = await rt.start(launch(tmp_path, "sh", "-c", script, name="stubborn"), lambda _: None)
    child = int(wait_for(lambda: (tmp_path / "child").read_text().strip(), 10, "the child's pid"))
    assert (await polite.stop(5.0)).exit_code == 128 + signal.SIGTERM
    ended = await stubborn.stop(0.3)
    assert (ended.exit_code, ended.signal) == (128 + signal.SIGKILL, signal.SIGKILL)
    await async_wait_for(lambda: not alive(child), 5, "the stubborn container's child to die too")


async def test_whatever_the_main_process_leaves_behind_is_killed(tmp_path: Path) -> None:
    rt = ProcessRuntime()
    exits: list[Exit] = []
    await rt.start(launch(tmp_path, "sh", "-c", f"sleep 30 & echo $! > {tmp_path}/bg; exit 0"), exits.append)
    await async_wait_for(lambda: exits, 10, "the exit")
    bg = int((tmp_path / "bg").read_text())
    await async_wait_for(lambda: not alive(bg), 5, "the background process to be killed")


async def test_a_process_that_left_the_container_s_group_is_killed_with_it(tmp_path: Path) -> None:
    # As a launcher's vLLM instances do: `setsid` puts the child in a session and group of its own.
    rt = ProcessRuntime()
    # Its own output elsewhere, so it does not hold the container's pipes open.
    script = f"setsid sh -c 'echo $$ > {tmp_path}/escaped; exec sleep 30' >/dev/null 2>&1 & wait"
    handle = await rt.start(launch(tmp_path, "sh", "-c", script), lambda _: None)
    escaped = int(wait_for(lambda: (tmp_path / "escaped").read_text().strip(), 10, "the escaped pid"))
    assert os.getsid(escaped) == escaped and alive(escaped)  # out of the container's group
    await handle.stop(0.3)
    await async_wait_for(lambda: not alive(escaped), 5, "the escaped process to die with its container")


async def test_a_missing_program_is_a_start_error(tmp_path: Path) -> None:
    rt = ProcessRuntime()
    with pytest.raises(StartFailed, match='exec: "no-such-program-x": executable file not found in \\$PATH'):
        await rt.start(launch(tmp_path, "no-such-program-x"), lambda _: None)


async def test_exec_runs_in_the_container_environment(tmp_path: Path) -> None:
    rt = ProcessRuntime()
    handle = await rt.start(launch(tmp_path, "sleep", "30"), lambda _: None)
    try:
        assert await handle.exec_sync(["true"], 5.0) == 0
        assert await handle.exec_sync(["sh", "-c", "exit 4"], 5.0) == 4
        assert await handle.exec_sync(["sleep", "10"], 0.2) == -1
    finally:
        await rt.shutdown(1.0)
    assert handle.status() is not None


def test_nothing_outlives_a_sigkilled_kubelet(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, pathlib
        from dpsim.kubelet.runtime import Launch, ProcessRuntime

        async def main():
            rt = ProcessRuntime()
            d = pathlib.Path({str(tmp_path)!r})
            h = await rt.start(Launch("x", ("sleep", "60"), {{"PATH": "/usr/bin:/bin"}}, d, d / "x.log"), print)
            (d / "pid").write_text(str(h.pid))
            await asyncio.sleep(60)

        asyncio.run(main())
        """
    )
    kubelet = subprocess.Popen([sys.executable, "-c", script])
    try:
        pid = int(wait_for((tmp_path / "pid").read_text, 20, "the container to start"))
        assert alive(pid)
        kubelet.kill()
        kubelet.wait(10)
        wait_for(lambda: not alive(pid), 10, "PR_SET_PDEATHSIG to kill the container")
    finally:
        if kubelet.poll() is None:
            kubelet.kill()
            kubelet.wait()


async def test_shutdown_stops_everything(tmp_path: Path) -> None:
    rt = ProcessRuntime()
    handles = [await rt.start(launch(tmp_path, "sleep", "30", name=str(i)), lambda _: None) for i in range(3)]
    await rt.shutdown(1.0)
    assert all(h.status() is not None for h in handles)
    assert rt.running() == 0


def test_what_a_sigkilled_kubelet_left_in_the_background_is_reaped_at_the_next_start(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, pathlib
        from dpsim.kubelet.runtime import Launch, ProcessRuntime

        async def main():
            rt = ProcessRuntime()
            d = pathlib.Path({str(tmp_path)!r})
            env = {{"PATH": "/usr/bin:/bin", "DPCTL_SIM_STATE": str(d)}}
            argv = ("sh", "-c", f"sleep 60 & echo $! > {{d}}/bg; wait")
            await rt.start(Launch("x", argv, env, d, d / "x.log"), print)
            await asyncio.sleep(60)

        asyncio.run(main())
        """
    )
    kubelet = subprocess.Popen([sys.executable, "-c", script])
    try:
        bg = int(wait_for(lambda: (tmp_path / "bg").read_text().strip(), 20, "the background process"))
        kubelet.kill()
        kubelet.wait(10)
        assert alive(bg)  # PR_SET_PDEATHSIG reaches the main process only
        assert reap_orphans(tmp_path) == [bg]
        wait_for(lambda: not alive(bg), 10, "the orphan to die")
        assert reap_orphans(tmp_path / "other") == []
    finally:
        if kubelet.poll() is None:
            kubelet.kill()
            kubelet.wait()
