"""The decision of contract §5, one row per case, in §5's order of precedence."""

from __future__ import annotations

from typing import Any

import pytest

from dpctl import api
from dpctl.dualpods import decide
from dpctl.dualpods.decide import (
    Actuate,
    AwaitNode,
    DeleteOnCordon,
    Forget,
    ReflectRunnerDeletion,
    RefuseTwoDialects,
    Release,
    ServeBound,
)

from .fakes import node, requester, runner

REQ, RUN, NODE = requester(), runner(), node()
GOING_REQ, GOING_RUN = requester(deleting=True), runner(deleting=True)
BOTH = {api.HEAD.server_patch: "spec: {}"}

ROWS = [
    pytest.param(None, None, None, Forget, id="neither-pod-exists-forget"),
    pytest.param(REQ, GOING_RUN, NODE, ReflectRunnerDeletion, id="runner-deleted-reflects-first"),
    pytest.param(GOING_REQ, GOING_RUN, NODE, ReflectRunnerDeletion, id="both-going-runner-deletion-wins"),
    pytest.param(None, GOING_RUN, None, ReflectRunnerDeletion, id="requester-gone-runner-going"),
    pytest.param(None, RUN, None, Release, id="requester-gone-releases"),
    pytest.param(GOING_REQ, RUN, NODE, Release, id="requester-going-releases"),
    pytest.param(GOING_REQ, None, NODE, Release, id="requester-going-without-runner"),
    pytest.param(
        requester(deleting=True, annotations=BOTH), RUN, NODE, Release, id="going-with-both-releases"
    ),
    pytest.param(requester(annotations=BOTH), RUN, NODE, RefuseTwoDialects, id="both-server-patches-refused"),
    pytest.param(
        requester(node=None, annotations=BOTH), None, None, RefuseTwoDialects, id="both-refused-even-unplaced"
    ),
    pytest.param(requester(dialect=api.HEAD), None, NODE, Actuate, id="head-requester-actuated"),
    pytest.param(requester(node=None), None, None, AwaitNode, id="not-scheduled-yet"),
    pytest.param(REQ, None, None, AwaitNode, id="node-not-in-cache"),
    pytest.param(REQ, RUN, node(deleting=True), AwaitNode, id="node-departing"),
    pytest.param(REQ, RUN, NODE, ServeBound, id="bound-pair-served"),
    pytest.param(
        REQ, RUN, node(unschedulable=True), ServeBound, id="bound-pair-on-cordoned-node-still-served"
    ),
    pytest.param(REQ, None, node(unschedulable=True), DeleteOnCordon, id="unbound-on-cordoned-node-deleted"),
    pytest.param(REQ, None, NODE, Actuate, id="unbound-requester-actuated"),
]


@pytest.mark.parametrize(("req", "run", "nod", "step"), ROWS)
def test_each_case_of_section_5_gets_its_step(req: Any, run: Any, nod: Any, step: type) -> None:
    assert type(decide.decide(req, run, nod)) is step


def test_actuation_carries_the_node_and_its_labels() -> None:
    labelled = node()
    labelled["metadata"]["labels"] = {"zone": "a"}
    assert decide.decide(REQ, None, labelled) == Actuate(REQ, "node-1", {"zone": "a"})


def test_the_oldest_bound_runner_is_the_one_and_live_younger_ones_are_duplicates() -> None:
    old, young, going = runner("r-old"), runner("r-young"), runner("r-going", deleting=True)
    old["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    young["metadata"]["creationTimestamp"] = "2026-01-01T00:01:00Z"
    going["metadata"]["creationTimestamp"] = "2026-01-01T00:02:00Z"
    assert decide.the_runner([young, going, old]) == (old, [young])
    assert decide.the_runner([]) == (None, [])
