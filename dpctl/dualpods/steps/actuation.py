"""An unbound requester on a schedulable Node gets a server (contract §5, "actuate"): its GPUs
from the stub, its runner built from the server-patch, the GPUs cleared of others, then a
matching sleeper woken or, after the sleeper limit makes room, a new runner created."""

from __future__ import annotations

import time
from collections.abc import Mapping

from dpctl.api import LogMsg
from dpctl.clients.http import HttpCallError
from dpctl.dualpods import gpumap, podview
from dpctl.dualpods.podview import RawObj
from dpctl.dualpods.state import ServerState, instance
from dpctl.dualpods.steps import binding, pool
from dpctl.dualpods.steps.context import Context
from dpctl.dualpods.steps.finalizers import ensure_requester_state, user_error, wait
from dpctl.podbuild.nominal import BuildError, build_runner
from dpctl.workqueue.outcome import Done, Outcome, Retry

DONE = Done()

# A stub that has just started may not listen yet: its first refusals are not worth a status error.
GPU_QUERY_GRACE_S = 5.0


async def actuate(
    cx: Context, st: ServerState, requester: RawObj, node: str, node_labels: Mapping[str, str]
) -> Outcome:
    """Give an unbound requester a server: wake a matching sleeper, or create a runner."""
    uuids = await requester_gpus(cx, st, requester, node)
    if not isinstance(uuids, tuple):
        return uuids
    try:
        indices = gpumap.indices_for(cx.cache.gpu_map(), node, uuids)
        built = build_runner(requester, node, indices, uuids, node_labels)
    except gpumap.GpuMapError as err:
        return await user_error(cx, st, requester, "GpuMap", str(err))
    except BuildError as err:
        return await user_error(cx, st, requester, "BadServerPatch", str(err))
    if binding.refused_before(st, requester, built):
        return DONE  # the API server refused this runner; nothing has changed since
    await pool.drop_restarted_sleepers(cx, node, indices)
    busy: list[int | str] = [*pool.gpus_held_by_others(cx, requester, node, indices)]
    busy += pool.gpus_served_by_launchers(cx, requester, node, uuids)
    if busy:
        return await wait(cx, st, requester, f"GPUs {busy} still held by another inference server")
    sleeper = pool.matching_sleeper(cx, built.nominal_hash)
    if sleeper is not None:
        return await binding.bind(cx, st, requester, sleeper, built)
    going = await pool.make_room(cx, node, indices)
    if going:
        return await wait(cx, st, requester, f"waiting for {going} sleeping runner(s) to go")
    return await binding.create(cx, st, requester, built)


async def requester_gpus(
    cx: Context, st: ServerState, requester: RawObj, node: str
) -> tuple[str, ...] | Outcome:
    """The GPUs the stub reports for the requester (asked once per container instance), or the
    outcome while they cannot be had: a bad admin port, a stub not up or not answering."""
    try:
        admin_port = podview.admin_port(requester)
    except ValueError as err:
        return await user_error(cx, st, requester, "BadAdminPort", str(err))
    if not podview.pod_ip(requester) or not podview.container_running(requester):
        return DONE  # the stub is not up yet; its status change will bring us back
    uuids = st.known_gpus(requester)
    if not uuids:
        try:
            uuids = tuple(
                await cx.ports.stubs.query_gpus(
                    podview.pod_ip(requester), admin_port, podview.dialect(requester)
                )
            )
        except HttpCallError as err:
            return await _gpu_query_failed(cx, st, requester, err)
        st.gpu_uuids, st.gpu_uuids_from = uuids, instance(requester)
        st.gpu_query_failing_since = None
        cx.log.info(LogMsg.FOUND_GPUS, requester=podview.name(requester), node=node, gpuUUIDs=list(uuids))
    return uuids


async def _gpu_query_failed(cx: Context, st: ServerState, requester: RawObj, err: HttpCallError) -> Outcome:
    now = time.monotonic()
    st.gpu_query_failing_since = st.gpu_query_failing_since or now
    starting = now - st.gpu_query_failing_since < GPU_QUERY_GRACE_S
    if not starting:
        await ensure_requester_state(
            cx, st, requester, None, [f"cannot get the GPUs from the requester: {err}"]
        )
    return Retry(f"querying GPUs of {podview.name(requester)}: {err}", expected=starting)
