"""Event handlers: which keys an object change enqueues (they decide nothing else)."""

from __future__ import annotations

from typing import Any

from dpctl.dualpods.controller import Controller
from dpctl.dualpods.keys import RunnerKey, ServerKey
from dpctl.dualpods.reconcile import Settings

from .fakes import Recorder, World, node, requester, runner


def make_controller() -> Controller:
    return Controller(object(), "ns1", Recorder(World()).ports, Settings())  # type: ignore[arg-type]


async def queued(c: Controller) -> set[Any]:
    keys = set()
    while len(c.queue):
        keys.add(await c.queue.get())
    return keys


async def test_requester_and_bound_runner_events_enqueue_the_server() -> None:
    c = make_controller()
    c._pod_changed(requester())
    c._pod_changed(runner())
    assert await queued(c) == {ServerKey("uid-a")}


async def test_unbound_runner_events_enqueue_runner_housekeeping() -> None:
    c = make_controller()
    c._pod_changed(runner(bound_to=None))
    assert await queued(c) == {RunnerKey("uid-r")}


async def test_unbinding_enqueues_the_old_server_and_waiting_requesters_on_the_node() -> None:
    c = make_controller()
    waiting = requester(name="req-b", uid="uid-b")
    c.pods.store.upsert(waiting)
    c._pod_updated(runner(), runner(bound_to=None))
    assert await queued(c) == {ServerKey("uid-a"), RunnerKey("uid-r"), ServerKey("uid-b")}


async def test_gpu_map_change_enqueues_only_requesters_without_a_runner() -> None:
    c = make_controller()
    for pod in (requester(), requester(name="req-b", uid="uid-b"), runner(bound_to=("uid-b", "req-b"))):
        c.pods.store.upsert(pod)
    c._gpu_map_changed()
    assert await queued(c) == {ServerKey("uid-a")}


async def test_cordon_enqueues_the_requesters_on_that_node_only() -> None:
    c = make_controller()
    c.pods.store.upsert(requester())
    c.pods.store.upsert(requester(name="req-c", uid="uid-c", node="node-2"))
    c._node_updated(node(), node(unschedulable=True))
    assert await queued(c) == {ServerKey("uid-a")}
    c._node_updated(node(unschedulable=True), node(unschedulable=True))
    assert await queued(c) == set()


async def test_pods_of_other_kinds_are_ignored() -> None:
    c = make_controller()
    c._pod_changed({"metadata": {"name": "x", "uid": "u", "annotations": {"a": "b"}}, "spec": {}})
    assert await queued(c) == set()
