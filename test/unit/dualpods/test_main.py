"""The controller process's serving loop (:func:`dpctl.dualpods.main._serve`) with a real work
queue and workers, and a scripted leader election: who runs, who drains, who is cut off."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest

from dpctl import log
from dpctl.dualpods.main import _serve
from dpctl.leaderelection import LeaseSettings
from dpctl.workqueue import Done, Outcome, RateLimitingQueue, run_workers
from helpers import async_wait_for


class Controller:
    """Just what ``_serve`` uses: a queue and ``run_workers``; one item blocks until released."""

    def __init__(self) -> None:
        self.queue: RateLimitingQueue[str] = RateLimitingQueue("test")
        self.started = asyncio.Event()
        self.finish = asyncio.Event()
        self.history: list[str] = []

    async def run_workers(self) -> None:
        self.started.set()
        await run_workers(self.queue, self._process, 1, log.get("test"))

    async def _process(self, item: str) -> Outcome:
        self.history.append(f"{item} started")
        try:
            await self.finish.wait()
        except asyncio.CancelledError:
            self.history.append(f"{item} cut off")
            raise
        self.history.append(f"{item} done")
        return Done()


class Elector:
    """``leading``/``lost`` and a ``run`` that follows a script; cancelling it is the hand-over."""

    def __init__(self, script: Callable[[Elector], Awaitable[None]], history: list[str]) -> None:
        self.s = LeaseSettings("lease", "ns", "me")
        self.leading = asyncio.Event()
        self.lost = asyncio.Event()
        self.script = script
        self.history = history

    async def run(self) -> None:
        try:
            await self.script(self)
        except asyncio.CancelledError:
            self.history.append("lease handed over")
            raise


async def lead_forever(e: Elector) -> None:
    e.leading.set()
    await asyncio.Event().wait()


async def serve(controller: Controller, elector: Elector | None, stop: asyncio.Event) -> asyncio.Task[int]:
    return asyncio.create_task(_serve(controller, elector, stop))  # type: ignore[arg-type]


async def test_sigterm_lets_the_item_finish_then_hands_the_lease_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    c, stop = Controller(), asyncio.Event()
    task = await serve(c, Elector(lead_forever, c.history), stop)
    c.queue.add("a")
    await async_wait_for(lambda: c.history == ["a started"], 5, "the item in progress")
    stop.set()
    await async_wait_for(
        lambda: "Shutting down" in [r.getMessage() for r in caplog.records], 5, "the shutdown begun"
    )
    assert not task.done() and c.history == ["a started"]  # neither cut off nor handed over yet
    c.finish.set()
    assert await asyncio.wait_for(task, 5) == 0
    assert c.history == ["a started", "a done", "lease handed over"]


async def test_a_leader_that_loses_its_lease_cuts_its_workers_off_at_once() -> None:
    lose = asyncio.Event()

    async def lead_then_lose(e: Elector) -> None:
        e.leading.set()
        await lose.wait()
        e.leading.clear()
        e.lost.set()

    c = Controller()
    task = await serve(c, Elector(lead_then_lose, c.history), asyncio.Event())
    c.queue.add("a")
    await async_wait_for(lambda: c.history == ["a started"], 5, "the item in progress")
    lose.set()
    # Not after a drain of up to 30 s: another replica may already lead.
    assert await asyncio.wait_for(task, 5) == 1
    assert c.history == ["a started", "a cut off"]


@pytest.mark.parametrize("leading_first", [False, True])
async def test_a_failed_election_never_leaves_workers_running(leading_first: bool) -> None:
    async def fail(e: Elector) -> None:
        if leading_first:
            e.leading.set()
            await c.started.wait()
        raise RuntimeError("the election task failed")

    c = Controller()
    task = await serve(c, Elector(fail, c.history), asyncio.Event())
    assert await asyncio.wait_for(task, 5) == 1
    assert c.started.is_set() == leading_first


async def test_a_standby_stopped_by_sigterm_exits_0_without_working() -> None:
    c, stop = Controller(), asyncio.Event()

    async def stand_by(e: Elector) -> None:
        await asyncio.Event().wait()

    task = await serve(c, Elector(stand_by, c.history), stop)
    stop.set()
    assert await asyncio.wait_for(task, 5) == 0
    assert not c.started.is_set()


async def test_without_election_the_workers_run_until_sigterm() -> None:
    c, stop = Controller(), asyncio.Event()
    task = await serve(c, None, stop)
    c.queue.add("a")
    await async_wait_for(lambda: c.history == ["a started"], 5, "the item in progress")
    c.finish.set()
    stop.set()
    assert await asyncio.wait_for(task, 5) == 0
    assert c.history == ["a started", "a done"]
