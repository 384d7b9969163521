"""allocations.json: a lone change is written at once, a burst of changes once per interval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import async_wait_for

from .test_kubelet_podsync import World, _world, make_pod


@pytest.fixture
async def world(tmp_path: Path) -> World:
    return _world(tmp_path, {})


def recorded(world: World) -> set[str]:
    return set(json.loads((world.state / "allocations.json").read_text())["pods"])


async def test_a_burst_of_admissions_is_written_once_more_at_the_end(world: World) -> None:
    first = world.add(make_pod("a", env=None))
    await world.syncer.sync(first)
    assert recorded(world) == {first}  # a lone admission: written at once
    second = world.add(make_pod("b", env=None))
    third = world.add(make_pod("c", env=None))
    await world.syncer.sync(second)
    await world.syncer.sync(third)
    assert recorded(world) == {first}  # within the interval: deferred, not lost
    await async_wait_for(lambda: recorded(world) == {first, second, third}, 5, "the deferred write")


async def test_flush_writes_a_deferred_change_now(world: World) -> None:
    await world.syncer.sync(world.add(make_pod("a", env=None)))
    late = world.add(make_pod("b", env=None))
    await world.syncer.sync(late)
    world.syncer.flush_allocs()
    assert late in recorded(world)
