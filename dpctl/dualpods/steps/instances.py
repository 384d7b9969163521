"""The launcher path's bound pairs and sleepers (launcher contract R15–R23): a bound launcher's
instance created or woken, routed and relayed; unbound (routing off, asleep, then let go); its
death reflected; and the stopped or obsolete instances of unbound launchers cleared.

Everything is carried on from what the launcher Pod records (`launcherview.bookkeeping`) and
what the launcher lists, so a restarted controller continues where the last one was. Order for
I1 and I3: the ISC's routing labels go on only once the instance is known awake, and come off
before it is put to sleep; a launcher is unbound only once its instance sleeps or is gone.
"""

from __future__ import annotations

import json
import time

from dpctl import api
from dpctl.api import LogMsg
from dpctl.clients.http import HttpCallError
from dpctl.dualpods import launcherview, patches, podview
from dpctl.dualpods.launcherview import Bookkeeping, BookkeepingError
from dpctl.dualpods.podview import RawObj
from dpctl.dualpods.state import DEATHS_COUNTED, DEATHS_WINDOW_S, ServerState
from dpctl.dualpods.steps.context import Context
from dpctl.dualpods.steps.finalizers import ensure_requester_state, user_error
from dpctl.dualpods.steps.serving import relay_readiness
from dpctl.dualpods.steps.teardown import delete_runner
from dpctl.fma.v1alpha1 import ModelServerConfig
from dpctl.kube import ApiError
from dpctl.launcher.api import InstanceState, Status
from dpctl.podbuild.launcher import instance_id
from dpctl.podbuild.routing import routing_problems
from dpctl.workqueue.outcome import Done, Outcome, RequeueAfter, Retry

DONE = Done()

# How often to ask a starting instance whether it answers (upstream asks every 5 s; sooner here,
# as a sleeping instance woken answers within a second, and a starting one costs one GET a look).
INSTANCE_POLL_S = 1.0
# /sleep failing this many times in a row, for this long, deletes the instance instead: it must
# not hold its GPUs awake forever (the direct path's rule, teardown.MAX_SLEEP_FAILURES).
MAX_SLEEP_FAILURES = 3
SLEEP_GIVE_UP_S = 30.0

# How much of a failing instance's log its requester's status shows.
LOG_TAIL_BYTES = 2048

OUTDATED_ROUTING = (
    "Deleting server-requesting Pod because bound launcher is committed to outdated ISC routing metadata"
)


async def serve_bound(cx: Context, st: ServerState, requester: RawObj, launcher: RawObj) -> Outcome:
    """R15–R19 for a requester whose launcher is bound to it."""
    try:
        bk = launcherview.bookkeeping(launcher)
    except BookkeepingError as err:
        return await user_error(cx, st, requester, "Bookkeeping", str(err))
    cx.ports.report.duality(launcher, bk.instance_id, _gpus_of(bk), True)
    errors = [e for e in (st.gave_up, st.create_failed) if e]
    if podview.container_running(launcher) or podview.status_errors(requester) or errors:
        # A launcher just created writes it once, running (with the finalizer), not twice.
        await ensure_requester_state(cx, st, requester, launcher, errors, bk.instance_id)
    if st.gave_up or not (podview.pod_ready(launcher) and podview.pod_ip(launcher)):
        return DONE  # R16: its next Pod event brings us back (or a user's fix, having given up)
    host, luid = podview.pod_ip(launcher), podview.uid(launcher)
    listed = await _listed(cx, launcher)
    if not isinstance(listed, dict):
        return listed
    mine = listed.get(bk.instance_id)
    if mine is None and st.instance_seen != (luid, bk.instance_id):
        if cx.memory.deaths(bk.instance_id, time.monotonic()) >= DEATHS_COUNTED:
            return await _give_up(cx, st, requester, bk, b"")
        outcome = await _create_instance(cx, st, requester, launcher, bk)
        if outcome is not DONE:
            return outcome
    elif mine is None or mine.status == Status.STOPPED:
        return await _instance_died(cx, st, requester, launcher, bk, mine)
    st.instance_seen = (luid, bk.instance_id)
    if st.instance_awake != (luid, bk.instance_id):
        try:
            if await cx.ports.servers.is_sleeping(host, bk.server_port):
                cx.sending("wake", podview.uid(requester))
                await cx.ports.servers.wake(host, bk.server_port)
                cx.ports.report.count("wake")
                cx.log.info(LogMsg.WOKE, launcher=podview.name(launcher), instance=bk.instance_id)
                cx.ports.report.event(requester, "Normal", "InstanceWoken", f"woke instance {bk.instance_id}")
        except HttpCallError as err:
            return await _not_answering(cx, st, requester, launcher, bk, err)
        st.instance_awake, st.instance_unanswered_since = (luid, bk.instance_id), None
        cx.stamps.mark("relay", podview.uid(requester))
    outcome = await _route(cx, st, requester, launcher, bk)
    if outcome is not DONE:
        return outcome
    return await relay_readiness(cx, st, requester, launcher, True, _isc_of(bk))


async def _listed(cx: Context, launcher: RawObj) -> dict[str, InstanceState] | Outcome:
    """The launcher's instances by id, or a retry when it does not list them."""
    try:
        return {i.instance_id: i for i in await cx.ports.launchers.instances(podview.pod_ip(launcher))}
    except HttpCallError as err:
        return Retry(f"listing the instances of launcher {podview.name(launcher)}: {err}")


async def _not_answering(
    cx: Context, st: ServerState, requester: RawObj, launcher: RawObj, bk: Bookkeeping, err: HttpCallError
) -> Outcome:
    """Ask again soon; an instance that never answers (vLLM hung while loading) is deleted after
    the start timeout, so its death frees the GPUs and the requester is replaced."""
    now = time.monotonic()
    st.instance_unanswered_since = st.instance_unanswered_since or now
    timeout = cx.settings.instance_start_timeout_s
    if now - st.instance_unanswered_since < timeout:
        return RequeueAfter(INSTANCE_POLL_S, f"instance {bk.instance_id} does not answer yet: {err}")
    st.instance_unanswered_since = None
    await cx.ports.launchers.delete(podview.pod_ip(launcher), bk.instance_id)
    cx.memory.forget_instance(podview.uid(launcher), bk.instance_id)
    message = (
        f"vLLM instance {bk.instance_id} in launcher {podview.name(launcher)} did not answer"
        f" {api.IS_SLEEPING_PATH} within {timeout:.0f} s of its start, so it was deleted: {err}"
    )
    cx.ports.report.event(requester, "Warning", "InstanceDeleted", message)
    return await user_error(cx, st, requester, "InstanceFailing", message)


async def _give_up(cx: Context, st: ServerState, requester: RawObj, bk: Bookkeeping, tail: bytes) -> Outcome:
    """§9 [D]: an instance that keeps dying is not created again; the requester stays, saying why."""
    st.gave_up = (
        f"vLLM instance {bk.instance_id} stopped {DEATHS_COUNTED} times within"
        f" {DEATHS_WINDOW_S / 60:.0f} minutes, so it is not created again; fix InferenceServerConfig"
        f" {json.dumps(_isc_of(bk))} (its options?) and delete this Pod"
    )
    if tail:
        st.gave_up += ". The end of its log: " + tail.decode("utf-8", "replace")
    return await user_error(cx, st, requester, "InstanceFailing", st.gave_up)


async def _create_instance(
    cx: Context, st: ServerState, requester: RawObj, launcher: RawObj, bk: Bookkeeping
) -> Outcome:
    """R17: the committed launch body, PUT under the instance's id."""
    try:
        await cx.ports.launchers.create(podview.pod_ip(launcher), bk.instance_id, dict(bk.vllm_config))
    except HttpCallError as err:
        if err.status == 409:
            return Retry(
                f"instance {bk.instance_id} exists already in {podview.name(launcher)}; listing again"
            )
        message = f"cannot create vLLM instance {bk.instance_id} in launcher {podview.name(launcher)}: {err}"
        if st.create_failed != message:
            st.create_failed = message
            await ensure_requester_state(cx, st, requester, launcher, [message], bk.instance_id)
        return Retry(message)
    if st.create_failed:
        st.create_failed = None
        await ensure_requester_state(cx, st, requester, launcher, [], bk.instance_id)
    st.instance_seen = (podview.uid(launcher), bk.instance_id)
    cx.memory.used(podview.uid(launcher), bk.instance_id, time.monotonic())
    cx.memory.changed_instances(podview.uid(launcher))
    cx.log.info(
        LogMsg.CREATED_INSTANCE,
        requester=podview.name(requester),
        launcher=podview.name(launcher),
        instance=bk.instance_id,
    )
    cx.ports.report.event(
        requester,
        "Normal",
        "InstanceCreated",
        f"created vLLM instance {bk.instance_id} in {podview.name(launcher)}",
    )
    return DONE


async def _instance_died(
    cx: Context,
    st: ServerState,
    requester: RawObj,
    launcher: RawObj,
    bk: Bookkeeping,
    state: InstanceState | None,
) -> Outcome:
    """R17: the bound instance stopped (or vanished after we saw it): the requester goes, and its
    ReplicaSet's replacement gets a fresh instance — unless it keeps dying (§9 [D])."""
    st.instance_awake = None
    routed = any(k in podview.labels(launcher) for k in bk.routing.labels)
    if routed or podview.sleeping_label(launcher) != "true":
        try:
            await cx.ports.pods.patch_pod(
                podview.name(launcher), patches.launcher_routing_removed(launcher, bk.routing, asleep=True)
            )
        except ApiError as err:
            if err.conflict or err.not_found:
                return Retry(
                    f"launcher {podview.name(launcher)} changed while marking it asleep: {err.message}"
                )
            raise
    if st.requester_delete_requested:
        return DONE
    if cx.memory.died(bk.instance_id, time.monotonic()) >= DEATHS_COUNTED:
        tail = b""
        if state is not None:
            try:
                tail = await cx.ports.launchers.log_tail(
                    podview.pod_ip(launcher), bk.instance_id, LOG_TAIL_BYTES
                )
            except HttpCallError as err:
                cx.log.progress(
                    "Cannot read the log of a stopped instance", instance=bk.instance_id, error=str(err)
                )
        return await _give_up(cx, st, requester, bk, tail)
    await cx.ports.pods.delete_pod(
        podview.name(requester), podview.uid(requester), podview.resource_version(requester)
    )
    st.requester_delete_requested = True
    exit_code = state.exit_code if state is not None else None
    cx.log.info(
        LogMsg.INSTANCE_STOPPED,
        requester=podview.name(requester),
        launcher=podview.name(launcher),
        instance=bk.instance_id,
        exitCode=exit_code,
    )
    cx.ports.report.event(
        requester,
        "Warning",
        "InstanceStopped",
        f"vLLM instance {bk.instance_id} in {podview.name(launcher)} stopped"
        + (f" with exit code {exit_code}" if exit_code is not None else "")
        + "; deleting this Pod so that it is replaced",
    )
    return DONE


async def _route(
    cx: Context, st: ServerState, requester: RawObj, launcher: RawObj, bk: Bookkeeping
) -> Outcome:
    """R19: ``sleeping=false`` and the committed routing labels and annotations, checked again
    against the launcher as it is now; committed metadata that no longer fits ends the pair."""
    have_labels, have_ann = podview.labels(launcher), podview.annotations(launcher)
    routed = all(have_labels.get(k) == v for k, v in bk.routing.labels.items()) and all(
        have_ann.get(k) == v for k, v in bk.routing.annotations.items()
    )
    if routed and podview.sleeping_label(launcher) == "false":
        return DONE
    others_labels = {k: v for k, v in have_labels.items() if k not in bk.routing.labels}
    others_ann = {k: v for k, v in have_ann.items() if k not in bk.routing.annotations}
    problems = routing_problems(bk.routing, others_labels, others_ann)
    if problems:
        if not st.requester_delete_requested:
            message = f"{OUTDATED_ROUTING}: {'; '.join(problems)}"
            cx.ports.report.event(requester, "Warning", "OutdatedRoutingMetadata", message)
            cx.log.warning(OUTDATED_ROUTING, requester=podview.name(requester), problems=problems)
            await cx.ports.pods.delete_pod(podview.name(requester), podview.uid(requester))
            st.requester_delete_requested = True
        return DONE
    try:
        await cx.ports.pods.patch_pod(podview.name(launcher), patches.launcher_awake(launcher, bk.routing))
    except ApiError as err:
        if err.conflict or err.not_found:
            return Retry(f"launcher {podview.name(launcher)} changed while labelling it awake: {err.message}")
        raise
    return DONE


async def unbind(cx: Context, st: ServerState, launcher: RawObj) -> Outcome:
    """R20 (and R3's trouble case): the requester is gone or going."""
    if podview.in_trouble(launcher):
        cx.memory.forget_launcher(podview.uid(launcher))
        await delete_runner(cx, launcher, "launcher-in-trouble")
        return DONE
    try:
        bk = launcherview.bookkeeping(launcher)
    except BookkeepingError:
        # Which instance it served is unknown, so it cannot be put to sleep; an instance left
        # awake would hold its GPUs against the next server (I1): the launcher goes instead.
        cx.memory.forget_launcher(podview.uid(launcher))
        await delete_runner(cx, launcher, "launcher-in-trouble")
        return DONE
    name, luid = podview.name(launcher), podview.uid(launcher)
    if any(k in podview.labels(launcher) for k in bk.routing.labels):
        launcher = await cx.ports.pods.patch_pod(name, patches.launcher_routing_removed(launcher, bk.routing))
    if podview.pod_ip(launcher) and podview.container_running(launcher):
        outcome = await _sleep_or_delete(cx, st, launcher, bk)
        if outcome is not DONE:
            return outcome
    cx.memory.used(luid, bk.instance_id, time.monotonic())
    st.instance_awake = None
    try:
        await cx.ports.pods.patch_pod(name, patches.launcher_unbinding(launcher, bk.routing))
    except ApiError as err:
        if err.not_found:
            return DONE
        if err.conflict:
            return Retry(f"launcher {name} changed while unbinding it: {err.message}")
        raise
    cx.ports.report.duality(launcher, bk.instance_id, _gpus_of(bk), False)
    bound = podview.bound_requester(launcher)
    cx.log.info(
        LogMsg.UNBOUND_LAUNCHER, launcher=name, requester=bound[1] if bound else "", instance=bk.instance_id
    )
    return DONE


async def _sleep_or_delete(cx: Context, st: ServerState, launcher: RawObj, bk: Bookkeeping) -> Outcome:
    """The instance asleep, or deleted when its ISC has changed since (it would be obsolete)."""
    host, name = podview.pod_ip(launcher), podview.name(launcher)
    listed = await _listed(cx, launcher)
    if not isinstance(listed, dict):
        return listed
    mine = listed.get(bk.instance_id)
    if mine is None:
        return DONE  # gone already: nothing to sleep
    if mine.status == Status.STOPPED or _obsolete(cx, bk):
        await cx.ports.launchers.delete(host, bk.instance_id)
        cx.memory.forget_instance(podview.uid(launcher), bk.instance_id)
        cx.log.info(LogMsg.DELETED_OBSOLETE, launcher=name, instance=bk.instance_id)
        _tell_requester(
            cx, launcher, "InstanceDeleted", f"deleted vLLM instance {bk.instance_id}: obsolete or stopped"
        )
        return DONE
    try:
        await cx.ports.servers.sleep(host, bk.server_port)
    except HttpCallError as err:
        if st.sleep_failures.failed(MAX_SLEEP_FAILURES, SLEEP_GIVE_UP_S, time.monotonic()):
            await cx.ports.launchers.delete(host, bk.instance_id)
            cx.memory.forget_instance(podview.uid(launcher), bk.instance_id)
            cx.log.warning(
                "Deleted vLLM instance that does not go to sleep", launcher=name, instance=bk.instance_id
            )
            return DONE
        return Retry(f"putting instance {bk.instance_id} in {name} to sleep: {err}")
    st.sleep_failures.reset()
    cx.ports.report.count("sleep")
    cx.log.info(LogMsg.SLEPT, launcher=name, instance=bk.instance_id)
    _tell_requester(cx, launcher, "InstanceSlept", f"put vLLM instance {bk.instance_id} in {name} to sleep")
    return DONE


def _tell_requester(cx: Context, launcher: RawObj, reason: str, message: str) -> None:
    """A Normal Event on the departing requester the launcher is still bound to, if cached."""
    bound = podview.bound_requester(launcher)
    requester = cx.cache.pod_by_uid(bound[0]) if bound is not None else None
    if requester is not None:
        cx.ports.report.event(requester, "Normal", reason, message)


def _obsolete(cx: Context, bk: Bookkeeping) -> bool:
    """The ISC the instance was made from has changed since: its id, recomputed, differs."""
    isc = cx.cache.inference_server_config(_isc_of(bk))
    uuids = _gpus_of(bk)
    server = _server_of(isc)
    return server is not None and bool(uuids) and instance_id(server, uuids) != bk.instance_id


def _gpus_of(bk: Bookkeeping) -> list[str]:
    return [str(u) for u in bk.vllm_config.get("gpu_uuids") or []]


def _isc_of(bk: Bookkeeping) -> str:
    annotations = bk.vllm_config.get("annotations")
    return str(annotations.get(api.ISC_NAME_KEY, "")) if isinstance(annotations, dict) else ""


def _server_of(isc: RawObj | None) -> ModelServerConfig | None:
    return launcherview.server_config(isc) if isc is not None else None


async def tend_unbound(cx: Context, launcher: RawObj) -> Outcome:
    """R21: an unbound launcher's stopped instances go (no server needs them)."""
    if podview.is_deleting(launcher):
        cx.memory.forget_launcher(podview.uid(launcher))
        return DONE
    if not (podview.pod_ready(launcher) and podview.pod_ip(launcher)):
        return DONE
    host = podview.pod_ip(launcher)
    try:
        for state in await cx.ports.launchers.instances(host):
            if state.status == Status.STOPPED:
                await cx.ports.launchers.delete(host, state.instance_id)
                cx.memory.forget_instance(podview.uid(launcher), state.instance_id)
    except HttpCallError as err:
        return Retry(f"tending the instances of launcher {podview.name(launcher)}: {err}")
    return DONE


async def delete_obsolete(cx: Context, isc: str) -> Outcome:
    """R22: an ISC changed or went: every sleeping instance made from an older version of it
    goes, in every launcher that answers (bound instances stay until their unbinding)."""
    server = _server_of(cx.cache.inference_server_config(isc))
    failed: list[str] = []
    for launcher in cx.cache.launchers():
        host = podview.pod_ip(launcher)
        if podview.is_deleting(launcher) or not (host and podview.pod_ready(launcher)):
            continue
        bound_id = podview.annotations(launcher).get(api.INSTANCE_ID_ANNOTATION, "")
        try:
            for state in await cx.ports.launchers.instances(host):
                if state.instance_id == bound_id or (state.annotations or {}).get(api.ISC_NAME_KEY) != isc:
                    continue
                uuids = state.gpu_uuids or []
                if not uuids or (server is not None and instance_id(server, uuids) == state.instance_id):
                    continue
                port = launcherview.instance_port(state)
                if state.status != Status.STOPPED and (
                    port is None or not await cx.ports.servers.is_sleeping(host, port)
                ):
                    continue
                await cx.ports.launchers.delete(host, state.instance_id)
                cx.memory.forget_instance(podview.uid(launcher), state.instance_id)
                cx.log.info(
                    LogMsg.DELETED_OBSOLETE,
                    launcher=podview.name(launcher),
                    instance=state.instance_id,
                    isc=isc,
                )
        except HttpCallError as err:
            failed.append(f"{podview.name(launcher)}: {err}")
    return (
        Retry(f"obsolete instances of {json.dumps(isc)} not all checked: {'; '.join(failed)}")
        if failed
        else DONE
    )
