"""The recipe's objects and moves, as code: ``mkrs`` ReplicaSets, their server-patches, and the
queries tests make about dual pods.

The ReplicaSet and both server-patch forms (``--model=...`` and the ``{{ .NodeName }}`` volume
form) follow ``e2e-recipe.md``. Two numbers differ, and only where a test asks: probe delays are
shortened and the vLLM emulator's model load takes seconds instead of minutes, so a case runs in
seconds; the shape of every object is the recipe's.

On a cluster other than the local one, ``$DPCTL_E2E_REQUESTER_IMAGE`` names a requester image it
can pull. Pod HTTP endpoints (``/is_sleeping``, ``/metrics``) are reached directly on the local
cluster (its pod IPs are routed to this machine's processes; on its loopback fallback the API
server would refuse to proxy them) and through the API server's pod proxy elsewhere.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from dpctl import api

REQUESTER_IMAGE = os.environ.get("DPCTL_E2E_REQUESTER_IMAGE") or "registry.local/dpctl/requester:latest"
VLLM_IMAGE = "docker.io/vllm/vllm-openai:v0.10.2"
# The volume form's claims: one per Node (the staged models) and one shared (compile caches).
LOCAL_CLAIM_PREFIX = "vcp-local-"
SHARED_CLAIM = "vcp-cephfs-shared"

_counter = iter(range(1, 1_000_000))

# The names `mkrs` writes (contract §2b). The recipe suite runs every case in each dialect by
# setting this per case (its autouse `dialect` fixture); other suites write the recipe's names.
_dialect: contextvars.ContextVar[api.Dialect] = contextvars.ContextVar("dialect", default=api.ORIGINAL)


@contextlib.contextmanager
def writing_dialect(dialect: api.Dialect) -> Iterator[None]:
    """Within, `mkrs` writes ``dialect``'s annotation names."""
    token = _dialect.set(dialect)
    try:
        yield
    finally:
        _dialect.reset(token)


def unique_name(prefix: str = "my-request") -> str:
    """Like the recipe's ``my-request-$(date +%H-%M-%S)``, unique even within one second."""
    return f"{prefix}-{time.strftime('%H-%M-%S')}-{next(_counter)}"


@dataclass(frozen=True)
class ServerPatch:
    """The recipe's server-patch, with the knobs tests turn."""

    model_form: str = "model-flag"  # or "node-volume": the staged-model form with {{ .NodeName }}
    sleep_mode: bool = True
    startup_delay_s: float = 2.0
    readiness_initial_delay_s: int = 1
    readiness_period_s: int = 1
    extra_env: Mapping[str, str] | None = None

    def text(self) -> str:
        command = ["vllm", "serve", "--port=8000"]
        if self.model_form == "node-volume":
            command.append(
                "/pvcs/local/vcp/hf/models--ibm-granite--granite-3.3-2b-instruct/snapshots/707f574c62054322f6b5b04b6d075f0a8f05e0f0"
            )
        else:
            command.append("--model=ibm-granite/granite-3.3-2b-instruct")
        if self.sleep_mode:
            command.append("--enable-sleep-mode")
        command += ["--max-model-len=32768", "--gpu-memory-utilization=0.8"]
        env = [{"name": "VLLM_SERVER_DEV_MODE", "value": "1"}] if self.sleep_mode else []
        env += [
            {"name": "VLLM_CACHE_ROOT", "value": "/tmp"},
            {"name": "XDG_CONFIG_HOME", "value": "/tmp"},
            {"name": "VLLM_EMULATOR_STARTUP_DELAY", "value": str(self.startup_delay_s)},
        ]
        env += [{"name": k, "value": v} for k, v in (self.extra_env or {}).items()]
        container: dict[str, Any] = {
            "name": "inference-server",
            "image": VLLM_IMAGE,
            "command": command,
            "env": env,
            "resources": {"limits": {"cpu": "2", "memory": "9Gi"}},
            "readinessProbe": {
                "httpGet": {"path": "/health", "port": 8000},
                "initialDelaySeconds": self.readiness_initial_delay_s,
                "periodSeconds": self.readiness_period_s,
            },
        }
        patch: dict[str, Any] = {
            "metadata": {
                "labels": {"model-reg": "ibm-granite", "model-repo": "granite-3.3-2b-instruct", "app": None}
            },
            "spec": {"containers": [container]},
        }
        if self.model_form == "node-volume":
            container["volumeMounts"] = [
                {"name": "local", "readOnly": True, "mountPath": "/pvcs/local", "subPath": "vcp-tester"},
                {"name": "shared", "mountPath": "/pvcs/shared"},
            ]
            patch["spec"]["volumes"] = [
                {
                    "name": "local",
                    "persistentVolumeClaim": {"claimName": LOCAL_CLAIM_PREFIX + "{{ .NodeName }}"},
                }
            ]
        return yaml.safe_dump(patch, sort_keys=False)


def mkrs(
    name: str,
    patch: ServerPatch | str | None = None,
    replicas: int = 1,
    gpus: int = 1,
    node_selector: Mapping[str, str] | None = None,
    probe_period_s: int = 1,
    requester_env: Mapping[str, str] | None = None,
    admin_port: str | None = "8081",
    image: str = REQUESTER_IMAGE,
) -> dict[str, Any]:
    """The recipe's ``mkrs`` ReplicaSet (selector ``app=dp-example`` plus a unique instance label),
    in the names of the dialect being written (see `writing_dialect`)."""
    instance = name.rsplit("-", 1)[-1] if "-" in name else name
    annotations: dict[str, str] = {}
    if admin_port is not None:
        annotations[_dialect.get().admin_port] = admin_port
    if patch is not None:
        annotations[_dialect.get().server_patch] = patch if isinstance(patch, str) else patch.text()
    container: dict[str, Any] = {
        "name": "inference-server",
        "image": image,
        "imagePullPolicy": "Always",
        "ports": [{"name": "probes", "containerPort": 8080}, {"name": "spi", "containerPort": 8081}],
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": 8080},
            "initialDelaySeconds": 2 if probe_period_s >= 5 else 0,
            "periodSeconds": probe_period_s,
        },
        "resources": {"limits": {"nvidia.com/gpu": str(gpus), "cpu": "1", "memory": "250Mi"}},
    }
    if requester_env:
        container["env"] = [{"name": k, "value": v} for k, v in requester_env.items()]
    spec: dict[str, Any] = {"containers": [container]}
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if patch is not None and not isinstance(patch, str) and patch.model_form == "node-volume":
        spec["volumes"] = [{"name": "shared", "persistentVolumeClaim": {"claimName": SHARED_CLAIM}}]
    selector_labels = {"app": "dp-example"}  # the recipe's; the server-patch must drop it
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name, "labels": {"app": "dp-example"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector_labels},
            "template": {
                "metadata": {"labels": {**selector_labels, "instance": instance}, "annotations": annotations},
                "spec": spec,
            },
        },
    }


class Kubectl:
    """kubectl in one namespace, returning parsed JSON where it helps."""

    def __init__(self, kubectl: str, kubeconfig: str, namespace: str) -> None:
        self.base = [kubectl, "--kubeconfig", kubeconfig, "-n", namespace]
        self.namespace = namespace

    def run(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60) -> str:
        done = subprocess.run(
            [*self.base, *args], input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}"
            )
        return done.stdout

    def apply(self, obj: Mapping[str, Any]) -> None:
        self.run("apply", "-f", "-", input=json.dumps(obj))

    def get_json(self, *args: str) -> Any:
        return json.loads(self.run("get", *args, "-o", "json"))

    def pods(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get_json("pods")["items"]
        return items

    def pod(self, name: str) -> dict[str, Any] | None:
        for p in self.pods():
            if p["metadata"]["name"] == name:
                return p
        return None

    def scale(self, rs: str, replicas: int) -> None:
        self.run("scale", f"rs/{rs}", f"--replicas={replicas}")

    def annotate(self, pod: str, key: str, value: str) -> str:
        """Set an annotation on a Pod; the Pod's resourceVersion after the change."""
        return self.run(
            "annotate",
            "pod",
            pod,
            f"{key}={value}",
            "--overwrite",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        )

    def delete_pod(self, name: str, *flags: str) -> None:
        self.run("delete", "pod", name, "--wait=false", *flags)


def requesters_of(pods: Sequence[Mapping[str, Any]], rs: str) -> list[Mapping[str, Any]]:
    return [
        p
        for p in pods
        if api.dialects_of(p["metadata"].get("annotations") or {})
        and any(o.get("name") == rs for o in p["metadata"].get("ownerReferences") or [])
    ]


def runners(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [p for p in pods if api.NOMINAL_ANNOTATION in (p["metadata"].get("annotations") or {})]


def bound_runner_of(
    pods: Sequence[Mapping[str, Any]], requester: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    uid = requester["metadata"]["uid"]
    for p in runners(pods):
        value = (p["metadata"].get("annotations") or {}).get(api.REQUESTER_ANNOTATION, "")
        if value.split(" ", 1)[0] == uid:
            return p
    return None


def is_ready(pod: Mapping[str, Any] | None) -> bool:
    if pod is None:
        return False
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return bool(c.get("status") == "True")
    return False


def dialect_of(requester: Mapping[str, Any]) -> api.Dialect:
    """The dialect of a requester's server-patch annotation (it must carry exactly one)."""
    (dialect,) = api.dialects_of(requester["metadata"].get("annotations") or {})
    return dialect


def status_errors(pod: Mapping[str, Any]) -> list[str]:
    """The errors of the status annotation in the requester's dialect."""
    raw = (pod["metadata"].get("annotations") or {}).get(dialect_of(pod).status)
    return list(json.loads(raw).get("Errors") or []) if raw else []


def cuda_visible_devices(runner: Mapping[str, Any]) -> str:
    for c in runner["spec"]["containers"]:
        if c["name"] == "inference-server":
            for e in c.get("env") or []:
                if e["name"] == "CUDA_VISIBLE_DEVICES":
                    return str(e.get("value", ""))
    return ""


def annotations_of(pod: Mapping[str, Any]) -> Mapping[str, str]:
    return pod["metadata"].get("annotations") or {}


def labels(pod: Mapping[str, Any]) -> Mapping[str, str]:
    return pod["metadata"].get("labels") or {}


def name_of(pod: Mapping[str, Any]) -> str:
    return str(pod["metadata"]["name"])


def deleting(pod: Mapping[str, Any]) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def bound_pair(kubectl: Kubectl, rs: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The ReplicaSet's one live requester and its bound runner, once both exist."""
    pods = kubectl.pods()
    reqs = [r for r in requesters_of(pods, rs) if not deleting(r)]
    if len(reqs) != 1:
        return None
    runner = bound_runner_of(pods, reqs[0])
    return (dict(reqs[0]), dict(runner)) if runner is not None else None


def ready_since(pod: Mapping[str, Any]) -> str:
    """When the Pod's Ready condition last became what it is (RFC 3339, whole seconds)."""
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return str(c.get("lastTransitionTime") or "")
    return ""


def gpu_request(pod: Mapping[str, Any]) -> int:
    """GPUs a Pod asks for (its containers' ``nvidia.com/gpu`` limits)."""
    total = 0
    for c in pod["spec"].get("containers") or []:
        limits = (c.get("resources") or {}).get("limits") or {}
        total += int(str(limits.get(api.GPU_RESOURCE, "0")))
    return total


def placeholder_pod(name: str, node: str, gpus: int = 1) -> dict[str, Any]:
    """A plain Pod that holds GPUs of a Node: the requester image without a server-patch, so no
    controller takes it for a requester."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "gpu-placeholder"}},
        "spec": {
            "nodeSelector": {api.HOSTNAME_LABEL: node},
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": "holder",
                    "image": REQUESTER_IMAGE,
                    "resources": {"limits": {api.GPU_RESOURCE: str(gpus), "cpu": "100m", "memory": "64Mi"}},
                }
            ],
        },
    }


def pod_get(kubectl: Kubectl, pod: Mapping[str, Any], port: int, path: str, *, direct: bool) -> bytes:
    """GET a Pod's HTTP endpoint: straight to its IP (``direct``) or through the API server proxy."""
    if direct:
        url = f"http://{pod['status']['podIP']}:{port}{path}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body: bytes = resp.read()
            return body
    raw = f"/api/v1/namespaces/{kubectl.namespace}/pods/{name_of(pod)}:{port}/proxy{path}"
    return kubectl.run("get", "--raw", raw).encode()


def is_sleeping(kubectl: Kubectl, runner: Mapping[str, Any], *, direct: bool = True) -> bool:
    """What the runner's inference server answers on ``/is_sleeping`` (the recipe's HTTP GET)."""
    port = 8000
    for c in runner["spec"]["containers"]:
        if c["name"] == api.INFERENCE_SERVER_CONTAINER:
            port = int((c.get("readinessProbe") or {}).get("httpGet", {}).get("port", port))
    return bool(
        json.loads(pod_get(kubectl, runner, port, api.IS_SLEEPING_PATH, direct=direct))["is_sleeping"]
    )
