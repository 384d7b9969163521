"""The manager's watch streams: a watcher follows live events, ends when it fell out of the buffer
(it must re-list), and ends when the launcher shuts down. Children are real ``sleep`` processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dpctl.launcher.api import VllmConfig
from dpctl.launcher.children import CommandProgram
from dpctl.launcher.gpus import MockGpus
from dpctl.launcher.manager import Manager

WAIT_S = 10.0


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[Manager]:
    manager = Manager(
        CommandProgram(["sleep", "60"]), MockGpus(1), tmp_path, stop_grace_s=5, buffer_capacity=3
    )
    yield manager
    await manager.delete_all()


async def test_a_watcher_gets_live_events_then_ends_when_it_falls_out_of_the_buffer(manager: Manager) -> None:
    stream = manager.follow(0)
    pending = asyncio.ensure_future(anext(stream))
    await manager.create(VllmConfig(options=""), "a")
    assert b'"instance_id":"a"' in await asyncio.wait_for(pending, WAIT_S)
    # Four more events while the watcher does not read: event 2 falls out of the 3-event buffer.
    for name in "bcde":
        await manager.create(VllmConfig(options=""), name)
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(stream), WAIT_S)


async def test_watchers_end_when_the_launcher_shuts_down(manager: Manager) -> None:
    stream = manager.follow(manager.table.revision)
    pending = asyncio.ensure_future(anext(stream))
    manager.end_watches()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, WAIT_S)


async def test_concurrent_deletes_of_one_id_share_one_stop(manager: Manager) -> None:
    await manager.create(VllmConfig(options=""), "a")
    first, second = await asyncio.gather(manager.delete("a"), manager.delete("a"))
    assert first == second
    assert first["status"] == "stopped"
    assert [e.type.value for e in manager.table.events.after(0)] == ["CREATED", "DELETED"]
