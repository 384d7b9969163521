"""Launcher Pods from LauncherConfigs, and instance identity and launch bodies (contract §2.4, §2.5)."""

from __future__ import annotations

import base64
import copy
import hashlib
from typing import Any

import pytest

from dpctl import api
from dpctl.fma.v1alpha1 import ModelServerConfig
from dpctl.podbuild import BuildError
from dpctl.podbuild.launcher import (
    instance_id,
    launch_body,
    launcher_config_hash,
    launcher_for_node,
    launcher_template,
)

IMAGE = "ghcr.io/llm-d-incubation/llm-d-fast-model-actuation/launcher:v0.1.0"


def lc(**pod_spec: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": "inference-server", "image": IMAGE, "imagePullPolicy": "IfNotPresent"}],
        **pod_spec,
    }
    return {
        "apiVersion": "fma.llm-d.ai/v1alpha1",
        "kind": "LauncherConfig",
        "metadata": {"name": "lc-a", "namespace": "ns", "uid": "u-1"},
        "spec": {"maxInstances": 2, "podTemplate": {"metadata": {"labels": {"tier": "gpu"}}, "spec": spec}},
    }


def server_of(pod: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in pod["spec"]["containers"] if c["name"] == "inference-server")


def test_a_launcher_carries_its_config_s_names_labels_and_a_non_controlling_owner() -> None:
    t = launcher_template(lc())
    meta = t.pod["metadata"]
    assert (meta["namespace"], meta["generateName"]) == ("ns", "launcher-lc-a-")
    assert meta["labels"] == {
        "tier": "gpu",
        "app.kubernetes.io/component": "launcher",
        "dual-pods.llm-d.ai/launcher-config-name": "lc-a",
        "dual-pods.llm-d.ai/sleeping": "true",
    }
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "fma.llm-d.ai/v1alpha1",
            "kind": "LauncherConfig",
            "name": "lc-a",
            "uid": "u-1",
            "controller": False,
            "blockOwnerDeletion": False,
        }
    ]
    assert meta["annotations"][api.LAUNCHER_TEMPLATE_HASH_ANNOTATION] == t.template_hash
    assert len(t.template_hash) == 43 and "=" not in t.template_hash


def test_reordering_lists_in_the_config_keeps_the_template_hash() -> None:
    mounts = [{"name": "b", "mountPath": "/b"}, {"name": "a", "mountPath": "/a"}]
    ports = [{"name": "y", "containerPort": 2}, {"name": "x", "containerPort": 1}]
    one = lc(
        volumes=[{"name": "b", "emptyDir": {}}, {"name": "a", "emptyDir": {}}],
        tolerations=[{"key": "z", "operator": "Exists"}, {"key": "a", "operator": "Exists"}],
        imagePullSecrets=[{"name": "s2"}, {"name": "s1"}],
    )
    server_of_lc = one["spec"]["podTemplate"]["spec"]["containers"][0]
    server_of_lc.update(volumeMounts=mounts, ports=ports, envFrom=[{"prefix": "B_"}, {"prefix": "A_"}])
    other = copy.deepcopy(one)
    spec = other["spec"]["podTemplate"]["spec"]
    for field in ("volumes", "tolerations", "imagePullSecrets"):
        spec[field].reverse()
    for field in ("volumeMounts", "ports", "envFrom"):
        spec["containers"][0][field].reverse()
    assert launcher_template(one).template_hash == launcher_template(other).template_hash
    spec["containers"][0]["image"] = IMAGE + "-new"
    assert launcher_template(one).template_hash != launcher_template(other).template_hash


def test_what_is_one_pod_s_own_is_not_part_of_the_template() -> None:
    t = launcher_template(
        lc(
            nodeName="node-9",
            ephemeralContainers=[{"name": "debug", "image": "busybox"}],
            volumes=[{"name": "kube-api-access-abcde", "projected": {}}],
        )
    )
    assert {"nodeName", "ephemeralContainers", "volumes"}.isdisjoint(t.pod["spec"])
    assert t.template_hash == launcher_template(lc()).template_hash


def test_a_config_without_an_inference_server_container_is_malformed() -> None:
    bad = lc()
    bad["spec"]["podTemplate"]["spec"]["containers"][0]["name"] = "server"
    with pytest.raises(BuildError, match=r"LauncherConfig 'lc-a' is malformed: .*'inference-server'"):
        launcher_template(bad)


def test_the_launcher_container_gets_its_environment_in_place_and_its_probes_on_8001() -> None:
    config = lc()
    config["spec"]["podTemplate"]["spec"]["containers"][0]["env"] = [
        {"name": "HF_HOME", "value": "/cache"},
        {"name": "PYTHONPATH", "value": "/mine"},
    ]
    server = server_of(launcher_template(config).pod)
    assert server["env"] == [
        {"name": "HF_HOME", "value": "/cache"},
        {"name": "PYTHONPATH", "value": "/app"},
        {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},
        {"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "compute,utility"},
        {"name": "VLLM_SERVER_DEV_MODE", "value": "1"},
    ]
    assert server["livenessProbe"]["httpGet"] == {"path": "/health", "port": 8001, "scheme": "HTTP"}
    assert server["readinessProbe"]["httpGet"]["path"] == "/v2/vllm/instances"
    assert (server["livenessProbe"]["periodSeconds"], server["readinessProbe"]["periodSeconds"]) == (20, 5)


def test_gpus_are_zeroed_where_resources_are_listed_and_overhead_is_left_to_admission() -> None:
    config = lc(overhead={"cpu": "1", "nvidia.com/gpu": "1"})
    config["spec"]["podTemplate"]["spec"]["containers"][0]["resources"] = {
        "limits": {"nvidia.com/gpu": 1, "cpu": "4"},
        "requests": {"cpu": "2"},
    }
    pod = launcher_template(config).pod
    assert server_of(pod)["resources"] == {
        "limits": {"nvidia.com/gpu": "0", "cpu": "4"},
        "requests": {"cpu": "2", "nvidia.com/gpu": "0"},
    }
    assert "overhead" not in pod["spec"]  # admission derives it from the RuntimeClass
    assert "resources" not in server_of(launcher_template(lc()).pod)


def test_the_notifier_sidecar_is_added_once_with_the_launcher_s_image() -> None:
    config = lc()
    config["spec"]["podTemplate"]["spec"]["containers"].append(
        {"name": "state-change-reflector", "image": "old"}
    )
    containers = launcher_template(config).pod["spec"]["containers"]
    assert [c["name"] for c in containers] == ["inference-server", "state-change-reflector"]
    notifier = containers[1]
    assert (notifier["image"], notifier["imagePullPolicy"]) == (IMAGE, "IfNotPresent")
    assert notifier["command"] == ["python3", "/app/launcher_pod_notifier.py"]
    assert notifier["env"][0] == {"name": "LAUNCHER_BASE_URL", "value": "http://127.0.0.1:8001"}
    assert notifier["env"][1]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert notifier["resources"]["limits"] == {"cpu": "100m", "memory": "128Mi"}


def test_a_launcher_for_a_node_is_pinned_there_with_the_node_specific_hash() -> None:
    t = launcher_template(lc(nodeSelector={"nvidia.com/gpu.present": "true"}))
    before = copy.deepcopy(t.pod)
    pod = launcher_for_node(t, "node-1")
    assert t.pod == before  # the template is reused for every node
    assert pod["metadata"]["labels"]["dual-pods.llm-d.ai/node-name"] == "node-1"
    assert pod["spec"]["nodeSelector"] == {
        "nvidia.com/gpu.present": "true",
        "kubernetes.io/hostname": "node-1",
    }
    expected = base64.b64encode(hashlib.sha256(f"{t.template_hash};node=node-1".encode()).digest())
    assert pod["metadata"]["annotations"][api.LAUNCHER_CONFIG_HASH_ANNOTATION] == expected.decode().rstrip(
        "="
    )
    assert launcher_config_hash(t.template_hash, "node-1") != launcher_config_hash(t.template_hash, "node-2")


SERVER = ModelServerConfig(port=8005, options="--model facebook/opt-125m", env_vars={"A": "1"})


def test_an_instance_id_is_stable_and_names_config_and_gpus_in_order() -> None:
    first = instance_id(SERVER, ["GPU-a", "GPU-b"])
    assert first == instance_id(ModelServerConfig.model_validate(SERVER.model_dump()), ["GPU-a", "GPU-b"])
    assert first.startswith("I") and first.endswith("i") and len(first) == 45
    assert first != instance_id(SERVER, ["GPU-b", "GPU-a"])
    assert first != instance_id(SERVER.model_copy(update={"labels": {"model": "opt"}}), ["GPU-a", "GPU-b"])


def test_a_launch_body_appends_the_port_and_names_the_config() -> None:
    assert launch_body("opt", SERVER, ["GPU-a"]) == {
        "options": "--model facebook/opt-125m --port 8005",
        "gpu_uuids": ["GPU-a"],
        "env_vars": {"A": "1"},
        "annotations": {"isc-name": "opt", "inference-port": "8005"},
    }
    bare = launch_body("opt", ModelServerConfig(port=9000), [])
    assert bare == {
        "options": "--port 9000",
        "gpu_uuids": [],
        "annotations": {"isc-name": "opt", "inference-port": "9000"},
    }
