"""Switching controllers on a live namespace (contract §2b): pairs, sleepers and requesters made by
another controller version, in either dialect's names, are adopted by dpctl as they are.

The other controller is not needed to make such a namespace: its Pods are written here the way it
writes them (a runner is the requester's server-patch applied, pinned and annotated, with the
dialect's runner finalizer while bound; a sleeper is unbound, without finalizer, labelled
sleeping, its server put to sleep; a bound requester's readiness was relayed to its stub), while
no controller runs. Then dpctl is installed and must delete nothing, create nothing for what is
already served, and wake the sleeper for the next requester on its GPU.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import pytest

from dpctl import api
from dpctl.api import LogMsg
from dpctl.podbuild import build_runner
from e2e.recipe import (
    Kubectl,
    ServerPatch,
    annotations_of,
    is_ready,
    is_sleeping,
    mkrs,
    name_of,
    unique_name,
)
from helpers import wait_for

from .conftest import Dpctlr, Gpus, T, skip_unless_local
from .steps import Pod, assert_pair, fresh, live_requesters, only_runners, pair_ready

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SERVER_PORT = 8000
SPI_PORT = 8081


def _post(pod: Mapping[str, Any], port: int, path: str) -> None:
    url = f"http://{pod['status']['podIP']}:{port}{path}"
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10) as resp:
        assert resp.status == 200, f"POST {url}: {resp.status}"


def _answer(pod: Mapping[str, Any], path: str) -> Any:
    """The stub's JSON answer, None while it does not listen yet."""
    try:
        with urllib.request.urlopen(f"http://{pod['status']['podIP']}:{SPI_PORT}{path}", timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.URLError:
        return None


def _running_requester(kubectl: Kubectl, rs: str, node: str) -> Pod:
    kubectl.apply(mkrs(rs, ServerPatch(), node_selector={api.HOSTNAME_LABEL: node}))
    return wait_for(
        lambda: next((r for r in live_requesters(kubectl, rs) if r.get("status", {}).get("podIP")), None),
        T,
        f"a requester of {rs} running with an IP",
    )


def _runner_as_another_controller_makes_it(
    kubectl: Kubectl, req: Pod, gpu_map: Mapping[str, Mapping[str, int]], dialect: api.Dialect
) -> dict[str, Any]:
    """The runner of ``req`` on its GPUs, as the other controller builds it (same nominal hash)."""
    node = req["spec"]["nodeName"]
    uuids = wait_for(
        lambda: _answer(req, dialect.accelerators_path), T, f"the stub of {name_of(req)} answering"
    )
    built = build_runner(req, node, [gpu_map[node][u] for u in uuids], uuids)
    assert built.pod["metadata"]["finalizers"] == [dialect.runner_finalizer]
    return built.pod


def _created_ready(kubectl: Kubectl, pod: dict[str, Any]) -> Pod:
    kubectl.apply(pod)
    name = pod["metadata"]["name"]
    return wait_for(lambda: (p := kubectl.pod(name)) is not None and is_ready(p) and p, T, f"{name} Ready")


def test_a_namespace_of_another_controllers_pairs_and_sleepers_is_adopted_and_its_sleeper_woken(
    cluster: Any,
    kubectl: Kubectl,
    dpctlr: Dpctlr,
    gpu_map: dict[str, dict[str, int]],
    gpus: Gpus,
    dialect: api.Dialect,
) -> None:
    skip_unless_local(cluster, "reaching the servers' HTTP ports directly")
    sleeper_node = gpus.worker()
    gpus.leave_free(sleeper_node, 1)
    dpctlr.uninstall()

    # A bound pair: requester, its runner bound (the dialect's finalizer), readiness relayed.
    bound_rs = unique_name("bound")
    bound_req = _running_requester(kubectl, bound_rs, next(n for n in gpu_map if n != sleeper_node))
    bound_runner = _created_ready(
        kubectl, _runner_as_another_controller_makes_it(kubectl, bound_req, gpu_map, dialect)
    )
    _post(bound_req, SPI_PORT, api.BECOME_READY_PATH)
    kubectl.run(
        "patch",
        "pod",
        name_of(bound_req),
        "--type=merge",
        "-p",
        json.dumps(
            {
                "metadata": {
                    "finalizers": [api.REQUESTER_FINALIZER],
                    "labels": {api.DUAL_LABEL: name_of(bound_runner)},
                    "annotations": {
                        dialect.status: api.RequesterStatus().to_annotation(),
                        api.ACCELERATORS_ANNOTATION: annotations_of(bound_runner)[
                            api.ACCELERATORS_ANNOTATION
                        ],
                    },
                }
            }
        ),
    )

    # A sleeper on the one free GPU of the other Node, left by a requester since scaled away...
    sleepy_rs = unique_name("sleepy")
    first = _running_requester(kubectl, sleepy_rs, sleeper_node)
    sleeper_pod = _runner_as_another_controller_makes_it(kubectl, first, gpu_map, dialect)
    meta = sleeper_pod["metadata"]
    del meta["annotations"][api.REQUESTER_ANNOTATION], meta["labels"][api.DUAL_LABEL], meta["finalizers"]
    meta["labels"][api.SLEEPING_LABEL] = "true"
    sleeper = _created_ready(kubectl, sleeper_pod)
    _post(sleeper, SERVER_PORT, api.SLEEP_PATH + "?level=1")
    assert is_sleeping(kubectl, sleeper)
    kubectl.scale(sleepy_rs, 0)
    wait_for(lambda: kubectl.pod(name_of(first)) is None, T, "the sleeper's old requester gone")
    # ... and a requester mid-actuation for that GPU: no runner yet.
    kubectl.scale(sleepy_rs, 1)
    (waiting,) = wait_for(lambda: live_requesters(kubectl, sleepy_rs), T, "the new requester")
    made = only_runners(kubectl)

    dpctlr.install()
    # The requester mid-actuation wakes the sleeper: bound, awake, nothing created or deleted.
    waiting, woken = pair_ready(kubectl, sleepy_rs)
    assert woken["metadata"]["uid"] == sleeper["metadata"]["uid"], "the sleeper was not the one bound"
    assert not is_sleeping(kubectl, woken)
    assert_pair(waiting, woken, gpu_map)
    assert only_runners(kubectl) == made, "a runner was created or deleted"
    assert dpctlr.count(LogMsg.CREATED_RUNNER) == 0
    assert dpctlr.count(LogMsg.WOKE, runner=name_of(sleeper)) == 1
    # The adopted pair is served as it is, and released the normal way.
    pair = fresh(kubectl, bound_runner)
    assert annotations_of(pair)[api.REQUESTER_ANNOTATION].startswith(bound_req["metadata"]["uid"])
    assert is_ready(fresh(kubectl, bound_req))
    kubectl.scale(bound_rs, 0)
    unbound = wait_for(
        lambda: (
            kubectl.pod(name_of(bound_req)) is None
            and (r := kubectl.pod(name_of(bound_runner))) is not None
            and api.REQUESTER_ANNOTATION not in annotations_of(r)
            and r
        ),
        T,
        "the adopted requester gone and its runner unbound",
    )
    assert not unbound["metadata"].get("finalizers"), "the other version's runner finalizer stayed"
    assert is_sleeping(kubectl, unbound)
