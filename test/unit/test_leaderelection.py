"""Leader election against an in-memory Lease store with the API server's optimistic concurrency."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from typing import Any

import aiohttp
import pytest

from dpctl.kube import ApiError
from dpctl.leaderelection import LeaderElector, LeaseSettings, micro_time
from helpers import async_wait_for


class FakeLeases:
    """get/create/update of Leases with resourceVersion checks, like the API server."""

    def __init__(self) -> None:
        self.objs: dict[str, dict[str, Any]] = {}
        self.rv = 0
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise OSError("connection refused")

    async def get(self, res: Any, name: str, namespace: str | None = None) -> dict[str, Any]:
        self._check()
        if name not in self.objs:
            raise ApiError(404, "NotFound", "not found")
        return copy.deepcopy(self.objs[name])

    async def create(self, res: Any, body: Any, namespace: str | None = None, **_: Any) -> dict[str, Any]:
        self._check()
        name = body["metadata"]["name"]
        if name in self.objs:
            raise ApiError(409, "AlreadyExists", "exists")
        self.rv += 1
        obj = copy.deepcopy(dict(body))
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.objs[name] = obj
        return copy.deepcopy(obj)

    async def update(self, res: Any, body: Any, namespace: str | None = None, **_: Any) -> dict[str, Any]:
        self._check()
        name = body["metadata"]["name"]
        if self.objs[name]["metadata"]["resourceVersion"] != body["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified")
        self.rv += 1
        obj = copy.deepcopy(dict(body))
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.objs[name] = obj
        return copy.deepcopy(obj)


def settings(identity: str) -> LeaseSettings:
    return LeaseSettings(
        "lease", "ns", identity, lease_duration_s=0.6, renew_deadline_s=0.4, retry_period_s=0.05
    )


def test_micro_time_always_has_six_fraction_digits_and_zulu() -> None:
    assert micro_time(dt.datetime(2026, 1, 1, tzinfo=dt.UTC)) == "2026-01-01T00:00:00.000000Z"


def test_renew_deadline_must_be_shorter_than_the_lease() -> None:
    with pytest.raises(ValueError, match="renew deadline"):
        LeaderElector(FakeLeases(), LeaseSettings("l", "n", "a", 5, 5, 1))  # type: ignore[arg-type]


async def test_exactly_one_of_two_candidates_leads_and_the_standby_takes_over() -> None:
    leases = FakeLeases()
    a, b = LeaderElector(leases, settings("a")), LeaderElector(leases, settings("b"))  # type: ignore[arg-type]
    ta, tb = asyncio.create_task(a.run()), asyncio.create_task(b.run())
    await async_wait_for(lambda: a.leading.is_set() or b.leading.is_set(), 5, "a leader")
    leader, standby, leader_task = (a, b, ta) if a.leading.is_set() else (b, a, tb)
    # While the leader renews (several renewals observed), the standby never becomes leader.
    start_rv = leases.rv
    await async_wait_for(lambda: leases.rv >= start_rv + 5, 5, "five renewals by the leader")
    assert not standby.leading.is_set()
    assert leases.objs["lease"]["spec"]["holderIdentity"] == leader.s.identity
    leader_task.cancel()  # a clean shutdown hands the lease over at once
    await asyncio.gather(leader_task, return_exceptions=True)
    await asyncio.wait_for(standby.leading.wait(), 5)
    assert leases.objs["lease"]["spec"]["holderIdentity"] == standby.s.identity
    for t in (ta, tb):
        t.cancel()
    await asyncio.gather(ta, tb, return_exceptions=True)


async def test_leader_that_cannot_renew_steps_down_before_the_lease_expires() -> None:
    leases = FakeLeases()
    a = LeaderElector(leases, settings("a"))  # type: ignore[arg-type]
    task = asyncio.create_task(a.run())
    await asyncio.wait_for(a.leading.wait(), 5)
    leases.down = True
    await asyncio.wait_for(a.lost.wait(), 5)
    assert not a.leading.is_set()
    await task


async def test_a_dead_leaders_lease_is_taken_only_after_it_expires() -> None:
    leases = FakeLeases()
    now = dt.datetime.now(dt.UTC)
    leases.objs["lease"] = {
        "metadata": {"name": "lease", "resourceVersion": "1"},
        "spec": {"holderIdentity": "dead", "leaseDurationSeconds": 1, "renewTime": micro_time(now)},
    }
    b = LeaderElector(leases, settings("b"))  # type: ignore[arg-type]
    task = asyncio.create_task(b.run())
    await asyncio.wait_for(b.leading.wait(), 5)
    taken_after = (dt.datetime.now(dt.UTC) - now).total_seconds()
    assert taken_after >= 1.0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_live_leader_with_a_slow_clock_keeps_its_lease() -> None:
    """Expiry is judged from when the Lease last changed, by the local clock: a leader whose wall
    clock is an hour behind still holds its Lease while it renews."""
    leases = FakeLeases()
    renewals = 0

    async def skewed_leader() -> None:
        nonlocal renewals
        while True:
            leases.rv += 1
            renewals += 1
            leases.objs["lease"] = {
                "metadata": {"name": "lease", "resourceVersion": str(leases.rv)},
                "spec": {
                    "holderIdentity": "skewed",
                    "leaseDurationSeconds": 1,
                    "renewTime": micro_time(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)),
                },
            }
            await asyncio.sleep(0.05)  # the leader's retry period

    renewing = asyncio.create_task(skewed_leader())
    b = LeaderElector(leases, settings("b"))  # type: ignore[arg-type]
    task = asyncio.create_task(b.run())
    # Well over a lease duration (1 s) of renewals: the standby never takes over.
    await async_wait_for(lambda: renewals >= 40, 10, "two seconds of renewals by the skewed leader")
    assert not b.leading.is_set()
    assert leases.objs["lease"]["spec"]["holderIdentity"] == "skewed"
    renewing.cancel()
    stopped = asyncio.get_running_loop().time()
    await asyncio.wait_for(b.leading.wait(), 5)
    assert asyncio.get_running_loop().time() - stopped >= 0.9  # a full lease duration after the last change
    task.cancel()
    await asyncio.gather(task, renewing, return_exceptions=True)


class HangingLeases(FakeLeases):
    """Reads never answer once ``hang`` is set, like an API server that accepted the connection
    and went silent (the client's own timeout is much longer than the renew deadline)."""

    def __init__(self) -> None:
        super().__init__()
        self.hang = False

    async def get(self, res: Any, name: str, namespace: str | None = None) -> dict[str, Any]:
        if self.hang:
            await asyncio.Event().wait()
        return await super().get(res, name, namespace)


async def test_a_hung_renewal_steps_down_by_the_renew_deadline() -> None:
    leases = HangingLeases()
    a = LeaderElector(leases, settings("a"))  # type: ignore[arg-type]
    task = asyncio.create_task(a.run())
    await asyncio.wait_for(a.leading.wait(), 5)
    last_renewal = leases.rv
    await async_wait_for(lambda: leases.rv > last_renewal, 5, "a renewal")
    leases.hang = True
    hung_at = asyncio.get_running_loop().time()
    # Renew deadline 0.4 s: stepped down well before the lease (0.6 s) could pass to another.
    await asyncio.wait_for(a.lost.wait(), 5)
    assert asyncio.get_running_loop().time() - hung_at < 0.6
    assert not a.leading.is_set()
    await task


class DisconnectingLeases(FakeLeases):
    """Reads fail with aiohttp's ServerDisconnectedError (not an OSError) while ``drop`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = False

    async def get(self, res: Any, name: str, namespace: str | None = None) -> dict[str, Any]:
        if self.drop:
            raise aiohttp.ServerDisconnectedError()
        return await super().get(res, name, namespace)


async def test_a_dropped_connection_fails_an_attempt_never_the_election() -> None:
    leases = DisconnectingLeases()
    a = LeaderElector(leases, settings("a"))  # type: ignore[arg-type]
    ta = asyncio.create_task(a.run())
    await asyncio.wait_for(a.leading.wait(), 5)
    leases.drop = True
    b = LeaderElector(leases, settings("b"))  # type: ignore[arg-type]
    tb = asyncio.create_task(b.run())
    # The leader steps down cleanly (it cannot renew); it does not die with the error.
    await asyncio.wait_for(a.lost.wait(), 5)
    await ta
    # The candidate keeps trying through the errors and wins once the API answers again.
    assert not tb.done()
    leases.drop = False
    await asyncio.wait_for(b.leading.wait(), 5)
    tb.cancel()
    await asyncio.gather(tb, return_exceptions=True)


async def test_a_leader_that_sees_another_holder_steps_down_at_once() -> None:
    leases = FakeLeases()
    slow = LeaseSettings("lease", "ns", "a", lease_duration_s=60, renew_deadline_s=30, retry_period_s=0.05)
    a = LeaderElector(leases, slow)  # type: ignore[arg-type]
    task = asyncio.create_task(a.run())
    await asyncio.wait_for(a.leading.wait(), 5)
    lease = leases.objs["lease"]
    lease["spec"] = {**lease["spec"], "holderIdentity": "intruder", "renewTime": micro_time()}
    leases.rv += 1
    lease["metadata"]["resourceVersion"] = str(leases.rv)
    # Not after the 30 s renew deadline: the next attempt shows it is not the leader.
    await asyncio.wait_for(a.lost.wait(), 5)
    await task
