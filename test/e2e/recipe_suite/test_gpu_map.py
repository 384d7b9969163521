"""Recipe Example 4: the ``gpu-map`` ConfigMap made too late.

Without the map the controller cannot turn the requester's GPU UUIDs into the indices the runner
needs: it says so in the requester's status annotation, logs it once and stops (no runner, no
tight retry loop, contract invariant 6). Running the recipe's script then lets it go on.
"""

from __future__ import annotations

import pytest

from dpctl import api
from dpctl.api import LogMsg
from e2e.recipe import Kubectl, ServerPatch, mkrs, name_of, status_errors, unique_name
from helpers import wait_for

from .conftest import Dpctlr, GpuMapScript, T
from .steps import assert_found_gpus_logged, assert_pair, live_requesters, only_runners, pair_ready

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

CANNOT_SERVE = "Server-requesting Pod cannot be served"


def test_example_4_without_gpu_map_no_runner_is_made_and_the_map_script_lets_it_proceed(
    kubectl: Kubectl, dpctlr: Dpctlr, gpu_map_script: GpuMapScript
) -> None:
    assert kubectl.run("get", "configmap", api.GPU_MAP_NAME, "--ignore-not-found").strip() == ""
    rs = unique_name()
    kubectl.apply(mkrs(rs, ServerPatch()))

    (req,) = wait_for(
        lambda: [r for r in live_requesters(kubectl, rs) if status_errors(r)],
        T,
        "a status error on the requester",
    )
    (error,) = status_errors(req)
    assert api.GPU_MAP_NAME in error and "ensure-nodes-mapped" in error, error
    assert_found_gpus_logged(dpctlr, req)  # it got as far as asking the stub
    # "Examine the controller's log to see that it has stopped making progress": once it has
    # processed everything, there is still no runner and the problem was logged once, not in a loop.
    dpctlr.wait_processed(0, "the requester")
    assert only_runners(kubectl) == []
    assert dpctlr.count(CANNOT_SERVE, requester=name_of(req)) == 1

    # "Then run the script to create and populate the gpu-map ConfigMap."
    mapped = gpu_map_script.run()
    assert req["spec"]["nodeName"] in mapped
    req2, runner = pair_ready(kubectl, rs)
    assert name_of(req2) == name_of(req), "the same requester is served; nothing was recreated"
    assert name_of(runner) == name_of(req) + api.RUNNER_NAME_SUFFIX
    assert_pair(req2, runner, mapped)
    assert dpctlr.count(LogMsg.CREATED_RUNNER, runner=name_of(runner)) == 1
    # While the script writes the map Node by Node, the controller may see it without this Node
    # for a moment and say so; each problem is logged once, never repeated.
    problems = dpctlr.lines(CANNOT_SERVE, requester=name_of(req))
    assert len(problems) == len({line.split(" reason=", 1)[-1] for line in problems}), problems
