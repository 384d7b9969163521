"""The CRDs made from the fma types: what the API server will accept and reject, as upstream's."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from dpctl.fma import crdgen
from dpctl.fma.v1alpha1 import (
    INFERENCE_SERVER_CONFIG,
    KINDS,
    LAUNCHER_CONFIG,
    LAUNCHER_POPULATION_POLICY,
    Kind,
)

# A small stand-in for the API server's OpenAPI: the shapes the generator must handle.
COMPONENTS: dict[str, Any] = {
    "io.k8s.api.core.v1.PodSpec": {
        "description": "PodSpec is a description of a pod.",
        "type": "object",
        "required": ["containers"],
        "properties": {
            "containers": {
                "type": "array",
                "items": {
                    "default": {},
                    "allOf": [{"$ref": "#/components/schemas/io.k8s.api.core.v1.Container"}],
                },
                "x-kubernetes-list-map-keys": ["name"],
                "x-kubernetes-list-type": "map",
                "x-kubernetes-patch-merge-key": "name",
                "x-kubernetes-patch-strategy": "merge",
            },
            "overhead": {
                "type": "object",
                "additionalProperties": {
                    "$ref": "#/components/schemas/io.k8s.apimachinery.pkg.api.resource.Quantity"
                },
            },
            "restartPolicy": {"type": "string", "enum": ["Always", "Never"]},
        },
    },
    "io.k8s.api.core.v1.Container": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "default": ""},
            "terminationMessagePath": {"type": "string", "default": "/dev/termination-log"},
            "stdin": {"type": "boolean", "default": False},
            "args": {"type": "array", "items": {"type": "string", "default": ""}},
            "port": {
                "allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.util.intstr.IntOrString"}]
            },
            "ephemeralMeta": {
                "allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}]
            },
        },
    },
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {"oneOf": [{"type": "string"}, {"type": "number"}]},
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {
        "format": "int-or-string",
        "oneOf": [{"type": "integer"}, {"type": "string"}],
    },
    "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": {
        "type": "object",
        "properties": {"name": {"type": "string"}},
    },
    "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector": {
        "description": "A label query.",
        "type": "object",
        "properties": {
            "matchLabels": {"type": "object", "additionalProperties": {"type": "string", "default": ""}}
        },
        "x-kubernetes-map-type": "atomic",
    },
}


def schema_of(kind: Kind) -> dict[str, Any]:
    (version,) = crdgen.crd(kind, COMPONENTS)["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"])


def spec_of(kind: Kind) -> dict[str, Any]:
    return dict(schema_of(kind)["properties"]["spec"])


def test_each_kind_has_upstreams_names_a_status_subresource_and_one_served_stored_version() -> None:
    names = {k.kind: crdgen.crd(k, COMPONENTS) for k in KINDS}
    isc = names["InferenceServerConfig"]
    assert isc["metadata"]["name"] == "inferenceserverconfigs.fma.llm-d.ai"
    assert isc["spec"]["group"] == "fma.llm-d.ai" and isc["spec"]["scope"] == "Namespaced"
    assert isc["spec"]["names"] == {
        "kind": "InferenceServerConfig",
        "listKind": "InferenceServerConfigList",
        "plural": "inferenceserverconfigs",
        "shortNames": ["isc"],
        "singular": "inferenceserverconfig",
    }
    assert names["LauncherConfig"]["spec"]["names"]["shortNames"] == ["lcfg"]
    assert names["LauncherPopulationPolicy"]["spec"]["names"]["plural"] == "launcherpopulationpolicies"
    for doc in names.values():
        (version,) = doc["spec"]["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
        assert version["subresources"] == {"status": {}}


def test_required_fields_bounds_and_formats_come_from_the_types() -> None:
    isc = spec_of(INFERENCE_SERVER_CONFIG)
    assert isc["required"] == ["launcherConfigName", "modelServerConfig"]
    msc = isc["properties"]["modelServerConfig"]
    assert msc["required"] == ["port"]
    assert {k: msc["properties"]["port"][k] for k in ("format", "minimum", "maximum", "type")} == {
        "format": "int32",
        "minimum": 1,
        "maximum": 65535,
        "type": "integer",
    }
    assert msc["properties"]["env_vars"] == {
        "description": msc["properties"]["env_vars"]["description"],
        "additionalProperties": {"type": "string"},
        "type": "object",
    }
    lc = spec_of(LAUNCHER_CONFIG)
    assert lc["required"] == ["maxInstances"]
    assert lc["properties"]["maxInstances"]["minimum"] == 1
    status = schema_of(LAUNCHER_CONFIG)["properties"]["status"]
    assert status["properties"]["observedGeneration"]["format"] == "int64"
    assert status["properties"]["errors"]["items"] == {"type": "string"}


def test_the_spec_is_required_where_upstream_requires_it() -> None:
    assert schema_of(INFERENCE_SERVER_CONFIG)["required"] == ["spec"]
    assert schema_of(LAUNCHER_CONFIG)["required"] == ["spec"]
    assert "required" not in schema_of(LAUNCHER_POPULATION_POLICY)


def test_count_for_launcher_is_a_list_map_so_duplicate_launcher_configs_are_rejected() -> None:
    counts = spec_of(LAUNCHER_POPULATION_POLICY)["properties"]["countForLauncher"]
    assert counts["x-kubernetes-list-type"] == "map"
    assert counts["x-kubernetes-list-map-keys"] == ["launcherConfigName"]
    assert counts["items"]["required"] == ["launcherConfigName", "launcherCount"]
    assert "minimum" not in counts["items"]["properties"]["launcherCount"]  # < 0 is the populator's


def test_the_pod_spec_is_inlined_from_the_openapi_with_what_a_crd_may_not_hold_dropped() -> None:
    pod = spec_of(LAUNCHER_CONFIG)["properties"]["podTemplate"]["properties"]["spec"]
    assert pod["required"] == ["containers"]
    containers = pod["properties"]["containers"]
    assert (
        "x-kubernetes-patch-strategy" not in containers and "x-kubernetes-patch-merge-key" not in containers
    )
    assert containers["x-kubernetes-list-map-keys"] == ["name"]
    item = containers["items"]
    assert "default" not in item and "allOf" not in item and item["required"] == ["name"]
    assert "enum" not in pod["properties"]["restartPolicy"]
    assert "ephemeralMeta" in item["properties"] and item["properties"]["ephemeralMeta"] == {"type": "object"}


def test_defaults_stay_only_where_a_marker_set_them() -> None:
    props = spec_of(LAUNCHER_CONFIG)["properties"]["podTemplate"]["properties"]["spec"]["properties"]
    container = props["containers"]["items"]["properties"]
    assert "default" not in container["name"]  # a required field's zero value
    assert "default" not in container["args"]["items"]  # a list element's zero value
    assert container["terminationMessagePath"]["default"] == "/dev/termination-log"
    assert container["stdin"]["default"] is False  # an optional field's zero value: a marker's


def test_int_or_string_and_quantities_take_the_one_crd_spelling() -> None:
    props = spec_of(LAUNCHER_CONFIG)["properties"]["podTemplate"]["properties"]["spec"]["properties"]
    port = props["containers"]["items"]["properties"]["port"]
    assert port == {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}
    quantity = props["overhead"]["additionalProperties"]
    assert quantity["x-kubernetes-int-or-string"] is True and quantity["pattern"] == crdgen.QUANTITY_PATTERN
    ranges = spec_of(LAUNCHER_POPULATION_POLICY)["properties"]["enhancedNodeSelector"]["properties"]
    bound = ranges["allocatableResources"]["additionalProperties"]["properties"]["min"]
    assert bound["x-kubernetes-int-or-string"] is True


@pytest.mark.parametrize("good", ["8", "1.5", "100m", "64Gi", "1e3", "+2", "-0.5Ki", ".5"])
def test_the_quantity_pattern_accepts_quantities(good: str) -> None:
    assert re.fullmatch(crdgen.QUANTITY_PATTERN, good)


@pytest.mark.parametrize("bad", ["", "eight", "8 Gi", "1.2.3", "5gb", "Gi"])
def test_the_quantity_pattern_rejects_what_is_not_a_quantity(bad: str) -> None:
    assert not re.fullmatch(crdgen.QUANTITY_PATTERN, bad)


def test_a_type_missing_from_the_openapi_is_an_error_that_names_it() -> None:
    components = {k: v for k, v in COMPONENTS.items() if not k.endswith(".Container")}
    with pytest.raises(crdgen.CrdGenError, match=r"no definition of io\.k8s\.api\.core\.v1\.Container"):
        crdgen.crd(LAUNCHER_CONFIG, components)


def test_a_type_that_contains_itself_is_an_error() -> None:
    components = dict(COMPONENTS)
    components["io.k8s.api.core.v1.Container"] = {
        "type": "object",
        "properties": {"inner": {"$ref": "#/components/schemas/io.k8s.api.core.v1.Container"}},
    }
    with pytest.raises(crdgen.CrdGenError, match="contains itself"):
        crdgen.crd(LAUNCHER_CONFIG, components)


def test_rendering_is_stable_yaml_that_reads_back_the_same() -> None:
    doc = crdgen.crd(LAUNCHER_POPULATION_POLICY, COMPONENTS)
    text = crdgen.render(doc)
    assert text.startswith("---\n") and text == crdgen.render(doc)
    assert yaml.safe_load(text) == doc
