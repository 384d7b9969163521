"""Controller-added latency: handlers stamp enabling events, the reconciler reports each step once."""

from __future__ import annotations

from typing import Any, cast

import pytest

from dpctl.dualpods.controller import Controller
from dpctl.dualpods.keys import ServerKey
from dpctl.dualpods.latency import Stamps
from dpctl.dualpods.reconcile import Reconciler, Settings
from helpers import ManualClock

from .fakes import Recorder, World, gpu_map_cm, gpu_uuid, node, requester, runner
from .test_reconcile import REQ_IP, nominal_of


def approx(expected: float) -> float:
    """``pytest.approx``, typed as the float it compares equal to, so that a list of (step, seconds)
    compares with one holding it (mypy finds no overlap between a float and pytest's Approx)."""
    return cast(float, pytest.approx(expected))


def test_a_stamp_is_taken_once_and_the_latest_event_counts() -> None:
    clock = ManualClock(100.0)
    stamps = Stamps(clock)
    stamps.mark("actuate", "u")
    clock.now += 5
    stamps.mark("actuate", "u")  # e.g. the stub restarted: it starts over
    clock.now += 0.25
    assert stamps.take("create", "u") == 0.25
    assert stamps.take("wake", "u") is None  # create and wake share the event: one of them
    assert stamps.take("relay", "u") is None


def test_end_of_life_drops_what_was_never_taken() -> None:
    stamps = Stamps(ManualClock(100.0))
    stamps.mark("actuate", "u")
    stamps.mark("relay", "u")
    stamps.mark("relay", "v")
    stamps.forget("u")
    assert len(stamps) == 1 and stamps.take("relay", "v") == 0.0


def make_controller(*pods: dict[str, Any]) -> Controller:
    c = Controller(object(), "ns1", Recorder(World()).ports, Settings())  # type: ignore[arg-type]
    for pod in pods:
        c.pods.store.upsert(pod)
    return c


def test_handlers_stamp_a_requester_whose_container_starts_running_unserved() -> None:
    c = make_controller()
    c._pod_changed(requester(running=False))
    assert len(c.stamps) == 0
    c._pod_updated(requester(running=False), requester())
    assert c.stamps.take("create", "uid-a") is not None
    c._pod_updated(requester(), requester(ready=True))  # still running: not a new start
    assert len(c.stamps) == 0
    c._pod_changed(requester(name="req-d", uid="uid-d", deleting=True))
    assert len(c.stamps) == 0


def test_handlers_do_not_stamp_a_requester_already_served() -> None:
    c = make_controller(runner())
    c._pod_changed(requester())
    assert len(c.stamps) == 0


def test_handlers_stamp_a_bound_runner_turning_ready() -> None:
    c = make_controller()
    c._pod_updated(runner(ready=False), runner(ready=True))
    assert c.stamps.take("relay", "uid-a") is not None
    c._pod_updated(runner(bound_to=None, ready=False), runner(bound_to=None, ready=True))
    c._pod_updated(runner(ready=True), runner(ready=True))
    assert len(c.stamps) == 0


def make(world: World, **rec: object) -> tuple[Reconciler, Recorder, ManualClock]:
    clock = ManualClock(100.0)
    recorder = Recorder(world, **rec)  # type: ignore[arg-type]
    return Reconciler(world, recorder.ports, Settings(), Stamps(clock)), recorder, clock


async def test_a_cold_start_reports_create_then_relay() -> None:
    world = World([requester()], [node()], gpu_map_cm({"node-1": 2}))
    r, rec, clock = make(world, gpus={REQ_IP: [gpu_uuid("node-1", 0)]})
    r.stamps.mark("actuate", "uid-a")
    clock.now += 0.04
    await r.reconcile(ServerKey("uid-a"))
    assert "create" in rec.verbs() and rec.added == [("create", approx(0.04))]
    # The runner comes up and turns Ready; its handler stamps the relay.
    world.pods["req-a-server"] = runner(nominal=nominal_of(requester()), sleeping_label="false")
    r.stamps.mark("relay", "uid-a")
    clock.now += 0.01
    await r.reconcile(ServerKey("uid-a"))
    assert ("relay", REQ_IP, True) in rec.actions
    assert rec.added == [("create", approx(0.04)), ("relay", approx(0.01))]
    await r.reconcile(ServerKey("uid-a"))  # nothing new: nothing reported twice
    assert len(rec.added) == 2


async def test_a_hot_start_reports_wake_and_times_the_relay_from_the_wake() -> None:
    req = requester()
    sleeper = runner(name="old-server", uid="uid-s", bound_to=None, nominal=nominal_of(req))
    world = World([req, sleeper], [node()], gpu_map_cm({"node-1": 2}))
    r, rec, clock = make(world, gpus={REQ_IP: [gpu_uuid("node-1", 0)]})
    r.stamps.mark("actuate", "uid-a")
    clock.now += 0.02
    await r.reconcile(ServerKey("uid-a"))
    assert rec.added == [("wake", approx(0.02))]
    world.pods["old-server"] = runner(
        name="old-server", uid="uid-s", nominal=nominal_of(req), sleeping_label="false"
    )
    clock.now += 0.005
    await r.reconcile(ServerKey("uid-a"))
    assert ("relay", REQ_IP, True) in rec.actions and rec.added[-1] == ("relay", approx(0.005))


async def test_end_of_life_forgets_the_stamps_of_the_server() -> None:
    world = World([], [node()], gpu_map_cm({"node-1": 2}))
    r, _, _ = make(world)
    r.stamps.mark("actuate", "uid-gone")
    await r.reconcile(ServerKey("uid-gone"))
    assert len(r.stamps) == 0


def test_the_histogram_has_one_series_per_step_and_no_pod_labels() -> None:
    from prometheus_client import CollectorRegistry

    from dpctl.dualpods.metrics import DualPodsMetrics

    registry = CollectorRegistry()
    metrics = DualPodsMetrics(registry, lambda: [])
    metrics.added_latency("create", 0.042)
    counts = {
        s.labels["step"]: s.value
        for family in registry.collect()
        if family.name == "dpctl_controller_added_seconds"
        for s in family.samples
        if s.name.endswith("_count")
    }
    assert counts == {"create": 1.0, "wake": 0.0, "relay": 0.0}
    le = registry.get_sample_value("dpctl_controller_added_seconds_bucket", {"step": "create", "le": "0.05"})
    assert le == 1.0
