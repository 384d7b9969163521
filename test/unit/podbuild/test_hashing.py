"""The nominal hash: canonical, stable, and blind to which requester asked."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import pytest

from dpctl.api import ORIGINAL
from dpctl.podbuild.hashing import canonical_json, nominal_hash, short_hash
from dpctl.podbuild.nominal import build_runner

POD = {
    "spec": {
        "containers": [{"name": "inference-server", "image": "vllm", "env": [{"name": "É", "value": "ü"}]}]
    },
    "metadata": {"labels": {"b": "1", "a": "2"}},
}


def test_canonical_json() -> None:
    assert (
        canonical_json(POD)
        == (
            '{"metadata":{"labels":{"a":"2","b":"1"}},"spec":{"containers":'
            '[{"env":[{"name":"É","value":"ü"}],"image":"vllm","name":"inference-server"}]}}'
        ).encode()
    )
    with pytest.raises(ValueError, match="JSON compliant"):
        canonical_json({"a": float("nan")})


def test_golden_value() -> None:
    """Changing this value strands every sleeping runner; bump NOMINAL_HASH_VERSION on purpose."""
    assert nominal_hash(POD, "gpu-node-1", [0, 1]) == "UVXOY0rnG4piqB3c5QTmZjDytHZO35xBILCdjxq8204"


def test_is_a_valid_annotation_and_label_value() -> None:
    value = nominal_hash(POD, "n", [0])
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", value)


def test_key_order_does_not_matter() -> None:
    reordered = {"metadata": {"labels": {"a": "2", "b": "1"}}, "spec": POD["spec"]}
    assert nominal_hash(reordered, "gpu-node-1", [0, 1]) == nominal_hash(POD, "gpu-node-1", [0, 1])


@pytest.mark.parametrize(
    ("pod", "node", "gpus"),
    [
        pytest.param(POD, "gpu-node-2", [0, 1], id="node"),
        pytest.param(POD, "gpu-node-1", [0], id="fewer-gpus"),
        pytest.param(POD, "gpu-node-1", [1, 0], id="gpu-order"),
        pytest.param({**POD, "metadata": {"labels": {"a": "2"}}}, "gpu-node-1", [0, 1], id="labels"),
    ],
)
def test_depends_on(pod: dict[str, Any], node: str, gpus: list[int]) -> None:
    assert nominal_hash(pod, node, gpus) != nominal_hash(POD, "gpu-node-1", [0, 1])


def test_short_hash() -> None:
    assert short_hash("6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f") == "74b61"
    assert short_hash("x", 8) == "2d711642"


# Through build_runner: what the requester contributes to the hash.


def other_requester(requester: dict[str, Any]) -> dict[str, Any]:
    """The same ReplicaSet's next Pod: new name and UID, another controller-owned label value."""
    other = copy.deepcopy(requester)
    other["metadata"] |= {"name": "my-request-12-00-00-zz9zz", "uid": "11111111-2222-4333-8444-555555555555"}
    other["metadata"]["labels"]["dual-pods.llm-d.ai/dual"] = "my-request-12-00-00-x7k2p-server"
    other["metadata"]["annotations"]["dual-pod.llm-d.ai/status"] = '{"Errors":[]}'
    other["spec"]["volumes"][0]["name"] = other["spec"]["containers"][0]["volumeMounts"][0]["name"] = (
        "kube-api-access-zzzzz"
    )
    return other


def test_does_not_depend_on_the_requester_identity(data: Callable[[str], Any]) -> None:
    requester = data("requester-simple.yaml")
    first = build_runner(requester, "gpu-node-1", [3], ["GPU-a"])
    second = build_runner(other_requester(requester), "gpu-node-1", [3], ["GPU-b"])
    assert first.nominal_hash == second.nominal_hash
    assert first.name != second.name


def test_does_not_depend_on_gpu_order_given(data: Callable[[str], Any]) -> None:
    requester = data("requester-simple.yaml")
    assert (
        build_runner(requester, "gpu-node-1", [3, 1], []).nominal_hash
        == build_runner(requester, "gpu-node-1", [1, 3], []).nominal_hash
    )


@pytest.mark.parametrize(
    ("node", "gpus", "patch_change"),
    [
        pytest.param("gpu-node-2", [3], None, id="node"),
        pytest.param("gpu-node-1", [2], None, id="gpu"),
        pytest.param(
            "gpu-node-1", [3], ("--gpu-memory-utilization=0.8", "--gpu-memory-utilization=0.7"), id="patch"
        ),
    ],
)
def test_depends_on_node_gpus_and_patch(
    data: Callable[[str], Any], node: str, gpus: list[int], patch_change: tuple[str, str] | None
) -> None:
    requester = data("requester-simple.yaml")
    changed = copy.deepcopy(requester)
    if patch_change is not None:
        annotations = changed["metadata"]["annotations"]
        annotations[ORIGINAL.server_patch] = annotations[ORIGINAL.server_patch].replace(*patch_change)
    assert (
        build_runner(changed, node, gpus, []).nominal_hash
        != build_runner(requester, "gpu-node-1", [3], []).nominal_hash
    )
