"""Recipe Examples 1, 2 and 7 with the controller from the chart, plus two variations the recipe
implies: a requester of two GPUs, and a vLLM without sleep mode.

Example 1 runs with both of the recipe's server-patch forms: ``--model=...`` and the staged-model
form whose claim name carries ``{{ .NodeName }}``, which must render into the runner.
"""

from __future__ import annotations

from typing import Any

import pytest

from dpctl import api
from dpctl.api import LogMsg
from e2e.recipe import (
    LOCAL_CLAIM_PREFIX,
    Kubectl,
    ServerPatch,
    annotations_of,
    cuda_visible_devices,
    is_sleeping,
    mkrs,
    name_of,
    unique_name,
)
from helpers import wait_for

from .conftest import Dpctlr, Gpus, T
from .steps import (
    assert_found_gpus_logged,
    assert_pair,
    both_gone_then_replaced,
    fresh,
    live_requesters,
    only_runners,
    pair_ready,
    scale_to_zero_keeps_sleeper,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def _volume_claim(runner: dict[str, Any], volume: str) -> str | None:
    for v in runner["spec"].get("volumes") or []:
        if v["name"] == volume:
            return str((v.get("persistentVolumeClaim") or {}).get("claimName"))
    return None


@pytest.mark.parametrize("form", ["model-flag", "node-volume"])
def test_example_1_requester_gets_a_runner_on_its_node_and_scaling_to_zero_leaves_a_sleeper(
    request: pytest.FixtureRequest,
    kubectl: Kubectl,
    dpctlr: Dpctlr,
    gpu_map: dict[str, dict[str, int]],
    form: str,
    requester_image: str,
) -> None:
    if form == "node-volume":
        request.getfixturevalue("claims")
    rs = unique_name()
    kubectl.apply(mkrs(rs, ServerPatch(model_form=form), image=requester_image))

    req, runner = pair_ready(kubectl, rs)
    assert name_of(runner) == name_of(req) + api.RUNNER_NAME_SUFFIX
    assert_pair(req, runner, gpu_map)
    assert_found_gpus_logged(dpctlr, req)
    assert dpctlr.count(LogMsg.CREATED_RUNNER, runner=name_of(runner)) == 1
    wait_for(
        lambda: dpctlr.count(LogMsg.RELAYED_READINESS, requester=name_of(req)) >= 1,
        T,
        f"{LogMsg.RELAYED_READINESS!r} for {name_of(req)}",
    )
    # "once the server-running Pod is marked as ready, its log shows that vLLM has completed starting up"
    assert "Application startup complete" in kubectl.run("logs", name_of(runner))
    if form == "node-volume":
        node = req["spec"]["nodeName"]
        assert _volume_claim(runner, "local") == LOCAL_CLAIM_PREFIX + node, "{{ .NodeName }} did not render"
        assert _volume_claim(runner, "shared") == _volume_claim(req, "shared")

    # Scale to 0: the requester goes, the runner stays as a sleeper (the limit, 2, allows it).
    scale_to_zero_keeps_sleeper(kubectl, dpctlr, rs, req, runner)
    assert only_runners(kubectl) == [name_of(runner)]


def test_example_2_runner_deletion_takes_the_requester_and_the_replacement_gets_a_new_pair(
    kubectl: Kubectl, dpctlr: Dpctlr, gpu_map: dict[str, dict[str, int]]
) -> None:
    rs = unique_name()
    kubectl.apply(mkrs(rs, ServerPatch()))
    req, runner = pair_ready(kubectl, rs)

    kubectl.delete_pod(name_of(runner))
    both_gone_then_replaced(kubectl, rs, req, runner, gpu_map)


def test_example_7_scale_up_on_the_same_gpu_wakes_and_binds_the_sleeping_runner(
    kubectl: Kubectl, dpctlr: Dpctlr, gpu_map: dict[str, dict[str, int]], gpus: Gpus, requester_image: str
) -> None:
    node = gpus.worker()
    gpus.leave_free(node, 1)  # the recipe pins to "a node with few GPUs"; here exactly one is free
    rs = unique_name()
    kubectl.apply(mkrs(rs, ServerPatch(), node_selector={api.HOSTNAME_LABEL: node}, image=requester_image))
    req, runner = pair_ready(kubectl, rs)
    assert_pair(req, runner, gpu_map)
    uuids = annotations_of(req)[api.ACCELERATORS_ANNOTATION]

    scale_to_zero_keeps_sleeper(kubectl, dpctlr, rs, req, runner)
    relayed_before = dpctlr.count(LogMsg.RELAYED_READINESS)

    kubectl.scale(rs, 1)
    req2, runner2 = pair_ready(kubectl, rs)
    assert name_of(req2) != name_of(req)
    # The same GPU ("Found GPUs" shows the same gpuUUIDs), so the same runner, woken: no new one.
    assert annotations_of(req2)[api.ACCELERATORS_ANNOTATION] == uuids
    assert_found_gpus_logged(dpctlr, req2)
    assert runner2["metadata"]["uid"] == runner["metadata"]["uid"]
    assert only_runners(kubectl) == [name_of(runner)]
    assert dpctlr.count(LogMsg.CREATED_RUNNER) == 1
    assert dpctlr.count(LogMsg.BOUND_RUNNER, requester=name_of(req2), runner=name_of(runner)) == 1
    assert dpctlr.count(LogMsg.WOKE, runner=name_of(runner)) >= 1
    wait_for(
        lambda: dpctlr.count(LogMsg.RELAYED_READINESS) > relayed_before,
        T,
        f"a new {LogMsg.RELAYED_READINESS!r}",
    )
    assert not is_sleeping(kubectl, runner2, direct=dpctlr.cluster.is_local)
    assert_pair(req2, fresh(kubectl, runner2), gpu_map)


def test_a_requester_of_two_gpus_gets_a_runner_that_sees_both(
    kubectl: Kubectl, dpctlr: Dpctlr, gpu_map: dict[str, dict[str, int]], gpu_ledger: Any
) -> None:
    rs = unique_name()
    kubectl.apply(mkrs(rs, ServerPatch(), gpus=2))
    req, runner = pair_ready(kubectl, rs)
    assert_pair(req, runner, gpu_map)
    uuids = annotations_of(req)[api.ACCELERATORS_ANNOTATION].split(",")
    assert len(set(uuids)) == 2, uuids
    indices = cuda_visible_devices(runner).split(",")
    assert len(set(indices)) == 2, f"CUDA_VISIBLE_DEVICES={cuda_visible_devices(runner)!r}"
    if gpu_ledger is not None:  # the emulated vLLM holds both GPUs, awake
        held = {
            h.gpu for h in gpu_ledger.holds() if h.holder.pod_uid == runner["metadata"]["uid"] and h.awake
        }
        assert held == set(uuids), held

    sleeper = scale_to_zero_keeps_sleeper(kubectl, dpctlr, rs, req, runner)
    if gpu_ledger is not None:
        asleep = {h.gpu for h in gpu_ledger.holds() if h.holder.pod_uid == sleeper["metadata"]["uid"]}
        assert asleep == set(uuids)
        assert not [
            h for h in gpu_ledger.holds() if h.holder.pod_uid == sleeper["metadata"]["uid"] and h.awake
        ]


def test_a_runner_without_sleep_mode_is_deleted_on_unbind_instead_of_put_to_sleep(
    kubectl: Kubectl, dpctlr: Dpctlr, gpu_map: dict[str, dict[str, int]]
) -> None:
    rs = unique_name()
    kubectl.apply(mkrs(rs, ServerPatch(sleep_mode=False)))
    req, runner = pair_ready(kubectl, rs)
    assert_pair(req, runner, gpu_map)

    kubectl.scale(rs, 0)
    wait_for(
        lambda: kubectl.pod(name_of(req)) is None and kubectl.pod(name_of(runner)) is None,
        T,
        "the requester gone and its runner deleted",
    )
    assert not live_requesters(kubectl, rs)
    assert only_runners(kubectl) == []
    deleted = dpctlr.lines("Deleted server-running Pod", runner=name_of(runner))
    assert deleted and "no-sleep-mode" in deleted[-1], deleted
    assert dpctlr.count(LogMsg.SLEPT, runner=name_of(runner)) == 0
    assert dpctlr.count(LogMsg.UNBOUND_RUNNER, runner=name_of(runner)) == 0
