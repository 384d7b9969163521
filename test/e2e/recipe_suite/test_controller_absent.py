"""Recipe Example 3 (deletions while the controller is not running) and a controller restart in
the middle of a wake: whatever happened while no controller ran, or was cut short by its death,
the next controller finishes from what the API server holds (contract invariant 5).
"""

from __future__ import annotations

from typing import Any

import pytest

from dpctl import api
from dpctl.api import LogMsg
from e2e.recipe import (
    Kubectl,
    ServerPatch,
    annotations_of,
    deleting,
    is_sleeping,
    mkrs,
    name_of,
    unique_name,
)
from helpers import wait_for

from .conftest import Dpctlr, Gpus, T, skip_unless_local
from .steps import (
    assert_found_gpus_logged,
    assert_in_order,
    assert_pair,
    both_gone_then_replaced,
    fresh,
    live_requesters,
    only_runners,
    pair_ready,
    scale_to_zero_keeps_sleeper,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def test_example_3_requester_deleted_while_the_controller_is_uninstalled_is_released_after_reinstall(
    kubectl: Kubectl, dpctlr: Dpctlr, gpu_map: dict[str, dict[str, int]]
) -> None:
    rs = unique_name()
    kubectl.apply(mkrs(rs, ServerPatch()))
    req, runner = pair_ready(kubectl, rs)

    dpctlr.uninstall()
    kubectl.scale(rs, 0)
    # Nobody releases the requester's finalizer: it waits, Terminating; its runner stays bound.
    wait_for(lambda: deleting(fresh(kubectl, req)), T, "the requester marked for deletion")
    held = fresh(kubectl, runner)
    assert annotations_of(held).get(api.REQUESTER_ANNOTATION, "").startswith(req["metadata"]["uid"])

    dpctlr.install()
    # Example 1's ending, finished by the new controller: the requester goes, the runner sleeps.
    sleeper = wait_for(
        lambda: (
            kubectl.pod(name_of(req)) is None
            and (r := kubectl.pod(name_of(runner))) is not None
            and api.REQUESTER_ANNOTATION not in annotations_of(r)
            and r
        ),
        T,
        "the requester gone and its runner unbound",
    )
    assert not sleeper["metadata"].get("finalizers")
    assert sleeper["metadata"]["labels"].get(api.SLEEPING_LABEL) == "true"
    assert is_sleeping(kubectl, sleeper, direct=dpctlr.cluster.is_local)
    # The log of the reinstalled controller tells the story (the first one had stopped before).
    assert dpctlr.count(LogMsg.UNBOUND_RUNNER, runner=name_of(runner)) == 1
    assert_in_order(
        dpctlr.current_log(),
        ("Caches synced", {}),
        (LogMsg.SLEPT, {"runner": name_of(runner)}),
        (LogMsg.UNBOUND_RUNNER, {"runner": name_of(runner)}),
        (LogMsg.END_OF_LIFE, {"requesterUID": req["metadata"]["uid"]}),
    )
    assert only_runners(kubectl) == [name_of(runner)]


def test_example_3_runner_deleted_while_the_controller_is_uninstalled_takes_its_requester_after_reinstall(
    kubectl: Kubectl, dpctlr: Dpctlr, gpu_map: dict[str, dict[str, int]]
) -> None:
    rs = unique_name()
    kubectl.apply(mkrs(rs, ServerPatch()))
    req, runner = pair_ready(kubectl, rs)

    dpctlr.uninstall()
    kubectl.delete_pod(name_of(runner))
    wait_for(lambda: deleting(fresh(kubectl, runner)), T, "the runner marked for deletion")
    assert not deleting(fresh(kubectl, req)), "nothing deletes the requester while no controller runs"

    dpctlr.install()
    # Then as in Example 2.
    both_gone_then_replaced(kubectl, rs, req, runner, gpu_map)


def test_a_controller_killed_while_waking_a_sleeper_is_replaced_by_one_that_finishes_the_wake(
    cluster: Any, kubectl: Kubectl, dpctlr: Dpctlr, gpu_map: dict[str, dict[str, int]], gpus: Gpus
) -> None:
    skip_unless_local(cluster, "a slow wake (the vLLM emulator's VLLM_EMULATOR_WAKE_DELAY)")
    node = gpus.worker()
    gpus.leave_free(node, 1)
    rs = unique_name()
    wake_s = 10  # long enough to see it start in the log and kill the controller before it ends
    kubectl.apply(
        mkrs(
            rs,
            ServerPatch(extra_env={"VLLM_EMULATOR_WAKE_DELAY": str(wake_s)}),
            node_selector={api.HOSTNAME_LABEL: node},
        )
    )
    req, runner = pair_ready(kubectl, rs)
    scale_to_zero_keeps_sleeper(kubectl, dpctlr, rs, req, runner)

    kubectl.scale(rs, 1)
    (req2,) = wait_for(lambda: live_requesters(kubectl, rs), T, "the new requester")
    # The controller logs the binding, then calls /wake_up, which takes wake_s seconds.
    wait_for(
        lambda: dpctlr.count(LogMsg.BOUND_RUNNER, requester=name_of(req2)) == 1,
        T,
        f"{LogMsg.BOUND_RUNNER!r} for {name_of(req2)}",
    )
    assert dpctlr.count(LogMsg.WOKE, runner=name_of(runner)) == 0, "the wake ended before the kill"
    assert is_sleeping(kubectl, fresh(kubectl, runner))
    dpctlr.kill(grace_s=1)

    req2, runner2 = pair_ready(kubectl, rs)
    assert runner2["metadata"]["uid"] == runner["metadata"]["uid"], "the sleeper was not the one bound"
    assert only_runners(kubectl) == [name_of(runner)], "a second runner was made"
    assert dpctlr.count(LogMsg.CREATED_RUNNER) == 1
    assert not is_sleeping(kubectl, runner2)
    assert_pair(req2, runner2, gpu_map)
    assert_found_gpus_logged(dpctlr, req2)
    # The new controller found the binding in the API (it never bound anything itself).
    assert LogMsg.BOUND_RUNNER not in dpctlr.current_log()
    assert LogMsg.RELAYED_READINESS in dpctlr.current_log()
