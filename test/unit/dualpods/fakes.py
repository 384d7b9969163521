"""Test doubles for the reconciler: a cache built from plain dicts and a recorder of its ports.

``World`` holds Pods, Nodes and the gpu-map as the informers would; its indexes use the very
index functions the controller registers. ``Recorder`` answers HTTP calls from a script and
records every action, so a test reads "given these objects, these actions happen".
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import jsonpatch

from dpctl import api
from dpctl.clients.http import HttpCallError
from dpctl.dualpods import gpumap, podview
from dpctl.dualpods.cache import POD_INDEXERS
from dpctl.dualpods.latency import Step
from dpctl.dualpods.logrelay import Target
from dpctl.dualpods.podview import RawObj
from dpctl.dualpods.ports import Counted, DeleteReason, ErrorReason, Path, Ports
from dpctl.kube import ApiError
from dpctl.launcher.api import InstanceState

NS = "ns1"

SERVER_PATCH = """\
metadata:
  labels: {"model": "granite", "app": null}
spec:
  containers:
  - name: inference-server
    image: docker.io/vllm/vllm-openai:v0.10.2
    command: [vllm, serve, --port=8000, --model=ibm-granite/granite-3.3-2b-instruct, --enable-sleep-mode]
    env:
    - {name: VLLM_SERVER_DEV_MODE, value: "1"}
    readinessProbe:
      httpGet: {path: /health, port: 8000}
"""


def gpu_uuid(node: str, index: int) -> str:
    return f"GPU-{node}-{index}"


def requester(
    name: str = "req-a",
    uid: str = "uid-a",
    node: str | None = "node-1",
    ip: str = "127.64.0.2",
    running: bool = True,
    ready: bool = False,
    patch: str = SERVER_PATCH,
    annotations: dict[str, str] | None = None,
    finalizers: Sequence[str] = (),
    deleting: bool = False,
    restarts: int = 0,
    dialect: api.Dialect = api.ORIGINAL,
) -> dict[str, Any]:
    ann = {dialect.server_patch: patch, dialect.admin_port: "8081"}
    ann.update(annotations or {})
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": uid,
            "resourceVersion": "10",
            "labels": {"app": "dp-example"},
            "annotations": ann,
            "finalizers": list(finalizers),
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {
            "containers": [
                {
                    "name": "inference-server",
                    "image": "quay.io/x/requester:latest",
                    "ports": [
                        {"name": "probes", "containerPort": 8080},
                        {"name": "spi", "containerPort": 8081},
                    ],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
                    "resources": {"limits": {"nvidia.com/gpu": "1", "cpu": "1", "memory": "250Mi"}},
                }
            ]
        },
        "status": {},
    }
    if node:
        pod["spec"]["nodeName"] = node
    if deleting:
        pod["metadata"]["deletionTimestamp"] = "2026-01-01T01:00:00Z"
    if node and running:
        pod["status"] = {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [
                {
                    "name": "inference-server",
                    "ready": ready,
                    "restartCount": restarts,
                    "state": {"running": {"startedAt": "2026-01-01T00:00:05Z"}},
                }
            ],
        }
    return pod


def runner(
    name: str = "req-a-server",
    uid: str = "uid-r",
    node: str = "node-1",
    gpus: Sequence[int] = (0,),
    bound_to: tuple[str, str] | None = ("uid-a", "req-a"),
    nominal: str = "hash-1",
    ip: str = "127.64.0.3",
    running: bool = True,
    ready: bool = True,
    restarts: int = 0,
    deleting: bool = False,
    used_at: str = "2026-01-01T00:10:00Z",
    sleeping_label: str | None = None,
    dialect: api.Dialect = api.ORIGINAL,  # of the controller that bound it
) -> dict[str, Any]:
    ann = {api.NOMINAL_ANNOTATION: nominal}
    finalizers = []
    labels: dict[str, str] = {}
    if bound_to:
        ann[api.REQUESTER_ANNOTATION] = f"{bound_to[0]} {bound_to[1]}"
        finalizers.append(dialect.runner_finalizer)
        labels[api.DUAL_LABEL] = bound_to[1]
    if sleeping_label is not None:
        labels[api.SLEEPING_LABEL] = sleeping_label
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": uid,
            "resourceVersion": "20",
            "labels": labels,
            "annotations": ann,
            "finalizers": finalizers,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "managedFields": [{"manager": api.FIELD_MANAGER, "operation": "Update", "time": used_at}],
        },
        "spec": {
            "nodeSelector": {api.HOSTNAME_LABEL: node},
            "nodeName": node,
            "containers": [
                {
                    "name": "inference-server",
                    "image": "docker.io/vllm/vllm-openai:v0.10.2",
                    "env": [{"name": "CUDA_VISIBLE_DEVICES", "value": ",".join(str(g) for g in gpus)}],
                    "readinessProbe": {"httpGet": {"path": "/health", "port": 8000}},
                }
            ],
        },
        "status": {},
    }
    if deleting:
        pod["metadata"]["deletionTimestamp"] = "2026-01-01T01:00:00Z"
    if running:
        pod["status"] = {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [
                {
                    "name": "inference-server",
                    "ready": ready,
                    "restartCount": restarts,
                    "state": {"running": {"startedAt": "2026-01-01T00:00:10Z"}},
                }
            ],
        }
    return pod


def node(name: str = "node-1", unschedulable: bool = False, deleting: bool = False) -> dict[str, Any]:
    n: dict[str, Any] = {"metadata": {"name": name, "uid": f"uid-{name}"}, "spec": {}}
    if unschedulable:
        n["spec"]["unschedulable"] = True
    if deleting:
        n["metadata"]["deletionTimestamp"] = "2026-01-01T01:00:00Z"
    return n


def gpu_map_cm(nodes: dict[str, int]) -> dict[str, Any]:
    return {
        "metadata": {"name": api.GPU_MAP_NAME, "namespace": NS, "resourceVersion": "5"},
        "data": {n: json.dumps({gpu_uuid(n, i): i for i in range(count)}) for n, count in nodes.items()},
    }


class World:
    """The informer caches, as plain dicts, indexed like the controller's."""

    def __init__(
        self,
        pods: Sequence[RawObj] = (),
        nodes: Sequence[RawObj] = (),
        gpu_map: RawObj | None = None,
        iscs: Sequence[RawObj] = (),
        lcs: Sequence[RawObj] = (),
        launcher_path: bool = True,
    ) -> None:
        self.pods = {p["metadata"]["name"]: copy.deepcopy(dict(p)) for p in pods}
        self.nodes = {n["metadata"]["name"]: n for n in nodes}
        self.gpu_map_cm = gpu_map
        self.iscs = {i["metadata"]["name"]: i for i in iscs}
        self.lcs = {lc["metadata"]["name"]: lc for lc in lcs}
        self.launcher_path = launcher_path

    def _index(self, index: str, value: str) -> list[RawObj]:
        fn = POD_INDEXERS[index]
        return [p for p in self.pods.values() if value in list(fn(p))]

    def pod_by_uid(self, uid: str) -> RawObj | None:
        found = self._index("uid", uid)
        return found[0] if found else None

    def pod(self, name: str) -> RawObj | None:
        return self.pods.get(name)

    def providers_bound_to(self, requester_uid: str) -> list[RawObj]:
        return self._index("bound-requester", requester_uid)

    def runners_with_nominal(self, nominal: str) -> list[RawObj]:
        return self._index("nominal", nominal)

    def runners_on_gpu(self, node: str, index: int) -> list[RawObj]:
        return self._index("gpu", f"{node} {index}")

    def node(self, name: str) -> RawObj | None:
        return self.nodes.get(name)

    def gpu_map(self) -> gpumap.GpuMap | None:
        return gpumap.parse(self.gpu_map_cm)

    def requesters_on_node(self, node: str) -> list[RawObj]:
        return self._index("requesters-by-node", node)

    def launcher_path_on(self) -> bool:
        return self.launcher_path

    def launchers_with_config_hash(self, config_hash: str) -> list[RawObj]:
        return self._index("launchers-by-config-hash", config_hash)

    def launchers_on_node(self, node: str) -> list[RawObj]:
        return self._index("launchers-by-node", node)

    def launchers(self) -> list[RawObj]:
        return [p for p in self.pods.values() if podview.is_launcher(p)]

    def inference_server_config(self, name: str) -> RawObj | None:
        return self.iscs.get(name)

    def launcher_config(self, name: str) -> RawObj | None:
        return self.lcs.get(name)


@dataclass
class Recorder:
    """Records actions; HTTP answers come from the fields below."""

    world: World
    gpus: dict[str, list[str]] = field(default_factory=dict)  # requester IP -> UUIDs
    asleep: dict[str, bool] = field(default_factory=dict)  # runner IP -> sleeping
    fail: dict[str, Exception] = field(default_factory=dict)  # action name -> error to raise
    create_conflict: bool = False
    # What the API server (not the lagging cache) holds, for get_pod after a create conflict.
    api_pods: dict[str, RawObj] = field(default_factory=dict)
    actions: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    counts: list[tuple[str, str]] = field(default_factory=list)
    actuations: list[str] = field(default_factory=list)
    added: list[tuple[str, float]] = field(default_factory=list)
    relays: dict[str, Target] = field(default_factory=dict)
    # What the stubs report in use, by UUID.
    memory: dict[str, int] = field(default_factory=dict)
    # The launchers' instances, by launcher IP then instance id; instances asleep are in
    # ``asleep`` under "<launcher IP>:<port>".
    launched: dict[str, dict[str, InstanceState]] = field(default_factory=dict)
    launcher_actions: list[tuple[Any, ...]] = field(default_factory=list)
    durations: list[tuple[str, float, bool]] = field(default_factory=list)
    dualities: list[tuple[str, bool]] = field(default_factory=list)
    # Apply JSON patches to the World's Pods (as the API server would), and answer with the result.
    apply: bool = False

    def _maybe_fail(self, what: str) -> None:
        if what in self.fail:
            raise self.fail[what]

    def verbs(self) -> list[str]:
        return [a[0] for a in self.actions]

    async def create_pod(self, pod: RawObj) -> dict[str, Any]:
        meta = pod["metadata"]
        name = meta.get("name") or meta.get("generateName", "") + "x1"  # as the API server names it
        self.actions.append(("create", name, copy.deepcopy(dict(pod))))
        self._maybe_fail("create")
        if (self.create_conflict and name in self.api_pods) or name in self.world.pods:
            raise ApiError(409, "AlreadyExists", "already exists", "POST", "/pods")
        created = copy.deepcopy(dict(pod))
        created["metadata"]["name"] = name
        created["metadata"]["uid"] = "uid-new-" + name
        created["metadata"]["resourceVersion"] = "100"
        return created

    async def patch_pod(self, name: str, patch: RawObj | list[RawObj]) -> dict[str, Any]:
        self.actions.append(("patch", name, copy.deepcopy(patch)))
        self._maybe_fail("patch")
        if self.apply and name in self.world.pods:
            if isinstance(patch, list):
                self.world.pods[name] = _json_patched(self.world.pods[name], patch)
            else:
                self.world.pods[name] = _merge(self.world.pods[name], patch)
        return copy.deepcopy(dict(self.world.pods.get(name, {"metadata": {"name": name}})))

    async def delete_pod(self, name: str, uid: str, resource_version: str | None = None) -> None:
        self.actions.append(("delete", name, uid, resource_version))
        self._maybe_fail("delete")

    async def get_pod(self, name: str) -> dict[str, Any] | None:
        self.actions.append(("get", name))
        pod = self.api_pods.get(name, self.world.pods.get(name))
        return copy.deepcopy(dict(pod)) if pod is not None else None

    async def accelerator_memory(self, host: str, port: int) -> dict[str, int]:
        self.actions.append(("accelerator_memory", host, port))
        self._maybe_fail("accelerator_memory")
        return dict(self.memory)

    async def query_gpus(self, host: str, port: int, dialect: api.Dialect) -> list[str]:
        self.actions.append(("query_gpus", host, port, dialect))
        self._maybe_fail("query_gpus")
        if host not in self.gpus:
            raise HttpCallError("get_gpu_uuids", f"http://{host}:{port}", None, "connection refused")
        return self.gpus[host]

    async def relay(self, host: str, port: int, ready: bool) -> None:
        self.actions.append(("relay", host, ready))
        self._maybe_fail("relay")

    async def is_sleeping(self, host: str, port: int) -> bool:
        self.actions.append(("is_sleeping", host))
        self._maybe_fail("is_sleeping")
        return self.asleep.get(f"{host}:{port}", self.asleep.get(host, False))

    async def sleep(self, host: str, port: int) -> None:
        self.actions.append(("sleep", host))
        self._maybe_fail("sleep")

    async def wake(self, host: str, port: int) -> None:
        self.actions.append(("wake", host))
        self._maybe_fail("wake")

    async def instances(self, host: str) -> list[InstanceState]:
        self.launcher_actions.append(("list", host))
        self._maybe_fail("list_instances")
        return list(self.instances_of(host).values())

    async def create(self, host: str, instance_id: str, body: RawObj) -> InstanceState:
        self.launcher_actions.append(("create", host, instance_id))
        self._maybe_fail("create_instance")
        if instance_id in self.instances_of(host):
            raise HttpCallError("create_instance", f"http://{host}:8001", 409, "exists")
        state = InstanceState.model_validate({**body, "status": "running", "instance_id": instance_id})
        self.instances_of(host)[instance_id] = state
        return state

    async def delete(self, host: str, instance_id: str) -> bool:
        self.launcher_actions.append(("delete", host, instance_id))
        self._maybe_fail("delete_instance")
        return self.instances_of(host).pop(instance_id, None) is not None

    async def log_tail(self, host: str, instance_id: str, nbytes: int) -> bytes:
        self.launcher_actions.append(("log", host, instance_id))
        return b"error: unrecognized arguments: --bad"[-nbytes:]

    def instances_of(self, host: str) -> dict[str, InstanceState]:
        return self.launched.setdefault(host, {})

    def follow(self, uid: str, target: Target) -> None:
        self.relays[uid] = target

    def stop(self, uid: str) -> None:
        self.relays.pop(uid, None)

    def event(self, pod: RawObj, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    def count(self, what: Counted) -> None:
        self.counts.append((what, ""))

    def runner_deleted(self, reason: DeleteReason) -> None:
        self.counts.append(("runner_deleted", reason))

    def status_error(self, reason: ErrorReason) -> None:
        self.counts.append(("status_error", reason))

    @property
    def ports(self) -> Ports:
        """The recorder as every port at once: it records all actions in one sequence."""
        return Ports(pods=self, stubs=self, servers=self, report=self, logs=self, launchers=self)

    def actuated(self, path: Path, requester: RawObj, isc: str = "", instances_deleted: int = 0) -> None:
        self.actuations.append(path)

    def launcher_created(self, lc: str, seconds: float, success: bool) -> None:
        self.durations.append((lc, seconds, success))

    def duality(self, launcher: RawObj, instance_id: str, gpu_uuids: Sequence[str], bound: bool) -> None:
        self.dualities.append((instance_id, bound))

    def added_latency(self, step: Step, seconds: float) -> None:
        self.added.append((step, seconds))


def _json_patched(pod: RawObj, patch: list[RawObj]) -> Any:
    """A JSON patch applied as the API server applies it: a ``test`` of null passes where the
    member is absent; a failed test is a conflict."""
    ops = []
    for op in patch:
        if op["op"] == "test" and op["value"] is None:
            try:
                found = jsonpatch.JsonPointer(op["path"]).resolve(pod)
            except jsonpatch.JsonPointerException:
                continue
            if found is not None:
                raise ApiError(409, "Conflict", f"test of {op['path']} failed", "PATCH", "/pods")
            continue
        ops.append(op)
    try:
        return jsonpatch.apply_patch(pod, ops)
    except jsonpatch.JsonPatchTestFailed as err:
        raise ApiError(409, "Conflict", str(err), "PATCH", "/pods") from None


def _merge(target: Any, patch: Any) -> Any:
    """A strategic merge patch of maps (labels, annotations) applied, enough for these tests."""
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target)
    for key, value in patch.items():
        if key.startswith("$") or key == "uid":
            continue
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def json_patch_guards(patch: Any) -> dict[str, Any]:
    """What a JSON patch's ``test`` operations require, by path."""
    return {op["path"]: op["value"] for op in patch if op["op"] == "test"}


def json_patch_edits(patch: Any) -> dict[str, Any]:
    """What a JSON patch changes, by path (a removal as None)."""
    return {op["path"]: op.get("value") for op in patch if op["op"] != "test"}


def removed_finalizers(patch: Any) -> list[str]:
    """The finalizers a JSON patch removes: each removal's index is tested for its name first."""
    guards = json_patch_guards(patch)
    return [guards[op["path"]] for op in patch if op["op"] == "remove" and "/finalizers/" in op["path"]]
