"""The kubelet's admission predicates and what follows a container's exit, as tables (both pure)."""

from __future__ import annotations

from typing import Any

import pytest

from dpsim.kubelet.admission import predicate_failure
from dpsim.kubelet.containers import ContainerRecord, CrashBackoff

LABELS = {"kubernetes.io/hostname": "node-1", "zone": "a"}
OUT_OF_GPUS = (
    "OutOfnvidia.com/gpu",
    "Node didn't have enough resource: nvidia.com/gpu, requested: 2, used: 3, capacity: 4",
)
NODE_AFFINITY = (
    "NodeAffinity",
    "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector",
)


def spec(gpus: int = 0, **more: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "c"}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    return {"containers": [container], **more}


@pytest.mark.parametrize(
    ("the_spec", "free", "expected"),
    [
        (spec(gpus=2), 2, None),
        (spec(gpus=2), 1, OUT_OF_GPUS),
        (spec(), 0, None),  # no GPUs asked: a full node admits it
        (spec(nodeSelector={"zone": "b"}), 4, NODE_AFFINITY),
        (spec(gpus=2, nodeSelector={"zone": "b"}), 1, OUT_OF_GPUS),  # resources are checked first
        (spec(nodeSelector={"zone": "a"}), 4, None),
    ],
    ids=["fits", "out-of-gpus", "no-gpus", "node-affinity", "resources-first", "selector-matches"],
)
def test_predicate_failure(the_spec: dict[str, Any], free: int, expected: tuple[str, str] | None) -> None:
    assert predicate_failure(the_spec, "node-1", LABELS, 4, free) == expected


@pytest.mark.parametrize(
    ("init", "policy", "stopping", "code", "expected", "final"),
    [
        (False, "Always", False, 0, 0.0, False),
        (False, "OnFailure", False, 0, None, True),
        (False, "OnFailure", False, 1, 0.0, False),
        (False, "Never", False, 1, None, True),
        (False, "Always", True, 1, None, True),
        (True, "Never", False, 0, 0.0, True),  # an init container that succeeded: the next one runs
        (True, "Never", False, 1, None, True),
        (True, "Always", False, 1, 0.0, False),
    ],
    ids=[
        "always-restarts",
        "on-failure-success-ends",
        "on-failure-failure-restarts",
        "never-ends",
        "stopping-ends",
        "init-success",
        "init-failure-never",
        "init-failure-restarts",
    ],
)
def test_after_exit(
    init: bool, policy: str, stopping: bool, code: int, expected: float | None, final: bool
) -> None:
    r = ContainerRecord("c", "img", CrashBackoff(1.0, 8.0), init=init)
    assert r.after_exit(policy, stopping, code, 0.0, 10.0) == expected
    assert r.final is final
