"""The launcher path's constructions: launcher Pods from a LauncherConfig, and what a launcher is
asked to run for an InferenceServerConfig (launcher contract §2.4, §2.5).

Owns:

- `launcher_template`: the node-independent launcher Pod of a LauncherConfig and its template
  hash, the one function the controller and the populator both build launchers with. The
  template is made canonical first (de-individualised as a runner's base is, so ``overhead``,
  whose GPUs upstream deletes, goes whole and admission derives it; volumes,
  tolerations, image pull secrets, and each container's mounts, ports and envFrom sorted), so
  that reordering a list in the LauncherConfig does not replace its launchers. The hash covers
  that canonical Pod with its names and labels, before the launcher's own additions (its
  environment, probes, GPU zeroing and the notifier sidecar), which dpctl may change without
  making running launchers obsolete.
- `launcher_for_node`: that Pod pinned to one Node, with the node-specific hash.
- `instance_id` and `launch_body`: the identity of a vLLM instance, and the body that asks a
  launcher for it.

Hashes are dpctl's own (canonical JSON, not Go's encoding): launchers are not shared with
upstream's controllers (contract §2.4 [D]). Does no I/O.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Final

from dpctl.api import (
    COMPONENT_LABEL,
    GPU_RESOURCE,
    HEALTH_PATH,
    HOSTNAME_LABEL,
    INFERENCE_PORT_KEY,
    INFERENCE_SERVER_CONTAINER,
    ISC_NAME_KEY,
    LAUNCHER_COMPONENT,
    LAUNCHER_CONFIG_HASH_ANNOTATION,
    LAUNCHER_CONFIG_NAME_LABEL,
    LAUNCHER_NOTIFIER_CONTAINER,
    LAUNCHER_PORT,
    LAUNCHER_TEMPLATE_HASH_ANNOTATION,
    NODE_NAME_LABEL,
    SLEEPING_LABEL,
)
from dpctl.fma.v1alpha1 import API_VERSION, LAUNCHER_CONFIG, ModelServerConfig
from dpctl.launcher.api import INSTANCES_PATH
from dpctl.podbuild.hashing import canonical_json
from dpctl.podbuild.nominal import BuildError, deindividualised_spec

# What every launcher's inference-server container needs, whatever the LauncherConfig says: the
# launcher's code on the path, all GPUs visible (the launcher narrows each instance to its own),
# and vLLM's development endpoints, where /sleep and /wake_up live.
LAUNCHER_ENV: Final = (
    ("PYTHONPATH", "/app"),
    ("NVIDIA_VISIBLE_DEVICES", "all"),
    ("NVIDIA_DRIVER_CAPABILITIES", "compute,utility"),
    ("VLLM_SERVER_DEV_MODE", "1"),
)
# Upstream's probes of the launcher process: alive while /health answers, Ready once it lists.
LIVENESS: Final = {"path": HEALTH_PATH, "initialDelaySeconds": 10, "periodSeconds": 20, "timeoutSeconds": 1}
READINESS: Final = {"path": INSTANCES_PATH, "initialDelaySeconds": 2, "periodSeconds": 5, "timeoutSeconds": 2}
NOTIFIER_COMMAND: Final = ("python3", "/app/launcher_pod_notifier.py")
NOTIFIER_RESOURCES: Final = {
    "requests": {"cpu": "10m", "memory": "64Mi"},
    "limits": {"cpu": "100m", "memory": "128Mi"},
}


@dataclasses.dataclass(frozen=True)
class LauncherTemplate:
    """The node-independent launcher Pod (a fresh dict per call of `launcher_for_node`)."""

    pod: dict[str, Any]
    template_hash: str


def launcher_template(launcher_config: Mapping[str, Any]) -> LauncherTemplate:
    """The launcher Pod of a LauncherConfig object (as the API returns it), not yet on a Node.

    Raises BuildError, fit for the LauncherConfig's status, when its template has no
    ``inference-server`` container.
    """
    metadata = _mapping(launcher_config.get("metadata"))
    name = str(metadata.get("name", ""))
    template = _mapping(_mapping(launcher_config.get("spec")).get("podTemplate"))
    template_meta = _mapping(template.get("metadata"))
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "namespace": metadata.get("namespace"),
            "generateName": f"launcher-{name}-",
            "labels": {
                **_strings(template_meta.get("labels")),
                COMPONENT_LABEL: LAUNCHER_COMPONENT,
                LAUNCHER_CONFIG_NAME_LABEL: name,
                SLEEPING_LABEL: "true",
            },
            "annotations": _strings(template_meta.get("annotations")),
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": LAUNCHER_CONFIG.kind,
                    "name": name,
                    "uid": metadata.get("uid"),
                    "controller": False,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "spec": _canonical_spec(template.get("spec")),
    }
    digest = _unpadded_b64(hashlib.sha256(canonical_json(pod)).digest())
    pod["metadata"]["annotations"][LAUNCHER_TEMPLATE_HASH_ANNOTATION] = digest
    containers = pod["spec"].setdefault("containers", [])
    server = next(
        (c for c in containers if isinstance(c, dict) and c.get("name") == INFERENCE_SERVER_CONTAINER), None
    )
    if server is None:
        raise BuildError(
            f"LauncherConfig {name!r} is malformed: its podTemplate has no container named "
            f"{INFERENCE_SERVER_CONTAINER!r}"
        )
    _equip_launcher(server)
    pod["spec"]["containers"] = [
        *(
            c
            for c in containers
            if not (isinstance(c, dict) and c.get("name") == LAUNCHER_NOTIFIER_CONTAINER)
        ),
        _notifier(server),
    ]
    return LauncherTemplate(pod, digest)


def launcher_for_node(template: LauncherTemplate, node: str) -> dict[str, Any]:
    """The launcher Pod to create on ``node``: pinned there and marked with its node-specific hash."""
    pod = copy.deepcopy(template.pod)
    pod["metadata"]["labels"][NODE_NAME_LABEL] = node
    pod["spec"]["nodeSelector"] = {**_strings(pod["spec"].get("nodeSelector")), HOSTNAME_LABEL: node}
    pod["metadata"]["annotations"][LAUNCHER_CONFIG_HASH_ANNOTATION] = launcher_config_hash(
        template.template_hash, node
    )
    return pod


def launcher_config_hash(template_hash: str, node: str) -> str:
    """The node-specific hash: equal means "a launcher built from this template for this Node"."""
    digest = hashlib.sha256(f"{template_hash};node={node}".encode()).digest()
    return _unpadded_b64(digest)


def instance_id(server: ModelServerConfig, gpu_uuids: Sequence[str]) -> str:
    """The identity of the vLLM instance that serves ``server`` on these GPUs (in the stub's order).

    Over dpctl's canonical JSON of the whole ``modelServerConfig`` by wire names (upstream uses
    Go's YAML of it; only stability within one controller matters, §2.5): so editing anything in
    it, labels included, makes the old instances obsolete. ``I…i`` keeps the id a valid name.
    """
    config = canonical_json(server.model_dump(by_alias=True, mode="json"))
    digest = hashlib.sha256(config + b";gpus=" + ",".join(gpu_uuids).encode()).digest()
    return "I" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii") + "i"


def launch_body(isc_name: str, server: ModelServerConfig, gpu_uuids: Sequence[str]) -> dict[str, Any]:
    """What to PUT to a launcher for that instance: vLLM's options with the ISC's port appended."""
    body: dict[str, Any] = {
        "options": f"{server.options} --port {server.port}".lstrip(),
        "gpu_uuids": list(gpu_uuids),
        "annotations": {ISC_NAME_KEY: isc_name, INFERENCE_PORT_KEY: str(server.port)},
    }
    if server.env_vars:
        body["env_vars"] = dict(server.env_vars)
    return body


def _unpadded_b64(digest: bytes) -> str:
    # Standard alphabet without padding, as upstream writes both launcher hashes.
    return base64.b64encode(digest).rstrip(b"=").decode("ascii")


def _canonical_spec(spec: Any) -> dict[str, Any]:
    out = deindividualised_spec(spec)
    _sort(out, "volumes", lambda v: (v.get("name", ""),))
    _sort(
        out,
        "tolerations",
        lambda t: (t.get("key", ""), t.get("operator", ""), t.get("value", ""), t.get("effect", "")),
    )
    _sort(out, "imagePullSecrets", lambda s: (s.get("name", ""),))
    for field in ("initContainers", "containers"):
        for container in out.get(field) or []:
            if isinstance(container, dict):
                _sort(container, "volumeMounts", lambda m: (m.get("name", ""), m.get("mountPath", "")))
                _sort(
                    container,
                    "ports",
                    lambda p: (p.get("name", ""), p.get("containerPort", 0), p.get("protocol", "")),
                )
                _sort(container, "envFrom", lambda e: (e.get("prefix", ""),))
    return out


def _sort(parent: dict[str, Any], field: str, key: Any) -> None:
    items = parent.get(field)
    if isinstance(items, list) and all(isinstance(i, dict) for i in items):
        parent[field] = sorted(items, key=lambda i: tuple(str(k) for k in key(i)))


def _equip_launcher(container: dict[str, Any]) -> None:
    env = list(container.get("env") or [])
    for name, value in LAUNCHER_ENV:
        at = next((i for i, e in enumerate(env) if isinstance(e, dict) and e.get("name") == name), None)
        if at is None:
            env.append({"name": name, "value": value})
        else:
            env[at] = {"name": name, "value": value}
    container["env"] = env
    container["livenessProbe"] = _probe(LIVENESS)
    container["readinessProbe"] = _probe(READINESS)
    # The requester holds the GPUs; the launcher sees them all (NVIDIA_VISIBLE_DEVICES) unallocated.
    resources = _mapping(container.get("resources"))
    for part in ("limits", "requests"):
        if isinstance(resources.get(part), dict):
            resources[part][GPU_RESOURCE] = "0"


def _probe(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "httpGet": {"path": spec["path"], "port": LAUNCHER_PORT, "scheme": "HTTP"},
        "initialDelaySeconds": spec["initialDelaySeconds"],
        "periodSeconds": spec["periodSeconds"],
        "timeoutSeconds": spec["timeoutSeconds"],
        "successThreshold": 1,
        "failureThreshold": 3,
    }


def _notifier(server: Mapping[str, Any]) -> dict[str, Any]:
    notifier: dict[str, Any] = {
        "name": LAUNCHER_NOTIFIER_CONTAINER,
        "image": server.get("image"),
        "command": list(NOTIFIER_COMMAND),
        "env": [
            {"name": "LAUNCHER_BASE_URL", "value": f"http://127.0.0.1:{LAUNCHER_PORT}"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ],
        "resources": copy.deepcopy(NOTIFIER_RESOURCES),
    }
    if server.get("imagePullPolicy"):
        notifier["imagePullPolicy"] = server["imagePullPolicy"]
    return notifier


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in _mapping(value).items()}
