"""Leader election against an in-memory Lease store with the API server's optimistic concurrency."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from typing import Any

import pytest
from helpers import async_wait_for

from dpctl.kube import ApiError
from dpctl.leaderelection import LeaderElector, LeaseSettings, micro_time


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
