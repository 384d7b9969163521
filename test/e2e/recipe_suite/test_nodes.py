"""Recipe Examples 5 (Node cordon) and 6 (Node deletion).

"Observe that nothing changes" is made a condition rather than a wait: the controller's work queue
(from its ``/metrics``) shows it took in the event and finished with it, and the Pods'
resourceVersions show it wrote nothing. The cordon "between scheduling and runner creation" is
made wide and certain with the stub's fault injection: its GPU answer comes later than the
controller waits for it, so no runner can be made until the cordon is seen.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from dpctl import api
from dpctl.api import LogMsg
from dpctl.faults import ENABLE_ENV, RULES_ENV
from e2e.recipe import Kubectl, ServerPatch, is_ready, mkrs, name_of, unique_name
from helpers import wait_for

from .conftest import Dpctlr, Gpus, SimKubelet, T
from .steps import assert_pair, fresh, live_requesters, only_runners, pair_ready

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

DELETE_ON_CORDON = "Deleting server-requesting Pod because it is bound to an unschedulable Node"
# PodGC deletes the Pods of a deleted Node after a 40 s quarantine, on a 20 s cycle.
NODE_GONE_DEADLINE = 150 + T


def _resource_versions(kubectl: Kubectl, *pods: dict[str, Any]) -> dict[str, str]:
    return {name_of(p): fresh(kubectl, p)["metadata"]["resourceVersion"] for p in pods}


def test_example_5_cordon_changes_nothing_for_a_bound_pair_even_when_prodded(
    cluster: Any,
    kubectl: Kubectl,
    dpctlr: Dpctlr,
    gpu_map: dict[str, dict[str, int]],
    gpus: Gpus,
    cordon: Any,
) -> None:
    node = gpus.worker()
    rs = unique_name()
    kubectl.apply(mkrs(rs, ServerPatch(), node_selector={api.HOSTNAME_LABEL: node}))
    req, runner = pair_ready(kubectl, rs)

    adds = dpctlr.queue().adds
    cordon(node)
    dpctlr.wait_processed(adds, "the cordon")
    before = _resource_versions(kubectl, req, runner)
    # Prod: an unimportant annotation on each Pod; each time, wait until the controller has
    # processed the change, then see that it wrote nothing.
    for i, pod in enumerate((req, runner)):
        adds = dpctlr.queue().adds
        before[name_of(pod)] = kubectl.annotate(name_of(pod), "example.com/prod", str(i))
        dpctlr.wait_processed(adds, f"the prod of {name_of(pod)}")
    assert _resource_versions(kubectl, req, runner) == before, "the controller changed a Pod"
    now_req, now_runner = fresh(kubectl, req), fresh(kubectl, runner)
    assert not now_req["metadata"].get("deletionTimestamp")
    assert not now_runner["metadata"].get("deletionTimestamp")
    assert is_ready(now_req) and is_ready(now_runner)
    assert_pair(now_req, now_runner, gpu_map)
    assert dpctlr.count(DELETE_ON_CORDON) == 0


def test_example_5_cordon_between_scheduling_and_runner_creation_deletes_the_requester(
    kubectl: Kubectl, dpctlr: Dpctlr, gpu_map: dict[str, dict[str, int]], gpus: Gpus, cordon: Any
) -> None:
    node = gpus.worker()
    rs = unique_name()
    # The stub answers the GPU query after 8 s; the controller gives up after 5 s and retries, so
    # the requester stays scheduled without a runner for as long as the test needs.
    slow = json.dumps([{"path": api.ORIGINAL.accelerators_path, "delay_s": 8}])
    kubectl.apply(
        mkrs(
            rs,
            ServerPatch(),
            node_selector={api.HOSTNAME_LABEL: node},
            requester_env={ENABLE_ENV: "1", RULES_ENV: slow},
        )
    )
    (req,) = wait_for(
        lambda: [
            r
            for r in live_requesters(kubectl, rs)
            if any(
                c.get("state", {}).get("running") for c in r.get("status", {}).get("containerStatuses", [])
            )
        ],
        T,
        "the requester scheduled and its stub running",
    )
    assert only_runners(kubectl) == []
    cordon(node)

    wait_for(lambda: kubectl.pod(name_of(req)) is None, T, "the controller to delete the requester")
    assert dpctlr.count(DELETE_ON_CORDON, requester=name_of(req)) == 1
    assert dpctlr.count(LogMsg.CREATED_RUNNER) == 0
    assert only_runners(kubectl) == []
    # The ReplicaSet's replacement cannot be scheduled on the cordoned Node.
    (replacement,) = wait_for(lambda: live_requesters(kubectl, rs), T, "the replacement requester")
    assert name_of(replacement) != name_of(req)
    assert not replacement["spec"].get("nodeName")


def test_example_6_node_deletion_makes_both_pods_go_away(
    cluster: Any,
    kubectl: Kubectl,
    dpctlr: Dpctlr,
    gpu_map: dict[str, dict[str, int]],
    gpus: Gpus,
    sim: SimKubelet,
) -> None:
    node = gpus.worker()  # not the controller's Node
    rs = unique_name()
    kubectl.apply(mkrs(rs, ServerPatch(), node_selector={api.HOSTNAME_LABEL: node}))
    req, runner = pair_ready(kubectl, rs)

    cluster.run_kubectl("delete", "node", node, "--wait=false")
    try:
        wait_for(
            lambda: kubectl.pod(name_of(req)) is None and kubectl.pod(name_of(runner)) is None,
            NODE_GONE_DEADLINE,
            "both Pods of the deleted Node gone (PodGC, then the controller)",
        )
        assert only_runners(kubectl) == []
    finally:
        # Bring the Node back (a fresh boot of the simulated machine) for the tests after this one.
        if not any(name_of(n) == node for n in kubectl.get_json("nodes")["items"]):
            sim.node(node, "add")
        wait_for(
            lambda: any(name_of(n) == node for n in _ready_nodes(kubectl)), T, f"{node} registered and Ready"
        )
    # The ReplicaSet's replacement, pinned to the Node, waited for it and is served now.
    req2, runner2 = pair_ready(kubectl, rs)
    assert {name_of(req2), name_of(runner2)}.isdisjoint({name_of(req), name_of(runner)})
    assert_pair(req2, runner2, gpu_map)


def _ready_nodes(kubectl: Kubectl) -> list[dict[str, Any]]:
    return [
        n
        for n in kubectl.get_json("nodes")["items"]
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
    ]
