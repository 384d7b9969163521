"""The launcher path's objects as a user writes them (launcher contract §2.1, §2.2), equivalent to
upstream's example manifests: an InferenceServerConfig per model server, a LauncherConfig whose
Pod template runs the launcher image, a ReplicaSet of requesters that name an ISC, and the
launcher's own ServiceAccount with the rights its notifier sidecar needs (§3.3).

On the local cluster any ``…/launcher:<tag>`` image runs ``dpctl launcher`` (the command is
upstream's and ignored), whose instances are vLLM emulators; ISC options are vLLM's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final

from dpctl import api
from dpctl.fma.v1alpha1 import API_VERSION
from e2e.recipe import REQUESTER_IMAGE

LAUNCHER_IMAGE: Final = "ghcr.io/llm-d-incubation/llm-d-fast-model-actuation/launcher:v0.1.0"
LAUNCHER_SA: Final = "e2e-launcher"
# Keys of the routing metadata an ISC gives its launcher, and of the LC template's own metadata.
ISC_LABEL: Final = "e2e-test.fma.llm-d.ai/isc"
ISC_ANNOTATION: Final = "e2e-test.fma.llm-d.ai/isc-description"
LC_LABEL: Final = "e2e-test.fma.llm-d.ai/lc"
LC_ANNOTATION: Final = "e2e-test.fma.llm-d.ai/lc-description"
RS_LABEL: Final = "e2e-test.fma.llm-d.ai/requester-set"
MODELS: Final = (
    "HuggingFaceTB/SmolLM2-360M-Instruct",
    "Qwen/Qwen2.5-0.5B-Instruct",
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
)
# The emulator loads a "model" in this many seconds (upstream's small models take tens of seconds).
STARTUP_DELAY_S: Final = os.environ.get("DPCTL_E2E_LAUNCHER_STARTUP_DELAY") or "1"


def isc(
    name: str,
    lc: str,
    port: int,
    model: str = MODELS[0],
    extra_options: str = "",
) -> dict[str, Any]:
    options = f"--model {model} --enable-sleep-mode --gpu-memory-utilization 0.8 {extra_options}".strip()
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceServerConfig",
        "metadata": {"name": name},
        "spec": {
            "launcherConfigName": lc,
            "modelServerConfig": {
                "port": port,
                "options": options,
                "env_vars": {
                    "VLLM_SERVER_DEV_MODE": "1",
                    "VLLM_LOGGING_LEVEL": "DEBUG",
                    "VLLM_EMULATOR_STARTUP_DELAY": STARTUP_DELAY_S,
                },
                "labels": {ISC_LABEL: name},
                "annotations": {ISC_ANNOTATION: f"{model} on port {port}"},
            },
        },
    }


def launcher_config(name: str, max_instances: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "LauncherConfig",
        "metadata": {"name": name},
        "spec": {
            "maxInstances": max_instances,
            "podTemplate": {
                "metadata": {"labels": {LC_LABEL: name}, "annotations": {LC_ANNOTATION: "e2e launcher"}},
                "spec": {
                    "serviceAccountName": LAUNCHER_SA,
                    "containers": [
                        {
                            "name": api.INFERENCE_SERVER_CONTAINER,
                            "image": LAUNCHER_IMAGE,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["uvicorn", "launcher:app", "--host", "0.0.0.0", "--port", "8001"],
                            "env": [
                                {"name": "HF_HOME", "value": "/tmp"},
                                {"name": "VLLM_CACHE_ROOT", "value": "/tmp"},
                                {"name": "XDG_CONFIG_HOME", "value": "/tmp"},
                            ],
                            "resources": {"limits": {"cpu": "2", "memory": "9Gi"}},
                        }
                    ],
                },
            },
        },
    }


def requester_set(name: str, isc_name: str, node: str, replicas: int = 1) -> dict[str, Any]:
    """A ReplicaSet of requesters of ``isc_name``, pinned to ``node`` (the simulated device plugin
    hands out the lowest free GPU, so a replacement gets the GPU its predecessor had)."""
    selector = {RS_LABEL: name}
    annotations: Mapping[str, str] = {
        api.INFERENCE_SERVER_CONFIG_ANNOTATION: isc_name,
        api.HEAD.admin_port: str(api.DEFAULT_ADMIN_PORT),
    }
    container = {
        "name": api.INFERENCE_SERVER_CONTAINER,
        "image": REQUESTER_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "probes", "containerPort": 8080}, {"name": "spi", "containerPort": 8081}],
        "readinessProbe": {"httpGet": {"path": api.READY_PATH, "port": 8080}, "periodSeconds": 1},
        "resources": {"limits": {api.GPU_RESOURCE: "1", "cpu": "1", "memory": "250Mi"}},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name, "labels": dict(selector)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": dict(selector), "annotations": dict(annotations)},
                "spec": {
                    "nodeSelector": {api.HOSTNAME_LABEL: node},
                    "terminationGracePeriodSeconds": 5,
                    "containers": [container],
                },
            },
        },
    }


def launcher_rbac(namespace: str) -> list[dict[str, Any]]:
    """The launchers' ServiceAccount: its notifier gets and patches its own Pod (contract §3.3)."""
    rbac = "rbac.authorization.k8s.io/v1"
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": LAUNCHER_SA}},
        {
            "apiVersion": rbac,
            "kind": "Role",
            "metadata": {"name": LAUNCHER_SA},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]}],
        },
        {
            "apiVersion": rbac,
            "kind": "RoleBinding",
            "metadata": {"name": LAUNCHER_SA},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": LAUNCHER_SA},
            "subjects": [{"kind": "ServiceAccount", "name": LAUNCHER_SA, "namespace": namespace}],
        },
    ]
