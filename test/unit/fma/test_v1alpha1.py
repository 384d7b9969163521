"""The fma types read objects as the API server stores them, by upstream's wire names."""

from __future__ import annotations

import pydantic
import pytest

from dpctl.fma.v1alpha1 import (
    InferenceServerConfigSpec,
    LauncherConfigSpec,
    LauncherPopulationPolicySpec,
    Status,
)


def test_an_inference_server_config_reads_by_wire_names_env_vars_included() -> None:
    spec = InferenceServerConfigSpec.model_validate(
        {
            "launcherConfigName": "lc-a",
            "modelServerConfig": {
                "port": 8005,
                "options": "--model facebook/opt-125m",
                "env_vars": {"VLLM_LOGGING_LEVEL": "DEBUG"},
                "labels": {"model": "opt"},
            },
        }
    )
    assert spec.launcher_config_name == "lc-a"
    msc = spec.model_server_config
    assert (msc.port, msc.env_vars, msc.labels, msc.annotations) == (
        8005,
        {"VLLM_LOGGING_LEVEL": "DEBUG"},
        {"model": "opt"},
        {},
    )


def test_fields_a_newer_version_adds_are_ignored_not_fatal() -> None:
    spec = LauncherConfigSpec.model_validate({"maxInstances": 2, "somethingNew": True})
    assert spec.max_instances == 2 and spec.pod_template.spec == {}


@pytest.mark.parametrize("port", [0, 65536])
def test_a_port_out_of_range_is_refused_as_the_schema_refuses_it(port: int) -> None:
    with pytest.raises(pydantic.ValidationError, match="port"):
        InferenceServerConfigSpec.model_validate(
            {"launcherConfigName": "lc", "modelServerConfig": {"port": port}}
        )


def test_a_population_policy_keeps_its_selector_and_quantities_as_written() -> None:
    spec = LauncherPopulationPolicySpec.model_validate(
        {
            "enhancedNodeSelector": {
                "labelSelector": {"matchLabels": {"nvidia.com/gpu.product": "H100"}},
                "allocatableResources": {"nvidia.com/gpu": {"min": 8, "max": "8"}},
            },
            "countForLauncher": [{"launcherConfigName": "lc-a", "launcherCount": -1}],
        }
    )
    selector = spec.enhanced_node_selector
    assert selector.label_selector == {"matchLabels": {"nvidia.com/gpu.product": "H100"}}
    bounds = selector.allocatable_resources["nvidia.com/gpu"]
    assert (bounds.min, bounds.max) == (8, "8")
    assert spec.count_for_launcher[0].launcher_count == -1  # the populator reports it, not the schema


def test_an_empty_status_has_no_errors_and_generation_zero() -> None:
    assert Status.model_validate({}) == Status(observedGeneration=0, errors=[])
