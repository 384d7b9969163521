"""An unbound requester on the launcher path gets a launcher (launcher contract R5–R14): its GPUs
from the stub, its InferenceServerConfig and LauncherConfig read and checked, then a launcher
bound to it — one that holds its instance (hot), one with room (warm), one made room in
(reclaim), or a new one created already bound (cold).

Only the binding happens here; the instance is created or woken by the bound branch
(:mod:`.instances`), which the bind's own Pod event (or, here, a direct call) brings on. Every
problem a user can fix is a status error naming it, and waits for the object at fault to change.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pydantic

from dpctl import api
from dpctl.api import LogMsg
from dpctl.clients.http import HttpCallError
from dpctl.dualpods import gpumap, launcherchoice, launcherview, patches, podview
from dpctl.dualpods.podview import RawObj
from dpctl.dualpods.ports import Path
from dpctl.dualpods.state import ServerState
from dpctl.dualpods.steps import instances, pool
from dpctl.dualpods.steps.actuation import requester_gpus
from dpctl.dualpods.steps.context import Context
from dpctl.dualpods.steps.finalizers import ensure_requester_state, user_error, user_errors, wait
from dpctl.fma.v1alpha1 import LauncherConfigSpec, ModelServerConfig
from dpctl.kube import ApiError
from dpctl.launcher.api import Status
from dpctl.podbuild.launcher import (
    LauncherTemplate,
    instance_id,
    launch_body,
    launcher_config_hash,
    launcher_for_node,
    launcher_template,
)
from dpctl.podbuild.nominal import BuildError
from dpctl.podbuild.routing import RoutingMetadata, options_problem, routing_problems
from dpctl.workqueue.outcome import Done, Outcome, Retry

DONE = Done()

EMPTY_GPUS = "the assigned set of GPUs is empty (does the requester's container request nvidia.com/gpu?)"
LAUNCHER_PATH_OFF = (
    "the launcher path is off: the controller cannot read InferenceServerConfigs and LauncherConfigs"
    " (install the chart's CRDs, grant it get/list/watch on them, and restart it)"
)


@dataclass(frozen=True)
class Wanted:
    """What a requester asks of a launcher: its instance, and where that instance may run."""

    isc: str
    server: ModelServerConfig
    instance_id: str
    body: Mapping[str, Any]
    routing: RoutingMetadata
    launcher_config: str
    template: LauncherTemplate
    max_instances: int

    def bookkeeping(self) -> dict[str, str]:
        """The four annotations a bound launcher records its instance with (R13)."""
        return {
            api.INSTANCE_ID_ANNOTATION: self.instance_id,
            api.SERVER_PORT_ANNOTATION: str(self.server.port),
            api.VLLM_CONFIG_ANNOTATION: json.dumps(self.body, separators=(",", ":"), sort_keys=True),
            api.ISC_ROUTING_METADATA_ANNOTATION: self.routing.annotation_value(),
        }


async def actuate(cx: Context, st: ServerState, requester: RawObj, node: str) -> Outcome:
    if not cx.cache.launcher_path_on():
        return await user_error(cx, st, requester, "LauncherPathOff", LAUNCHER_PATH_OFF)
    isc = podview.isc_name(requester)
    if not isc:
        message = f"empty value for annotation {json.dumps(api.INFERENCE_SERVER_CONFIG_ANNOTATION)}"
        return await user_error(cx, st, requester, "BadInferenceServerConfig", message)
    uuids = await requester_gpus(cx, st, requester, node)
    if not isinstance(uuids, tuple):
        return uuids
    if not uuids:
        return await user_error(cx, st, requester, "BadInferenceServerConfig", EMPTY_GPUS)
    wanted = await _wanted(cx, st, requester, isc, uuids, node)
    if not isinstance(wanted, Wanted):
        return wanted
    busy = [
        *pool.gpus_served_by_launchers(cx, requester, node, uuids),
        *_direct_runners_on(cx, requester, node, uuids),
    ]
    if busy:
        return await wait(cx, st, requester, f"GPUs {busy} still held by another inference server")
    config_hash = launcher_config_hash(wanted.template.template_hash, node)
    if st.refused == (podview.resource_version(requester), config_hash):
        return DONE  # the API server refused this launcher; nothing has changed since
    async with cx.node_lock(node):
        chosen = await _choose_and_bind(cx, st, requester, wanted, node, config_hash)
    if isinstance(chosen, dict):  # bound: serve it at once (its own event would do it too)
        return await instances.serve_bound(cx, st, requester, chosen)
    return chosen


async def _choose_and_bind(
    cx: Context, st: ServerState, requester: RawObj, wanted: Wanted, node: str, config_hash: str
) -> dict[str, Any] | Outcome:
    """R11–R14, under the Node's lock (the cache then shows the binds made before ours): the
    launcher bound, or the outcome when none was."""
    candidates = await _candidates(cx, cx.cache.launchers_with_config_hash(config_hash))
    choice = launcherchoice.choose_launcher(
        [c for c, _ in candidates], wanted.instance_id, wanted.server.port, wanted.max_instances
    )
    pods = {podview.name(pod): pod for _, pod in candidates}
    match choice:
        case launcherchoice.Hot(launcher):
            return await _bind(cx, st, requester, pods[launcher], wanted, "hot", 0)
        case launcherchoice.Warm(launcher):
            return await _bind(cx, st, requester, pods[launcher], wanted, "warm", 0)
        case launcherchoice.Reclaim(launcher, victims):
            pod = pods[launcher]
            for victim in victims:
                await cx.ports.launchers.delete(podview.pod_ip(pod), victim)
                cx.memory.forget_instance(podview.uid(pod), victim)
                cx.log.info(LogMsg.RECLAIMED_INSTANCE, launcher=launcher, instance=victim, node=node)
            return await _bind(cx, st, requester, pod, wanted, "warm", len(victims))
        case launcherchoice.AwaitCandidates():
            return await wait(cx, st, requester, "a launcher for it is still starting")
        case launcherchoice.CreateLauncher():
            return await _create(cx, st, requester, wanted, node, config_hash)


async def _wanted(
    cx: Context, st: ServerState, requester: RawObj, isc: str, uuids: Sequence[str], node: str
) -> Wanted | Outcome:
    """R7, R8, R10: the ISC and its LC, read and checked; a status error for what is wrong."""
    isc_obj = cx.cache.inference_server_config(isc)
    if isc_obj is None:
        message = f"failed to get InferenceServerConfig {json.dumps(isc)}: not found"
        return await user_error(cx, st, requester, "BadInferenceServerConfig", message)
    spec = launcherview.isc_spec(isc_obj)
    if isinstance(spec, str):
        return await user_error(cx, st, requester, "BadInferenceServerConfig", spec)
    server = spec.model_server_config
    routing = RoutingMetadata(dict(server.labels or {}), dict(server.annotations or {}))
    problems = [p for p in [options_problem(server.options)] if p is not None]
    lc_name = spec.launcher_config_name
    lc_obj = cx.cache.launcher_config(lc_name)
    template: LauncherTemplate | None = None
    max_instances = 1
    if lc_obj is None:
        problems.append(f"failed to get LauncherConfig {json.dumps(lc_name)}: not found")
    else:
        try:
            template = launcher_template(lc_obj)
            max_instances = LauncherConfigSpec.model_validate(lc_obj.get("spec") or {}).max_instances
        except BuildError as err:
            problems.append(str(err))
        except pydantic.ValidationError as err:
            problems.append(
                f"LauncherConfig {json.dumps(lc_name)} is malformed: {launcherview.malformed(err)}"
            )
    on_launcher = template.pod if template is not None else {}
    problems += routing_problems(routing, podview.labels(on_launcher), podview.annotations(on_launcher))
    if problems or template is None:
        return await user_errors(cx, st, requester, "BadInferenceServerConfig", problems)
    return Wanted(
        isc=isc,
        server=server,
        instance_id=instance_id(server, uuids),
        body=launch_body(isc, server, uuids),
        routing=routing,
        launcher_config=lc_name,
        template=template,
        max_instances=max_instances,
    )


def _direct_runners_on(cx: Context, requester: RawObj, node: str, uuids: Sequence[str]) -> list[str]:
    """GPUs of ``uuids`` a direct runner may still be awake on (I1 across both paths). The
    launcher path needs no gpu-map; where there is one, it names the GPUs' indices."""
    try:
        indices = gpumap.indices_for(cx.cache.gpu_map(), node, uuids)
    except gpumap.GpuMapError:
        return []
    return [uuids[indices.index(i)] for i in pool.gpus_held_by_others(cx, requester, node, indices)]


async def _candidates(
    cx: Context, launchers: Sequence[RawObj]
) -> list[tuple[launcherchoice.Candidate, RawObj]]:
    """R11: the unbound, live launchers of this LC and Node with their instances (None while a
    launcher is not Ready, or does not answer); stopped instances and those without a readable
    port are deleted first, as no live server needs them."""
    found: list[tuple[launcherchoice.Candidate, RawObj]] = []
    now = time.monotonic()
    for pod in launchers:
        if podview.is_deleting(pod) or podview.bound_requester(pod) is not None:
            continue
        if podview.status(pod).get("phase") in ("Failed", "Succeeded"):
            continue
        listed: tuple[launcherchoice.Instance, ...] | None = None
        if podview.pod_ready(pod) and podview.pod_ip(pod):
            try:
                listed = await _usable_instances(cx, pod, now)
            except HttpCallError as err:
                cx.log.progress(
                    "Launcher does not list its instances", launcher=podview.name(pod), error=str(err)
                )
        found.append((launcherchoice.Candidate(podview.name(pod), listed), pod))
    return found


async def _usable_instances(cx: Context, pod: RawObj, now: float) -> tuple[launcherchoice.Instance, ...]:
    host, uid = podview.pod_ip(pod), podview.uid(pod)
    signature = podview.annotations(pod).get(api.INSTANCE_SIGNATURE_ANNOTATION, "")
    states = cx.memory.listing(uid, signature)
    if states is None:
        states = tuple(await cx.ports.launchers.instances(host))
        cx.memory.listed(uid, signature, states)
    kept: list[launcherchoice.Instance] = []
    for state in states:
        port = launcherview.instance_port(state)
        if state.status == Status.STOPPED or port is None:
            await cx.ports.launchers.delete(host, state.instance_id)
            cx.memory.forget_instance(uid, state.instance_id)
            continue
        last = cx.memory.last_use(uid, state.instance_id, now)
        kept.append(launcherchoice.Instance(state.instance_id, port, False, last))
    return tuple(kept)


async def _bind(
    cx: Context,
    st: ServerState,
    requester: RawObj,
    launcher: RawObj,
    wanted: Wanted,
    path: Path,
    deleted: int,
) -> dict[str, Any] | Outcome:
    """R13: one write binds the launcher (the requester's state follows as it is served)."""
    name = podview.name(launcher)
    try:
        bound = await cx.ports.pods.patch_pod(
            name, patches.launcher_binding(requester, launcher, wanted.bookkeeping())
        )
    except ApiError as err:
        if err.conflict or err.not_found:
            return Retry(f"launcher {name} changed while binding: {err.message}")
        raise
    cx.ports.report.count("bind")
    cx.memory.used(podview.uid(launcher), wanted.instance_id, time.monotonic())
    st.actuation_path, st.instances_deleted = path, deleted
    cx.log.info(
        LogMsg.BOUND_LAUNCHER,
        requester=podview.name(requester),
        launcher=name,
        instance=wanted.instance_id,
        node=podview.node_name(requester),
    )
    cx.ports.report.event(
        requester, "Normal", "LauncherBound", f"bound launcher {name} for instance {wanted.instance_id}"
    )
    return bound


async def _create(
    cx: Context, st: ServerState, requester: RawObj, wanted: Wanted, node: str, config_hash: str
) -> Outcome:
    """R14: a new launcher, bound from its first version, so that it is never unaccounted for."""
    pod = launcher_for_node(wanted.template, node)
    pod["metadata"]["annotations"].update(
        {
            api.REQUESTER_ANNOTATION: f"{podview.uid(requester)} {podview.name(requester)}",
            **wanted.bookkeeping(),
        }
    )
    pod["metadata"]["labels"][api.DUAL_LABEL] = podview.name(requester)
    pod["metadata"]["finalizers"] = [api.HEAD.runner_finalizer]
    started = time.monotonic()
    try:
        cx.sending("create", podview.uid(requester))
        created = await cx.ports.pods.create_pod(pod)
    except ApiError as err:
        cx.ports.report.launcher_created(wanted.launcher_config, time.monotonic() - started, False)
        if not err.refused:
            raise
        verdict = "is invalid" if err.invalid else "is forbidden"
        message = f"the desired launcher-based server-providing Pod {verdict}: {err.detail}"
        outcome = await user_error(cx, st, requester, "LauncherRefused", message)
        current = cx.cache.pod_by_uid(podview.uid(requester)) or requester
        st.refused = (podview.resource_version(current), config_hash)
        return outcome
    cx.ports.report.launcher_created(wanted.launcher_config, time.monotonic() - started, True)
    cx.memory.used(podview.uid(created), wanted.instance_id, time.monotonic())
    st.actuation_path, st.instances_deleted = "cold", 0
    cx.log.info(
        LogMsg.CREATED_LAUNCHER,
        requester=podview.name(requester),
        launcher=podview.name(created),
        node=node,
        launcherConfig=wanted.launcher_config,
    )
    cx.ports.report.event(
        requester, "Normal", "CreatedLauncher", f"created launcher {podview.name(created)} bound to this Pod"
    )
    if podview.status_errors(requester):  # gone now; the rest is written once the launcher runs
        await ensure_requester_state(cx, st, requester, created, [], wanted.instance_id)
    return DONE  # it is Ready in a while; its events bring the bound branch on
