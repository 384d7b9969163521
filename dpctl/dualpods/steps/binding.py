"""A runner for an unbound requester: bind a matching sleeper and wake it, or create a new one.

Bind (annotate) before waking, and create runners already bound, so no awake server is ever
unaccounted for. A write the API server refuses (422 invalid, or 403 from an admission policy
or RBAC) is the user's to fix: a ``RunnerRefused`` status error, not sent again until the
requester or the runner to send changes.
"""

from __future__ import annotations

from typing import Any

from dpctl.api import LogMsg
from dpctl.clients.http import HttpCallError
from dpctl.dualpods import patches, podview
from dpctl.dualpods.podview import RawObj
from dpctl.dualpods.state import ServerState, instance
from dpctl.dualpods.steps.context import SETTLE_POLL_S, Context
from dpctl.dualpods.steps.finalizers import ensure_requester_state, user_error
from dpctl.kube import ApiError
from dpctl.podbuild.nominal import Runner, fallback_runner_name
from dpctl.workqueue.outcome import Done, Outcome, RequeueAfter, Retry

DONE = Done()


async def bind(cx: Context, st: ServerState, requester: RawObj, sleeper: RawObj, built: Runner) -> Outcome:
    name, runner_name = podview.name(requester), podview.name(sleeper)
    node = podview.node_name(requester)
    try:
        bound = await cx.ports.pods.patch_pod(runner_name, patches.binding(requester, built, sleeper))
    except ApiError as err:
        if err.refused:
            return await _refused(
                cx, st, requester, built, err, f"binding the sleeping server-running Pod {runner_name}"
            )
        if err.conflict or err.not_found:
            return Retry(f"sleeper {runner_name} changed while binding: {err.message}")
        raise
    cx.ports.report.count("bind")
    st.actuation_path = "hot"
    cx.log.info(LogMsg.BOUND_RUNNER, requester=name, runner=runner_name, node=node)
    try:
        cx.sending("wake", podview.uid(requester))
        await cx.ports.servers.wake(podview.pod_ip(sleeper), built.server_port)
    except HttpCallError as err:
        # Bound now: the bound path asks /is_sleeping and wakes it again.
        return Retry(f"waking {runner_name}: {err}")
    cx.stamps.mark("relay", podview.uid(requester))  # a sleeper was Ready all along
    cx.ports.report.count("wake")
    cx.log.info(LogMsg.WOKE, runner=runner_name, requester=name, node=node)
    cx.ports.report.event(
        requester, "Normal", "WokeSleeper", f"woke sleeping server-running Pod {runner_name} and bound it"
    )
    st.awake_instance = instance(bound)
    await cx.ports.pods.patch_pod(runner_name, patches.sleeping_label(False))
    await ensure_requester_state(cx, st, requester, bound, [])
    return DONE


async def create(cx: Context, st: ServerState, requester: RawObj, built: Runner) -> Outcome:
    name = podview.name(requester)
    try:
        cx.sending("create", podview.uid(requester))
        created = await _create_or_adopt(cx, requester, built)
    except ApiError as err:
        if not err.refused:
            raise
        return await _refused(cx, st, requester, built, err, f"the server-running Pod {built.name}")
    if created is None:
        return RequeueAfter(SETTLE_POLL_S, f"name {built.name} is taken by a Pod on its way out")
    st.actuation_path = "cold"
    st.awake_instance = instance(created)
    cx.log.info(
        LogMsg.CREATED_RUNNER,
        requester=name,
        runner=podview.name(created),
        node=podview.runner_node(created),
    )
    cx.ports.report.event(
        requester, "Normal", "CreatedRunner", f"created server-running Pod {podview.name(created)}"
    )
    await ensure_requester_state(cx, st, requester, created, [])
    return DONE


def refused_before(st: ServerState, requester: RawObj, built: Runner) -> bool:
    """Whether the API server refused this very runner, and the requester is unchanged since."""
    return st.refused == (podview.resource_version(requester), built.nominal_hash)


async def _refused(
    cx: Context, st: ServerState, requester: RawObj, built: Runner, err: ApiError, what: str
) -> Outcome:
    """The API server (422) or an admission policy or RBAC (403) refused a write of the runner:
    a user error in the server's own words. The same write is not sent again until the
    requester changes, or what would be sent does (its gpu-map indices, its Node)."""
    verdict = "is invalid" if err.invalid else "is forbidden"
    outcome = await user_error(cx, st, requester, "RunnerRefused", f"{what} {verdict}: {err.detail}")
    current = cx.cache.pod_by_uid(podview.uid(requester)) or requester
    st.refused = (podview.resource_version(current), built.nominal_hash)
    return outcome


async def _create_or_adopt(cx: Context, requester: RawObj, built: Runner) -> dict[str, Any] | None:
    """The runner, created (or found created); None while its name is held by a departing Pod."""
    try:
        return await cx.ports.pods.create_pod(built.pod)
    except ApiError as err:
        if not err.already_exists:
            raise
    return await _adopt_or_rename(cx, requester, built)


async def _adopt_or_rename(cx: Context, requester: RawObj, built: Runner) -> dict[str, Any] | None:
    """The runner's name exists: ours from a lost create response, or someone else's."""
    existing = await cx.ports.pods.get_pod(built.name)
    if existing is not None and podview.bound_requester(existing) == (
        podview.uid(requester),
        podview.name(requester),
    ):
        return existing
    if existing is not None and podview.is_deleting(existing):
        return None
    alt = built.renamed(fallback_runner_name(podview.name(requester), podview.uid(requester))).pod
    try:
        return await cx.ports.pods.create_pod(alt)
    except ApiError as err:
        if not err.already_exists:
            raise
        existing = await cx.ports.pods.get_pod(alt["metadata"]["name"])
        return existing if existing is not None and podview.bound_requester(existing) else None
