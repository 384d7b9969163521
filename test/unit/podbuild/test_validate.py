"""Strict Pod validation and the inference server's port."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from dpctl.podbuild import validate
from dpctl.podbuild.validate import PodValidationError, inference_server_port, validate_pod


def pod(container: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    main = {"name": "inference-server", "image": "vllm", **(container or {})}
    return {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [main], **spec}}


def test_recipe_runner_is_valid(data: Callable[[str], Any]) -> None:
    validate_pod(data("runner-staging.yaml"))
    validate_pod(data("requester-simple.yaml"))


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        pytest.param(
            pod({"imagee": "x"}), 'unknown field "spec.containers[0].imagee"', id="typo-in-container"
        ),
        pytest.param(
            pod({"Image": "x"}),
            'unknown field "spec.containers[0].Image"',
            id="field-names-are-case-sensitive",
        ),
        pytest.param({"metdata": {}}, 'unknown field "metdata"', id="typo-at-top"),
        pytest.param(pod(nodeselector={"a": "b"}), 'unknown field "spec.nodeselector"', id="typo-in-spec"),
        pytest.param(
            pod({"readinessProbe": {"httpGet": {"port": 80, "paht": "/"}}}),
            'unknown field "spec.containers[0].readinessProbe.httpGet.paht"',
            id="typo-deep-down",
        ),
        pytest.param(
            pod(volumes=[{"name": "v", "persistentVolumeClaim": {"claim": "x"}}]),
            'unknown field "spec.volumes[0].persistentVolumeClaim.claim"',
            id="typo-in-volume",
        ),
        pytest.param(
            pod({"image": 3}),
            "spec.containers[0].image: expected a string, got number 3",
            id="int-for-string",
        ),
        pytest.param(
            pod({"ports": [{"containerPort": "8080"}]}),
            'spec.containers[0].ports[0].containerPort: expected an integer, got string "8080"',
            id="string-for-int",
        ),
        pytest.param(
            pod({"ports": [{"containerPort": 80.5}]}),
            "containerPort: expected an integer, got number 80.5",
            id="float-for-int",
        ),
        pytest.param(
            pod({"ports": [{"containerPort": True}]}),
            "containerPort: expected an integer, got boolean true",
            id="bool-for-int",
        ),
        pytest.param(
            pod({"stdin": "yes"}), 'stdin: expected true or false, got string "yes"', id="string-for-bool"
        ),
        pytest.param(
            {"metadata": {"labels": {"enabled": True}}},
            "metadata.labels.enabled: expected a string, got boolean true",
            id="bool-label-value",
        ),
        pytest.param(
            {"metadata": {"annotations": {"example.com/n": 1}}},
            'metadata.annotations["example.com/n"]: expected a string',
            id="annotation-key-with-slash-is-quoted",
        ),
        pytest.param(
            pod({"command": "vllm serve"}),
            'spec.containers[0].command: expected a list, got string "vllm serve"',
            id="string-for-list",
        ),
        pytest.param(pod({"env": {"A": "1"}}), "env: expected a list, got an object", id="map-for-list"),
        pytest.param(
            {"spec": {"containers": [{"name": "x", "resources": {"limits": {"memory": "9Gb"}}}]}},
            "resources.limits.memory: expected a quantity",
            id="bad-quantity",
        ),
        pytest.param(
            pod({"readinessProbe": {"httpGet": {"port": [80]}}}),
            "httpGet.port: expected an integer or a string, got a list",
            id="list-for-int-or-string",
        ),
        pytest.param(
            {"metadata": {"creationTimestamp": "yesterday"}}, "expected an RFC 3339 time", id="bad-time"
        ),
        pytest.param({"spec": "x"}, 'spec: expected an object, got string "x"', id="string-for-object"),
        pytest.param([], "the Pod: expected an object, got a list", id="not-an-object"),
    ],
)
def test_problems_name_their_path(bad: Any, problem: str) -> None:
    with pytest.raises(PodValidationError) as caught:
        validate_pod(bad)
    assert problem in str(caught.value)


@pytest.mark.parametrize(
    "good",
    [
        pytest.param(
            pod({"resources": {"limits": {"cpu": 2, "memory": "9Gi", "example.com/x": "500m"}}}),
            id="quantities",
        ),
        pytest.param(
            pod({"resources": {"requests": {"cpu": 0.5, "memory": "1e3"}}}), id="quantity-number-and-exponent"
        ),
        pytest.param(pod({"readinessProbe": {"tcpSocket": {"port": "http"}}}), id="int-or-string"),
        pytest.param(pod({"image": None, "env": None}), id="nulls-are-unset"),
        pytest.param({"metadata": {"creationTimestamp": "2025-10-10T12:00:01Z"}}, id="time"),
        pytest.param(
            {
                "metadata": {
                    "managedFields": [
                        {"fieldsV1": {"f:spec": {"f:x": {}}}, "time": "2025-10-10T12:00:01+02:00"}
                    ]
                }
            },
            id="free-form-fields-v1",
        ),
        pytest.param({}, id="empty"),
    ],
)
def test_accepts(good: Any) -> None:
    validate_pod(good)


def test_all_problems_are_collected_and_capped() -> None:
    bad = pod({f"typo{i}": 1 for i in range(validate.MAX_PROBLEMS + 3)})
    with pytest.raises(PodValidationError) as caught:
        validate_pod(bad)
    assert len(caught.value.problems) == validate.MAX_PROBLEMS + 3
    assert str(caught.value).endswith("; and 3 more")


def test_the_schema_knows_every_override_it_names() -> None:
    models = validate._pod_models()
    for model, field in validate._QUANTITY_FIELDS | validate._INT_OR_STRING_FIELDS:
        assert field in models[model], (model, field)


def test_every_free_form_field_of_pod_is_known() -> None:
    """A new `object` field in the models must be classified here (IntOrString or free-form)."""
    models = validate._pod_models()
    free = sorted(
        (model, field)
        for model, fields in models.items()
        for field, type_ in fields.items()
        if type_ == validate._Scalar("any")
    )
    assert free == [("V1ManagedFieldsEntry", "fieldsV1")]


@pytest.mark.parametrize(
    ("probe", "port"),
    [
        pytest.param({"httpGet": {"port": 8000}}, 8000, id="number"),
        pytest.param({"httpGet": {"port": "http"}}, 80, id="http"),
        pytest.param({"httpGet": {"port": "HTTP"}}, 80, id="HTTP"),
        pytest.param({"httpGet": {"port": 1}}, 1, id="lowest"),
        pytest.param({"httpGet": {"port": 65535}}, 65535, id="highest"),
    ],
)
def test_server_port(probe: dict[str, Any], port: int) -> None:
    assert inference_server_port(pod({"readinessProbe": probe})) == port


@pytest.mark.parametrize(
    ("the_pod", "message"),
    [
        pytest.param(
            {"spec": {"containers": [{"name": "vllm"}]}},
            'there is no container named "inference-server"',
            id="no-container",
        ),
        pytest.param({}, 'there is no container named "inference-server"', id="no-spec"),
        pytest.param(pod(), "spec.containers[0].readinessProbe.httpGet.port is missing", id="no-probe"),
        pytest.param(
            pod({"readinessProbe": {"exec": {"command": ["true"]}}}),
            "readinessProbe.httpGet.port is missing",
            id="exec-probe",
        ),
        pytest.param(
            pod({"readinessProbe": {"httpGet": {"port": "metrics"}}}),
            'named port "metrics" is not supported',
            id="other-named-port",
        ),
        pytest.param(pod({"readinessProbe": {"httpGet": {"port": 0}}}), "0 is not a port number", id="zero"),
        pytest.param(
            pod({"readinessProbe": {"httpGet": {"port": 65536}}}), "65536 is not a port number", id="too-big"
        ),
    ],
)
def test_server_port_problems(the_pod: dict[str, Any], message: str) -> None:
    with pytest.raises(PodValidationError, match=re.escape(message)):
        inference_server_port(the_pod)
