"""A runner always runs on its requester's Node: one row per PodSpec field that places a Pod.

Each row is a server patch (or a requester field the runner inherits), built for Node
``gpu-node-1`` with its labels; the row says whether the build succeeds, and if not, which
field the status error names. The rows mirror the table in :mod:`dpctl.podbuild.placement`.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from dpctl.api import HOSTNAME_LABEL, ORIGINAL
from dpctl.podbuild import BuildError, build_runner

NODE = "gpu-node-1"
LABELS = {HOSTNAME_LABEL: NODE, "nvidia.com/gpu.product": "H100", "zone": "a", "gpus": "8"}
SERVER = {
    "name": "inference-server",
    "image": "vllm",
    "readinessProbe": {"httpGet": {"path": "/h", "port": 8000}},
}


def requester(patch_spec: dict[str, Any], **spec: Any) -> dict[str, Any]:
    patch = yaml.safe_dump({"spec": {"containers": [SERVER], **patch_spec}})
    return {
        "metadata": {
            "name": "req",
            "namespace": "ns",
            "uid": "u-1",
            "annotations": {ORIGINAL.server_patch: patch},
        },
        "spec": {"nodeName": NODE, "containers": [{"name": "inference-server", "image": "stub"}], **spec},
    }


def required(*terms: dict[str, Any]) -> dict[str, Any]:
    return {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}
            }
        }
    }


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    return {"matchExpressions": [{"key": key, "operator": operator, "values": list(values)}]}


ALLOWED = [
    pytest.param({}, id="nothing-about-placement"),
    pytest.param({"nodeName": NODE}, id="nodeName-the-requesters-node"),
    pytest.param({"nodeSelector": {HOSTNAME_LABEL: NODE}}, id="hostname-selector-the-requesters-node"),
    pytest.param({"nodeSelector": {"nvidia.com/gpu.product": "H100"}}, id="selector-the-node-matches"),
    pytest.param(required(expr(HOSTNAME_LABEL, "In", NODE)), id="required-affinity-admits-the-node"),
    pytest.param(required(expr("zone", "In", "b"), expr("zone", "In", "a")), id="one-of-ored-terms-admits"),
    pytest.param(required(expr("gpus", "Gt", "4")), id="required-gt-admits"),
    pytest.param(
        required({"matchFields": [{"key": "metadata.name", "operator": "In", "values": [NODE]}]}),
        id="required-matchFields-the-node",
    ),
    pytest.param(
        {
            "affinity": {
                "nodeAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 1, "preference": expr(HOSTNAME_LABEL, "In", "gpu-node-2")}
                    ]
                }
            }
        },
        id="preferred-affinity-elsewhere-cannot-beat-the-pin",
    ),
    pytest.param(
        {
            "affinity": {
                "podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": {"x": "y"}}, "topologyKey": HOSTNAME_LABEL}
                    ]
                }
            }
        },
        id="pod-anti-affinity-never-moves-it",
    ),
    pytest.param(
        {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}, id="tolerations-only-permit"
    ),
    pytest.param(
        {
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}
            ]
        },
        id="topology-spread-never-moves-it",
    ),
    pytest.param({"schedulerName": "default-scheduler"}, id="the-default-scheduler"),
]

REFUSED = [
    pytest.param({"nodeName": "gpu-node-2"}, "spec.nodeName is 'gpu-node-2'", id="nodeName-another-node"),
    pytest.param(
        {"nodeSelector": {HOSTNAME_LABEL: "gpu-node-2"}},
        "spec.nodeSelector['kubernetes.io/hostname'] is 'gpu-node-2'",
        id="hostname-selector-another-node",
    ),
    pytest.param(
        {"nodeSelector": {"nvidia.com/gpu.product": "A100"}},
        "spec.nodeSelector['nvidia.com/gpu.product'] is 'A100', but the Node's label is 'H100'",
        id="selector-the-node-does-not-match",
    ),
    pytest.param(
        required(expr(HOSTNAME_LABEL, "In", "gpu-node-2")),
        "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution does not admit Node 'gpu-node-1'",
        id="required-affinity-another-node",
    ),
    pytest.param(
        required(expr(HOSTNAME_LABEL, "NotIn", NODE)),
        "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution",
        id="required-affinity-excludes-the-node",
    ),
    pytest.param(
        required(expr("zone", "DoesNotExist")),
        "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution",
        id="required-affinity-label-must-be-absent",
    ),
    pytest.param(
        required({"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": [NODE]}]}),
        "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution",
        id="required-matchFields-excludes-the-node",
    ),
    pytest.param(
        {"schedulerName": "my-scheduler"},
        "spec.schedulerName is 'my-scheduler'",
        id="another-scheduler",
    ),
]


@pytest.mark.parametrize("spec", ALLOWED)
def test_placement_that_keeps_the_runner_on_the_requesters_node_builds(spec: dict[str, Any]) -> None:
    runner = build_runner(requester(spec), NODE, [0], [], LABELS)
    assert runner.pod["spec"]["nodeSelector"][HOSTNAME_LABEL] == NODE
    assert "nodeName" not in runner.pod["spec"]  # the scheduler places it by its node selector


@pytest.mark.parametrize(("spec", "field"), REFUSED)
def test_placement_elsewhere_is_a_build_error_naming_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(BuildError) as caught:
        build_runner(requester(spec), NODE, [0], [], LABELS)
    message = str(caught.value)
    assert message.startswith(f"{ORIGINAL.server_patch}: {field}")
    assert f"must run on the requester's Node '{NODE}'" in message or "scheduler" in message


def test_a_requester_field_the_runner_inherits_is_checked_like_the_patch() -> None:
    """The requester's own required affinity, no longer met since the Node's labels changed."""
    inherited = requester({}, **required(expr("zone", "In", "b")))
    with pytest.raises(BuildError, match=r"spec\.affinity\.nodeAffinity"):
        build_runner(inherited, NODE, [0], [], LABELS)


def test_the_requesters_own_scheduler_is_kept() -> None:
    runner = build_runner(requester({}, schedulerName="gpu-scheduler"), NODE, [0], [], LABELS)
    assert runner.pod["spec"]["schedulerName"] == "gpu-scheduler"


@pytest.mark.parametrize(
    ("spec", "builds"),
    [
        pytest.param({"nodeName": "gpu-node-2"}, False, id="nodeName"),
        pytest.param({"nodeSelector": {HOSTNAME_LABEL: "gpu-node-2"}}, False, id="hostname-selector"),
        pytest.param(required(expr(HOSTNAME_LABEL, "In", "gpu-node-2")), False, id="hostname-affinity"),
        pytest.param({"nodeSelector": {"nvidia.com/gpu.product": "A100"}}, True, id="other-label-unknown"),
        pytest.param(required(expr("zone", "In", "b")), True, id="other-label-affinity-unknown"),
    ],
)
def test_without_the_nodes_labels_only_what_its_name_decides_is_checked(
    spec: dict[str, Any], builds: bool
) -> None:
    if builds:
        build_runner(requester(spec), NODE, [0], [])
    else:
        with pytest.raises(BuildError):
            build_runner(requester(spec), NODE, [0], [])
