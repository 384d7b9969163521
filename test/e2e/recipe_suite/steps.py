"""The recipe's recurring moves and "Expect" checks, shared by the suite's cases.

Each function waits for conditions with deadlines (never sleeps) and asserts what the recipe or
the contract says a person would observe at that point.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from dpctl import api
from dpctl.api import LogMsg
from e2e.recipe import (
    Kubectl,
    annotations_of,
    bound_pair,
    cuda_visible_devices,
    dialect_of,
    is_ready,
    is_sleeping,
    labels,
    name_of,
    ready_since,
    requesters_of,
    runners,
    status_errors,
)
from helpers import wait_for

from .conftest import Dpctlr, T

Pod = dict[str, Any]


def fresh(kubectl: Kubectl, pod: Mapping[str, Any]) -> Pod:
    """The Pod as it is now (it must still exist)."""
    now = kubectl.pod(name_of(pod))
    assert now is not None, f"{name_of(pod)} is gone"
    return now


def pair_ready(kubectl: Kubectl, rs: str) -> tuple[Pod, Pod]:
    """Example 1's "Expect": the ReplicaSet's requester gets a runner, the runner becomes Ready,
    and soon after the requester does (the readiness relay follows the runner, never leads it)."""
    req, runner = wait_for(lambda: bound_pair(kubectl, rs), T, f"a requester of {rs} bound to a runner")
    runner = wait_for(
        lambda: (r := kubectl.pod(name_of(runner))) is not None and is_ready(r) and r, T, "the runner Ready"
    )
    req = wait_for(
        lambda: (r := kubectl.pod(name_of(req))) is not None and is_ready(r) and r, T, "the requester Ready"
    )
    runner = fresh(kubectl, runner)
    assert is_ready(runner), f"{name_of(req)} is Ready but its runner {name_of(runner)} is not"
    assert ready_since(runner) <= ready_since(req), (
        f"the requester became Ready ({ready_since(req)}) before its runner ({ready_since(runner)})"
    )
    return req, runner


def assert_pair(
    req: Mapping[str, Any], runner: Mapping[str, Any], gpu_map: Mapping[str, Mapping[str, int]]
) -> None:
    """The shape of a bound pair: the recipe's name and Node, the GPUs through ``gpu-map``, the
    status annotation without errors, and the FYI labels and annotations of contract §2."""
    node = req["spec"]["nodeName"]
    assert runner["spec"]["nodeName"] == node, "the runner is not on the requester's Node"
    uuids = annotations_of(req)[api.ACCELERATORS_ANNOTATION].split(",")
    assert (
        annotations_of(runner)[api.ACCELERATORS_ANNOTATION]
        == annotations_of(req)[api.ACCELERATORS_ANNOTATION]
    )
    assert cuda_visible_devices(runner) == ",".join(str(gpu_map[node][u]) for u in uuids), (
        f"CUDA_VISIBLE_DEVICES={cuda_visible_devices(runner)!r} but gpu-map[{node}] maps {uuids}"
    )
    dialect = dialect_of(req)
    assert dialect.status in annotations_of(req), "no status annotation on the requester"
    assert status_errors(req) == []
    assert labels(req).get(api.DUAL_LABEL) == name_of(runner)
    assert labels(runner).get(api.DUAL_LABEL) == name_of(req)
    assert labels(runner).get(api.SLEEPING_LABEL) == "false"
    assert "app" not in labels(runner), "the server-patch drops the ReplicaSet's selector label"
    assert dialect.runner_finalizer in (runner["metadata"].get("finalizers") or [])
    assert api.REQUESTER_FINALIZER in (req["metadata"].get("finalizers") or [])


def assert_found_gpus_logged(dpctlr: Dpctlr, req: Mapping[str, Any]) -> None:
    uuids = annotations_of(req)[api.ACCELERATORS_ANNOTATION].split(",")
    found = dpctlr.lines(LogMsg.FOUND_GPUS, requester=name_of(req))
    assert found, f"no {LogMsg.FOUND_GPUS!r} line for {name_of(req)}"
    assert all(u in found[-1] for u in uuids), f"{found[-1]!r} does not name {uuids}"


def scale_to_zero_keeps_sleeper(kubectl: Kubectl, dpctlr: Dpctlr, rs: str, req: Pod, runner: Pod) -> Pod:
    """Example 7: ``kubectl scale --replicas=0``: the requester goes; the runner stays, unbound,
    without finalizer, its server asleep; the log says "Unbound server-running Pod", later
    "End of life of inference server"."""
    kubectl.scale(rs, 0)
    wait_for(lambda: kubectl.pod(name_of(req)) is None, T, f"the requester {name_of(req)} gone")
    sleeper = wait_for(
        lambda: (
            (r := kubectl.pod(name_of(runner))) is not None
            and api.REQUESTER_ANNOTATION not in annotations_of(r)
            and r
        ),
        T,
        "the runner unbound",
    )
    assert sleeper["metadata"]["uid"] == runner["metadata"]["uid"]
    assert not sleeper["metadata"].get("deletionTimestamp")
    assert not sleeper["metadata"].get("finalizers"), sleeper["metadata"].get("finalizers")
    assert labels(sleeper).get(api.SLEEPING_LABEL) == "true"
    assert api.DUAL_LABEL not in labels(sleeper)
    assert is_sleeping(kubectl, sleeper, direct=dpctlr.cluster.is_local), "/is_sleeping says it is awake"
    uid = req["metadata"]["uid"]
    wait_for(
        lambda: dpctlr.count(LogMsg.END_OF_LIFE, requesterUID=uid) >= 1,
        T,
        f"{LogMsg.END_OF_LIFE!r} for {name_of(req)}",
    )
    assert_in_order(
        dpctlr.log(),
        (LogMsg.UNBOUND_RUNNER, {"runner": name_of(runner)}),
        (LogMsg.END_OF_LIFE, {"requesterUID": uid}),
    )
    return sleeper


def both_gone_then_replaced(
    kubectl: Kubectl, rs: str, req: Pod, runner: Pod, gpu_map: Mapping[str, Mapping[str, int]]
) -> None:
    """Example 2's ending: the runner and its requester both go, then the ReplicaSet's
    replacement requester gets a new pair of its own, the only runner left."""
    wait_for(
        lambda: kubectl.pod(name_of(req)) is None and kubectl.pod(name_of(runner)) is None,
        T,
        "both the runner and its requester gone",
    )
    req2, runner2 = pair_ready(kubectl, rs)
    assert {name_of(req2), name_of(runner2)}.isdisjoint({name_of(req), name_of(runner)})
    assert_pair(req2, runner2, gpu_map)
    assert only_runners(kubectl) == [name_of(runner2)]


def only_runners(kubectl: Kubectl) -> list[str]:
    return sorted(name_of(r) for r in runners(kubectl.pods()))


def live_requesters(kubectl: Kubectl, rs: str) -> list[Pod]:
    return [dict(p) for p in requesters_of(kubectl.pods(), rs) if not p["metadata"].get("deletionTimestamp")]


def assert_in_order(log: str, *entries: tuple[str, Mapping[str, str]]) -> None:
    """Each (message, key-values) has a line in ``log``, the first of each after the previous one."""
    lines = log.splitlines()
    at = -1
    for message, kv in entries:
        wanted = [f"{k}={json.dumps(v)}" for k, v in kv.items()]
        found = next(
            (
                i
                for i in range(at + 1, len(lines))
                if message in lines[i] and all(w in lines[i] for w in wanted)
            ),
            None,
        )
        assert found is not None, f"no {message!r} line with {dict(kv)} after line {at + 1} of the log"
        at = found
