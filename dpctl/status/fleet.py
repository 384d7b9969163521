"""The fleet report behind ``dpctl status``: per Node and GPU, who holds it, its runner, its sleepers;
per launcher Pod its LauncherConfig, Node, requester and vLLM instances.

Owns turning what the API returns (the namespace's Pods, the cluster's Nodes, the ``gpu-map``
ConfigMap) and what the launchers answered (`LauncherSeen`: their instance lists and each
instance's ``/is_sleeping``, read by the command) into a typed report, and naming what stops
progress. Pure: no I/O, and the clock is an argument, so the report of a hand-built fleet is
exactly testable. Objects are read only through
:mod:`~dpctl.dualpods.podview`, :mod:`~dpctl.dualpods.launcherview` and
:mod:`~dpctl.dualpods.gpumap`, so the report sees a Pod and the map exactly as the controller does. The models are pydantic so JSON and YAML output are a plain
dump; their keys are camelCase like the Kubernetes objects beside them.

A GPU is identified by its Node and its index or UUID, whichever is known: ``gpu-map`` links the
two, requesters name UUIDs (their ``accelerators`` annotation), runners name indices (their
``CUDA_VISIBLE_DEVICES``). A GPU that only one side names still gets a row, with the other left
empty, so a bad or missing map entry hides nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from dpctl import api
from dpctl.dualpods import gpumap, launcherview, podview
from dpctl.dualpods.launcherview import BookkeepingError, bookkeeping
from dpctl.dualpods.podview import RawObj
from dpctl.launcher.api import InstanceState, Status


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        validate_by_name=True,
        serialize_by_alias=True,
    )


class PodRef(_Model):
    """A requester: its name and Ready condition."""

    name: str
    ready: bool


class RunnerRef(_Model):
    """A runner, bound or sleeping."""

    name: str
    ready: bool
    sleeping: bool
    terminating: bool
    # The controller's last write to the runner: when it was last bound or unbound. This is the
    # sleeper limit's "last used" clock (least recently used sleepers are evicted first).
    last_used: dt.datetime | None


class Gpu(_Model):
    """One GPU: who holds it, the server running for them, the servers sleeping on it."""

    index: int | None  # None: the UUID is not in this Node's gpu-map entry
    uuid: str  # "": the index is not in this Node's gpu-map entry
    requester: PodRef | None
    runner: RunnerRef | None  # the runner bound to the requester, awake unless ``sleeping``
    sleepers: tuple[RunnerRef, ...]  # least recently used first: the next to be evicted leads


class Node(_Model):
    """A Node that has GPUs (allocatable, in gpu-map, or named by a Pod) and its GPUs by index."""

    name: str
    found: bool | None  # None: Nodes could not be read
    ready: bool | None
    cordoned: bool | None
    allocatable_gpus: int | None
    gpu_map_entry: Literal["ok", "invalid", "absent"]
    gpus: tuple[Gpu, ...]


class Instance(_Model):
    """One vLLM instance of a launcher, as the launcher lists it and its own port answers."""

    id: str
    isc: str  # the InferenceServerConfig it was created for (its isc-name annotation)
    port: int | None  # its inference-port annotation; None: the launcher did not record one
    gpu_uuids: tuple[str, ...]
    gpu_indices: tuple[int | None, ...]  # per UUID, from gpu-map; None: not in the Node's entry
    # awake / asleep: its /is_sleeping answer; stopped: its process ended (the launcher says);
    # unknown: running but /is_sleeping did not answer (still loading, or wedged; see ``error``).
    state: Literal["awake", "asleep", "stopped", "unknown"]
    bound: bool  # the instance the launcher's requester is served by
    exit_code: int | None
    error: str  # why the state is unknown; "" otherwise


class Launcher(_Model):
    """A launcher Pod: where it runs, whom it serves, and its instances."""

    name: str
    launcher_config: str
    node: str
    ready: bool
    terminating: bool
    requester: PodRef | None  # the bound requester (not ready when it is gone)
    instance_id: str  # the bound instance (the launcher's instance-id annotation); "" unbound
    sleeping: bool  # the dual-pods.llm-d.ai/sleeping label: its bound instance is not known awake
    # The controller's last write to the Pod: when it was last bound or unbound. Per-instance use
    # times live only in the controller's memory (the LRU of maxInstances), not on the wire.
    last_used: dt.datetime | None
    # ok: its instance list was read; unreachable: that failed (``error`` says why); not-asked: no
    # IP yet, not Ready, or terminating, so it was not asked.
    api: Literal["ok", "unreachable", "not-asked"]
    error: str
    instances: tuple[Instance, ...]


class Problem(_Model):
    """Something that stops progress, in words a user can act on."""

    object: str  # kind/name, as kubectl writes it: pod/x, node/y, configmap/gpu-map
    message: str


class FleetReport(_Model):
    """What ``dpctl status`` prints; ``-o json`` and ``-o yaml`` are this model, dumped."""

    namespace: str
    generated_at: dt.datetime
    nodes_readable: bool
    gpu_map_found: bool
    nodes: tuple[Node, ...]
    launchers: tuple[Launcher, ...] = ()
    errors: tuple[Problem, ...]


@dataclass(frozen=True)
class InstanceSeen:
    """What the command learnt of one instance: the launcher's state of it and its own answer."""

    state: InstanceState
    sleeping: bool | None = None  # /is_sleeping; None: not asked (stopped, no port) or it failed
    error: str = ""  # why /is_sleeping gave no answer


@dataclass(frozen=True)
class LauncherSeen:
    """What the command learnt from one launcher's API: its instances, or why it could not."""

    instances: tuple[InstanceSeen, ...] = ()
    error: str = ""  # the instance list could not be read; "" when it was


def should_ask(launcher: RawObj) -> bool:
    """Whether its API is worth asking: it has an IP, is Ready and is not going away."""
    return (
        bool(podview.pod_ip(launcher)) and podview.pod_ready(launcher) and not podview.is_deleting(launcher)
    )


@dataclass
class _Slot:
    """One GPU while the report is assembled."""

    index: int | None
    uuid: str
    requester: RawObj | None = None
    # When the requester is not in the namespace (it went away), the runner still names it.
    requester_name: str = ""
    bound: list[RawObj] = field(default_factory=list)
    sleepers: list[RawObj] = field(default_factory=list)


@dataclass
class _NodeSlots:
    slots: list[_Slot] = field(default_factory=list)
    by_uuid: dict[str, _Slot] = field(default_factory=dict)
    by_index: dict[int, _Slot] = field(default_factory=dict)

    def add(self, index: int | None, uuid: str) -> _Slot:
        slot = _Slot(index, uuid)
        self.slots.append(slot)
        if uuid:
            self.by_uuid[uuid] = slot
        if index is not None:
            self.by_index[index] = slot
        return slot

    def for_uuid(self, uuid: str) -> _Slot:
        return self.by_uuid.get(uuid) or self.add(None, uuid)

    def for_index(self, index: int) -> _Slot:
        return self.by_index.get(index) or self.add(index, "")


def build(
    namespace: str,
    pods: Iterable[RawObj],
    nodes: Iterable[RawObj] | None,
    gpu_map_cm: RawObj | None,
    now: dt.datetime,
    launchers_seen: Mapping[str, LauncherSeen] | None = None,
) -> FleetReport:
    """The report; ``nodes`` is None when they cannot be read, ``gpu_map_cm`` when it is absent.

    ``launchers_seen`` holds, by launcher Pod name, what each launcher that was asked answered
    (`should_ask`); a launcher missing from it shows as not asked.
    """
    gpu_map = gpumap.parse(gpu_map_cm)
    seen = launchers_seen or {}
    node_objs = {podview.name(n): n for n in nodes} if nodes is not None else None
    by_name = sorted(pods, key=podview.name)
    launcher_pods = [p for p in by_name if podview.is_launcher(p)]
    requesters = [p for p in by_name if podview.is_requester(p) and not podview.is_launcher(p)]
    runners = [p for p in by_name if podview.is_runner(p) and not podview.is_launcher(p)]
    requesters_by_uid = {podview.uid(r): r for r in requesters}
    bound_uids = {b[0] for b in map(podview.bound_requester, [*runners, *launcher_pods]) if b is not None}

    per_node = _map_gpus(gpu_map)
    for req in requesters:
        _place_requester(per_node, req)
    for runner in runners:
        _place_runner(per_node, runner, requesters_by_uid)
    for launcher in launcher_pods:
        _place_launcher(per_node, launcher, requesters_by_uid, seen.get(podview.name(launcher)))
    # Nodes without GPUs are left out: in a big cluster they would bury the ones that matter.
    names = set(per_node) | {n for n, obj in (node_objs or {}).items() if _allocatable_gpus(obj)}
    report_nodes = tuple(_node(n, node_objs, gpu_map, per_node.get(n, _NodeSlots())) for n in sorted(names))

    errors = [
        *_gpu_map_errors(gpu_map, report_nodes),
        *_node_errors(node_objs, per_node),
        *(e for r in requesters for e in _requester_errors(r, node_objs, podview.uid(r) in bound_uids)),
        *(e for r in runners for e in _runner_errors(r, requesters_by_uid)),
    ]
    report_launchers = tuple(
        _launcher(p, requesters_by_uid, seen.get(podview.name(p)), gpu_map, now) for p in launcher_pods
    )
    errors += [
        e
        for p, r in zip(launcher_pods, report_launchers, strict=True)
        for e in _launcher_errors(p, r, requesters_by_uid)
    ]
    errors += _instance_errors(report_launchers)
    return FleetReport(
        namespace=namespace,
        generated_at=now,
        nodes_readable=node_objs is not None,
        gpu_map_found=gpu_map is not None,
        nodes=report_nodes,
        launchers=report_launchers,
        errors=tuple(sorted(errors, key=lambda p: (p.object, p.message))),
    )


def _map_gpus(gpu_map: gpumap.GpuMap | None) -> dict[str, _NodeSlots]:
    """Every GPU the map lists, used or not."""
    per_node: dict[str, _NodeSlots] = {}
    for node_name, entry in (gpu_map.nodes if gpu_map is not None else {}).items():
        slots = per_node.setdefault(node_name, _NodeSlots())
        for uuid, index in sorted(entry.gpus.items(), key=lambda kv: kv[1]):
            slots.add(index, uuid)
    return per_node


def _place_requester(per_node: dict[str, _NodeSlots], req: RawObj) -> None:
    node_name = podview.node_name(req)
    if node_name:
        for uuid in _accelerators(req):
            per_node.setdefault(node_name, _NodeSlots()).for_uuid(uuid).requester = req


def _place_runner(
    per_node: dict[str, _NodeSlots], runner: RawObj, requesters_by_uid: Mapping[str, RawObj]
) -> None:
    slots = per_node.setdefault(podview.runner_node(runner), _NodeSlots())
    bound = podview.bound_requester(runner)
    for index in podview.gpu_indices(runner):
        slot = slots.for_index(index)
        if bound is None:
            slot.sleepers.append(runner)
            continue
        slot.bound.append(runner)
        # Before the controller has annotated the requester with its GPUs, the runner tells.
        if slot.requester is None:
            slot.requester = requesters_by_uid.get(bound[0])
            slot.requester_name = bound[1]


def _place_launcher(
    per_node: dict[str, _NodeSlots],
    launcher: RawObj,
    requesters_by_uid: Mapping[str, RawObj],
    seen: LauncherSeen | None,
) -> None:
    """A bound launcher is the runner of its requester's GPUs (those of its launch body)."""
    bound = podview.bound_requester(launcher)
    if bound is None:
        return
    slots = per_node.setdefault(podview.runner_node(launcher), _NodeSlots())
    for uuid in _bound_gpus(launcher, requesters_by_uid, seen):
        slot = slots.for_uuid(uuid)
        slot.bound.append(launcher)
        if slot.requester is None:
            slot.requester = requesters_by_uid.get(bound[0])
            slot.requester_name = bound[1]


def _bound_gpus(
    launcher: RawObj, requesters_by_uid: Mapping[str, RawObj], seen: LauncherSeen | None
) -> list[str]:
    """The GPUs a bound launcher serves its requester on: the committed launch body's, else the
    bound instance's as listed, else the requester's ``accelerators`` annotation."""
    try:
        uuids = bookkeeping(launcher).vllm_config.get("gpu_uuids")
        if isinstance(uuids, list) and all(isinstance(u, str) for u in uuids) and uuids:
            return list(uuids)
    except BookkeepingError:
        pass
    instance_id = podview.annotations(launcher).get(api.INSTANCE_ID_ANNOTATION, "")
    for inst in seen.instances if seen is not None else ():
        if inst.state.instance_id == instance_id and inst.state.gpu_uuids:
            return list(inst.state.gpu_uuids)
    bound = podview.bound_requester(launcher)
    req = requesters_by_uid.get(bound[0]) if bound is not None else None
    return _accelerators(req) if req is not None else []


def _launcher(
    pod: RawObj,
    requesters_by_uid: Mapping[str, RawObj],
    seen: LauncherSeen | None,
    gpu_map: gpumap.GpuMap | None,
    now: dt.datetime,
) -> Launcher:
    bound = podview.bound_requester(pod)
    requester: PodRef | None = None
    instance_id = ""
    if bound is not None:
        req = requesters_by_uid.get(bound[0])
        requester = PodRef(name=bound[1], ready=podview.pod_ready(req) if req is not None else False)
        instance_id = podview.annotations(pod).get(api.INSTANCE_ID_ANNOTATION, "")
    node_name = podview.runner_node(pod)
    entry = gpu_map.nodes.get(node_name) if gpu_map is not None else None
    indices = entry.gpus if entry is not None and not entry.error else {}
    api_state: Literal["ok", "unreachable", "not-asked"] = "not-asked"
    if seen is not None:
        api_state = "unreachable" if seen.error else "ok"
    instances = tuple(
        _instance(i, instance_id, indices)
        for i in sorted(seen.instances if seen is not None else (), key=lambda i: i.state.instance_id)
    )
    return Launcher(
        name=podview.name(pod),
        launcher_config=podview.labels(pod).get(api.LAUNCHER_CONFIG_NAME_LABEL, ""),
        node=node_name,
        ready=podview.pod_ready(pod),
        terminating=podview.is_deleting(pod),
        requester=requester,
        instance_id=instance_id,
        sleeping=podview.asleep(pod),
        last_used=_timestamp(podview.manager_time(pod)),
        api=api_state,
        error=seen.error if seen is not None else "",
        instances=instances,
    )


def _instance(seen: InstanceSeen, bound_id: str, indices: Mapping[str, int]) -> Instance:
    state = seen.state
    uuids = tuple(state.gpu_uuids or ())
    shown: Literal["awake", "asleep", "stopped", "unknown"]
    if state.status == Status.STOPPED:
        shown = "stopped"
    elif seen.sleeping is None:
        shown = "unknown"
    else:
        shown = "asleep" if seen.sleeping else "awake"
    return Instance(
        id=state.instance_id,
        isc=(state.annotations or {}).get(api.ISC_NAME_KEY, ""),
        port=launcherview.instance_port(state),
        gpu_uuids=uuids,
        gpu_indices=tuple(indices.get(u) for u in uuids),
        state=shown,
        bound=bool(bound_id) and state.instance_id == bound_id,
        exit_code=state.exit_code,
        error=seen.error if shown == "unknown" else "",
    )


def _launcher_errors(
    pod: RawObj, launcher: Launcher, requesters_by_uid: Mapping[str, RawObj]
) -> list[Problem]:
    where = f"pod/{launcher.name}"
    errors = []
    bound = podview.bound_requester(pod)
    if bound is not None and not launcher.terminating:
        if bound[0] not in requesters_by_uid:
            errors.append(
                Problem(
                    object=where, message=f"bound to requester {bound[1]} (UID {bound[0]}), which is gone"
                )
            )
        try:
            bookkeeping(pod)
        except BookkeepingError as err:
            errors.append(Problem(object=where, message=str(err)))
    if bound is None and not launcher.terminating:
        for inst in launcher.instances:
            if inst.state == "awake":  # launcher contract I2: unbound means all asleep or stopped
                errors.append(
                    Problem(
                        object=where, message=f"instance {inst.id} is awake but the launcher is not bound"
                    )
                )
    if launcher.api == "unreachable":
        errors.append(
            Problem(object=where, message=f"cannot list the launcher's instances: {launcher.error}")
        )
    elif launcher.api == "ok" and launcher.instance_id:
        bound_instance = next((i for i in launcher.instances if i.id == launcher.instance_id), None)
        if bound_instance is None:
            errors.append(
                Problem(
                    object=where,
                    message=f"bound instance {launcher.instance_id} is not in the launcher's instance list",
                )
            )
        elif bound_instance.state == "stopped":
            errors.append(Problem(object=where, message=f"bound instance {launcher.instance_id} has stopped"))
    if podview.in_trouble(pod):
        errors.append(
            Problem(
                object=where,
                message=f"launcher restarted {podview.restart_count(pod)} times and is not ready",
            )
        )
    return errors


def _instance_errors(launchers: Iterable[Launcher]) -> list[Problem]:
    """At most one awake instance per GPU (launcher contract I1), across the launchers of a Node."""
    awake: dict[tuple[str, str], list[str]] = {}
    for launcher in launchers:
        for inst in launcher.instances:
            if inst.state == "awake":
                for uuid in inst.gpu_uuids:
                    awake.setdefault((launcher.node, uuid), []).append(f"{launcher.name}/{inst.id}")
    return [
        Problem(
            object=f"node/{node}",
            message=f"GPU {uuid} has {len(holders)} awake instances ({', '.join(holders)}); at most one may be",
        )
        for (node, uuid), holders in sorted(awake.items())
        if len(holders) > 1
    ]


def _gpu_map_errors(gpu_map: gpumap.GpuMap | None, nodes: Iterable[Node]) -> list[Problem]:
    where = f"configmap/{api.GPU_MAP_NAME}"
    if gpu_map is None:
        return [Problem(object=where, message=f"ConfigMap {api.GPU_MAP_NAME} not found in the namespace")]
    errors = [Problem(object=where, message=e.error) for e in gpu_map.nodes.values() if e.error]
    for uuid, owners in gpu_map.owners.items():
        if len(owners) > 1:
            errors.append(
                Problem(object=where, message=f"GPU {uuid} is listed for nodes {', '.join(owners)}")
            )
    for node in nodes:
        if node.gpu_map_entry == "absent" and node.allocatable_gpus:
            errors.append(
                Problem(
                    object=where,
                    message=f"node {node.name!r} has {node.allocatable_gpus} allocatable "
                    f"{api.GPU_RESOURCE} but no entry in {api.GPU_MAP_NAME}",
                )
            )
    return errors


def _node_errors(node_objs: Mapping[str, RawObj] | None, per_node: Mapping[str, _NodeSlots]) -> list[Problem]:
    errors = []
    if node_objs is None:
        errors.append(Problem(object="nodes", message="cannot list Nodes: readiness and cordons not shown"))
    for node_name, slots in per_node.items():
        for slot in slots.slots:
            awake = [r for r in slot.bound if not podview.is_deleting(r)]
            if len(awake) > 1:  # contract invariant 1, broken
                errors.append(
                    Problem(
                        object=f"node/{node_name}",
                        message=f"GPU {_gpu_label(slot)} has {len(awake)} bound runners "
                        f"({', '.join(podview.name(r) for r in awake)}); at most one may be awake",
                    )
                )
    return errors


def _requester_errors(req: RawObj, node_objs: Mapping[str, RawObj] | None, has_runner: bool) -> list[Problem]:
    where = f"pod/{podview.name(req)}"
    errors = [Problem(object=where, message=m) for m in podview.status_errors(req)]
    node_name = podview.node_name(req)
    if not node_name:
        why = _unscheduled_reason(req)
        errors.append(Problem(object=where, message="not scheduled yet" + (f": {why}" if why else "")))
        return errors
    if node_objs is not None and node_name not in node_objs:
        errors.append(Problem(object=where, message=f"scheduled to node {node_name!r}, which does not exist"))
    if not _accelerators(req) and not has_runner:
        errors.append(
            Problem(object=where, message="no GPUs known yet: the controller has not read them from its stub")
        )
    return errors


def _runner_errors(runner: RawObj, requesters_by_uid: Mapping[str, RawObj]) -> list[Problem]:
    where = f"pod/{podview.name(runner)}"
    errors = []
    if not podview.gpu_indices(runner):
        errors.append(Problem(object=where, message="runner without GPU indices in CUDA_VISIBLE_DEVICES"))
    bound = podview.bound_requester(runner)
    if bound is not None and bound[0] not in requesters_by_uid and not podview.is_deleting(runner):
        errors.append(
            Problem(object=where, message=f"bound to requester {bound[1]} (UID {bound[0]}), which is gone")
        )
    if podview.in_trouble(runner):
        errors.append(
            Problem(
                object=where,
                message=f"inference server restarted {podview.restart_count(runner)} times and is not ready",
            )
        )
    return errors


def _unscheduled_reason(pod: RawObj) -> str:
    """The scheduler's word on why it has not placed the Pod (e.g. not enough free GPUs)."""
    for cond in podview.status(pod).get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == "PodScheduled" and cond.get("status") != "True":
            return str(cond.get("message") or cond.get("reason") or "")
    return ""


def _accelerators(req: RawObj) -> list[str]:
    raw = podview.annotations(req).get(api.ACCELERATORS_ANNOTATION) or ""
    return [u.strip() for u in raw.split(",") if u.strip()]


def _allocatable_gpus(node: RawObj) -> int | None:
    allocatable = podview.status(node).get("allocatable")
    value = allocatable.get(api.GPU_RESOURCE) if isinstance(allocatable, Mapping) else None
    try:
        return int(str(value)) if value is not None else None
    except ValueError:
        return None


def _gpu_label(slot: _Slot) -> str:
    return str(slot.index) if slot.index is not None else slot.uuid


def _node(
    name: str, node_objs: Mapping[str, RawObj] | None, gpu_map: gpumap.GpuMap | None, slots: _NodeSlots
) -> Node:
    obj = node_objs.get(name) if node_objs is not None else None
    entry = gpu_map.nodes.get(name) if gpu_map is not None else None
    return Node(
        name=name,
        found=obj is not None if node_objs is not None else None,
        # A Node's Ready condition has the same shape as a Pod's.
        ready=podview.pod_ready(obj) if obj is not None else None,
        cordoned=podview.node_unschedulable(obj) if obj is not None else None,
        allocatable_gpus=_allocatable_gpus(obj) if obj is not None else None,
        gpu_map_entry="absent" if entry is None else "invalid" if entry.error else "ok",
        gpus=tuple(_gpu(s) for s in sorted(slots.slots, key=_slot_order)),
    )


def _slot_order(slot: _Slot) -> tuple[int, int, str]:
    return (0, slot.index, "") if slot.index is not None else (1, 0, slot.uuid)


def _gpu(slot: _Slot) -> Gpu:
    requester: PodRef | None = None
    if slot.requester is not None:
        requester = PodRef(name=podview.name(slot.requester), ready=podview.pod_ready(slot.requester))
    elif slot.requester_name:
        requester = PodRef(name=slot.requester_name, ready=False)
    # A bound runner still terminating only shows when no live one is bound there.
    bound = sorted(slot.bound, key=lambda r: (podview.is_deleting(r), podview.name(r)))
    return Gpu(
        index=slot.index,
        uuid=slot.uuid,
        requester=requester,
        runner=_runner_ref(bound[0]) if bound else None,
        sleepers=tuple(
            _runner_ref(r)
            for r in sorted(slot.sleepers, key=lambda r: (podview.manager_time(r), podview.name(r)))
        ),
    )


def _runner_ref(runner: RawObj) -> RunnerRef:
    return RunnerRef(
        name=podview.name(runner),
        ready=podview.pod_ready(runner),
        sleeping=podview.asleep(runner),
        terminating=podview.is_deleting(runner),
        last_used=_timestamp(podview.manager_time(runner)),
    )


def _timestamp(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
