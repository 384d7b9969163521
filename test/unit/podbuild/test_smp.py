"""Strategic merge patch: the replayable case table, the rest of the directives, and properties."""

from __future__ import annotations

import contextlib
import copy
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from dpctl.podbuild.smp import NODE_SCHEMA, POD_SCHEMA, MergeList, PatchError, strategic_merge_patch

CASES: list[dict[str, Any]] = yaml.safe_load((Path(__file__).parent / "smp_cases.yaml").read_text("utf-8"))


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_case_table(case: dict[str, Any]) -> None:
    if "error" in case:
        with pytest.raises(PatchError) as caught:
            strategic_merge_patch(case["original"], case["patch"])
        assert case["error"] in str(caught.value)
    else:
        assert strategic_merge_patch(case["original"], case["patch"]) == case["expected"]


def test_case_table_is_well_formed() -> None:
    names = [case["name"] for case in CASES]
    assert len(names) == len(set(names))
    for case in CASES:
        assert set(case) in (
            {"name", "original", "patch", "expected"},
            {"name", "original", "patch", "error"},
        )


def pod(**spec: Any) -> dict[str, Any]:
    return {"spec": {"containers": [{"name": "main", "image": "busybox"}], **spec}}


@pytest.mark.parametrize(
    ("original", "patch", "expected"),
    [
        pytest.param(
            pod(nodeSelector={"a": "b"}),
            {"spec": {"nodeSelector": ["x"]}},
            pod(nodeSelector=["x"]),
            id="type-mismatch-replaces",
        ),
        pytest.param(
            pod(volumes=[{"name": "v", "emptyDir": {}}]),
            {"spec": {"volumes": [{"name": "v", "emptyDir": None, "hostPath": {"path": "/x"}}]}},
            pod(volumes=[{"name": "v", "hostPath": {"path": "/x"}}]),
            id="null-inside-a-merged-item",
        ),
        pytest.param(
            pod(
                ephemeralContainers=[
                    {"name": "dbg", "image": "busybox", "env": [{"name": "A", "value": "1"}]}
                ]
            ),
            {"spec": {"ephemeralContainers": [{"name": "dbg", "env": [{"name": "B", "value": "2"}]}]}},
            pod(
                ephemeralContainers=[
                    {
                        "name": "dbg",
                        "image": "busybox",
                        "env": [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}],
                    }
                ]
            ),
            id="ephemeral-containers-env-merges",
        ),
        pytest.param(
            pod(
                volumes=[
                    {"name": "e", "ephemeral": {"volumeClaimTemplate": {"metadata": {"finalizers": ["x"]}}}},
                ]
            ),
            {
                "spec": {
                    "volumes": [
                        {
                            "name": "e",
                            "ephemeral": {"volumeClaimTemplate": {"metadata": {"finalizers": ["y"]}}},
                        }
                    ]
                }
            },
            pod(
                volumes=[
                    {
                        "name": "e",
                        "ephemeral": {"volumeClaimTemplate": {"metadata": {"finalizers": ["y", "x"]}}},
                    }
                ]
            ),
            id="finalizers-of-an-ephemeral-volume-claim-template-merge",
        ),
        pytest.param(
            {
                "status": {
                    "conditions": [
                        {"type": "Ready", "status": "False"},
                        {"type": "PodScheduled", "status": "True"},
                    ]
                }
            },
            {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
            {
                "status": {
                    "conditions": [
                        {"type": "Ready", "status": "True"},
                        {"type": "PodScheduled", "status": "True"},
                    ]
                }
            },
            id="status-conditions-merge-by-type",
        ),
        pytest.param(
            {"status": {"containerStatuses": [{"name": "a", "ready": False}, {"name": "b", "ready": False}]}},
            {"status": {"containerStatuses": [{"name": "a", "ready": True}]}},
            {"status": {"containerStatuses": [{"name": "a", "ready": True}]}},
            id="container-statuses-are-atomic",
        ),
        pytest.param(
            {"metadata": {"finalizers": ["a", "b"]}},
            {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["c"]}},
            {"metadata": {"finalizers": ["c", "b"]}},
            id="primitive-delete-applies-after-merge",
        ),
        pytest.param(
            {"metadata": {}},
            {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}},
            {"metadata": {}},
            id="primitive-delete-of-an-absent-list",
        ),
        pytest.param(
            {"metadata": {"finalizers": ["a", "b", "c"]}},
            {"metadata": {"$setElementOrder/finalizers": ["c", "a", "b"]}},
            {"metadata": {"finalizers": ["c", "a", "b"]}},
            id="set-element-order-of-scalars",
        ),
        pytest.param(
            {"metadata": {"finalizers": ["a", "a", "b"]}},
            {"metadata": {"finalizers": ["b"]}},
            {"metadata": {"finalizers": ["a", "b"]}},
            id="scalar-merge-deduplicates",
        ),
        pytest.param(
            pod(),
            {"$patch": "replace", "spec": {"containers": []}},
            {"spec": {"containers": []}},
            id="replace-at-the-top-level",
        ),
        pytest.param(
            pod(containers=[{"name": "main", "ports": [{"containerPort": 80}]}]),
            {"spec": {"containers": [{"name": "main", "ports": [{"containerPort": 80.0, "name": "web"}]}]}},
            pod(containers=[{"name": "main", "ports": [{"containerPort": 80, "name": "web"}]}]),
            id="merge-key-numbers-compare-as-json",
        ),
    ],
)
def test_more_cases(original: dict[str, Any], patch: dict[str, Any], expected: dict[str, Any]) -> None:
    assert strategic_merge_patch(original, patch) == expected


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        pytest.param(
            {"spec": {"$retainKeys": "name"}}, "spec: $retainKeys must be a list", id="retain-keys-not-a-list"
        ),
        pytest.param(
            {"spec": {"$setElementOrder/containers": {"name": "main"}}},
            "must be a list",
            id="set-element-order-not-a-list",
        ),
        pytest.param(
            {"spec": {"$setElementOrder/containers": ["main"]}},
            "spec.containers.$setElementOrder/containers[0]: must be an object",
            id="set-element-order-without-keys",
        ),
        pytest.param(
            {"spec": {"$setElementOrder/": []}}, "malformed directive", id="set-element-order-no-field"
        ),
        pytest.param(
            {"metadata": {"$deleteFromPrimitiveListfinalizers": ["a"]}},
            "malformed directive",
            id="delete-from-primitive-list-no-slash",
        ),
        pytest.param(
            {"spec": {"containers": [{"name": "main", "$patch": "bogus"}]}},
            "unknown $patch value 'bogus' in a list",
            id="bad-list-directive",
        ),
        pytest.param({"spec": {"containers": ["main"]}}, "not all of one type", id="mixed-item-types"),
        pytest.param({"metadata": {"finalizers": [["a"]]}}, "lists of lists", id="list-of-lists"),
        pytest.param({"metadata": {"finalizers": [None]}}, "null items", id="null-items"),
        pytest.param(
            {"metadata": {"finalizers": [{"a": 1}]}}, "not all of one type", id="object-in-a-scalar-set"
        ),
    ],
)
def test_errors(patch: dict[str, Any], message: str) -> None:
    original = {"metadata": {"finalizers": ["a"]}, **pod()}
    with pytest.raises(PatchError) as caught:
        strategic_merge_patch(original, patch)
    assert message in str(caught.value)


def test_values_json_cannot_express_are_refused() -> None:
    with pytest.raises(PatchError, match="not valid JSON"):
        strategic_merge_patch({}, {"metadata": {"labels": {"a": {1, 2}}}})
    with pytest.raises(PatchError, match="keys must be strings"):
        strategic_merge_patch({}, {"metadata": {"labels": {1: "a"}}})


def test_node_schema() -> None:
    node = {
        "spec": {"podCIDRs": ["10.0.0.0/24"]},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": "10.0.0.5"},
                {"type": "Hostname", "address": "n1"},
            ],
            "conditions": [{"type": "Ready", "status": "False"}],
        },
    }
    patch = {
        "spec": {"podCIDRs": ["fd00::/64"]},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "10.0.0.6"}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    assert strategic_merge_patch(node, patch, NODE_SCHEMA) == {
        "spec": {"podCIDRs": ["fd00::/64", "10.0.0.0/24"]},
        "status": {
            # Merging on `type` alone collapses two InternalIPs into one, as upstream does.
            "addresses": [
                {"type": "InternalIP", "address": "10.0.0.6"},
                {"type": "Hostname", "address": "n1"},
            ],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def test_pod_schema_covers_every_container_list() -> None:
    for containers in ("containers", "initContainers", "ephemeralContainers"):
        assert POD_SCHEMA[f"spec.{containers}"] == MergeList("name")
        assert POD_SCHEMA[f"spec.{containers}[].env"] == MergeList("name")
        assert POD_SCHEMA[f"spec.{containers}[].ports"] == MergeList("containerPort")
        assert POD_SCHEMA[f"spec.{containers}[].volumeMounts"] == MergeList("mountPath")
        assert POD_SCHEMA[f"spec.{containers}[].volumeDevices"] == MergeList("devicePath")
    assert POD_SCHEMA["spec.volumes"] == MergeList("name", retain_keys=True)
    assert POD_SCHEMA["spec.resourceClaims"] == MergeList("name", retain_keys=True)
    assert POD_SCHEMA["metadata.finalizers"] == MergeList(None)
    assert POD_SCHEMA["metadata.ownerReferences"] == MergeList("uid")
    assert "spec.tolerations" not in POD_SCHEMA
    assert "spec.containers[].command" not in POD_SCHEMA


# --- properties -------------------------------------------------------------------------------

names = st.sampled_from(["a", "b", "c", "d", "e"])
scalars = st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["x", "y", "$patch", "replace"])
KEYS = ["k", "l", "name", "$patch", "$retainKeys", "$setElementOrder/k", "$deleteFromPrimitiveList/l"]
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=3),
    max_leaves=12,
)


@st.composite
def keyed_items(draw: st.DrawFn, key: str = "name") -> list[dict[str, Any]]:
    """A merge list: items with distinct keys and a little content."""
    chosen = draw(st.lists(names, unique=True, max_size=4))
    return [{key: name, "value": draw(st.sampled_from(["1", "2"]))} for name in chosen]


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    """Pod-shaped objects without nulls or directives (what the API server hands us)."""
    containers = [
        {"name": item["name"], "image": item["value"], "env": draw(keyed_items())}
        for item in draw(keyed_items())
    ]
    return {
        "metadata": {
            "labels": draw(st.dictionaries(names, st.sampled_from(["1", "2"]), max_size=3)),
            "finalizers": draw(st.lists(names, unique=True, max_size=3)),
        },
        "spec": {"containers": containers, "tolerations": draw(keyed_items("key"))},
    }


@st.composite
def plain_patches(draw: st.DrawFn) -> dict[str, Any]:
    """Patches without directives or nulls: additions and changes only."""
    containers = [{"name": item["name"], "env": draw(keyed_items())} for item in draw(keyed_items())]
    return {
        "metadata": {
            "labels": draw(st.dictionaries(names, st.sampled_from(["1", "3"]), max_size=3)),
            "finalizers": draw(st.lists(names, unique=True, max_size=3)),
        },
        "spec": {"containers": containers},
    }


@given(json_values, json_values)
@settings(max_examples=150)
def test_never_mutates_its_inputs(original: Any, patch: Any) -> None:
    original, patch = {"spec": original}, {"spec": patch}
    before = copy.deepcopy((original, patch))
    with contextlib.suppress(PatchError):
        strategic_merge_patch(original, patch)
    assert (original, patch) == before


@given(pods())
def test_empty_patch_is_identity(original: dict[str, Any]) -> None:
    assert strategic_merge_patch(original, {}) == original


@given(pods(), plain_patches(), st.randoms(use_true_random=False))
def test_result_does_not_depend_on_the_order_of_keyed_items(
    original: dict[str, Any], patch: dict[str, Any], rng: random.Random
) -> None:
    shuffled = copy.deepcopy(original)
    rng.shuffle(shuffled["spec"]["containers"])
    for container in shuffled["spec"]["containers"]:
        rng.shuffle(container["env"])

    def by_key(result: dict[str, Any]) -> dict[str, Any]:
        return {
            container["name"]: {**container, "env": {item["name"]: item for item in container["env"]}}
            for container in result["spec"]["containers"]
        }

    expected = strategic_merge_patch(original, patch)
    assert by_key(strategic_merge_patch(shuffled, patch)) == by_key(expected)
    assert set(by_key(expected)) == {
        c["name"] for c in original["spec"]["containers"] + patch["spec"]["containers"]
    }


@given(pods(), plain_patches())
def test_plain_patches_are_idempotent(original: dict[str, Any], patch: dict[str, Any]) -> None:
    once = strategic_merge_patch(original, patch)
    assert strategic_merge_patch(once, patch) == once
