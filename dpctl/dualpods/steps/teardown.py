"""Endings: a runner deleted by someone, a requester gone (its runner unbound: put to sleep, or
deleted when it cannot sleep), a requester stranded on a cordoned Node, and a server's end of life.

Ordering for contract invariant 1: a runner is labelled ``sleeping=true`` before ``/sleep``, and
unbound only once asleep.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from dpctl.api import LogMsg
from dpctl.clients.http import HttpCallError
from dpctl.clients.inference import SleepModeUnavailable
from dpctl.dualpods import patches, podview
from dpctl.dualpods.podview import RawObj
from dpctl.dualpods.ports import DeleteReason
from dpctl.dualpods.state import RunnerState, ServerState, instance
from dpctl.dualpods.steps.context import Context
from dpctl.dualpods.steps.finalizers import drop_runner_finalizer, set_requester_finalizer
from dpctl.workqueue.outcome import Done, Outcome, Retry

DONE = Done()

# When /sleep on unbind keeps failing, at least this many times in a row and for at least this
# long, the runner is deleted instead: a wedged server must not hold a GPU forever. Counting time
# as well as tries matters: the work queue retries within milliseconds at first, and a server
# still loading its model (503, or nothing listening yet) would otherwise be deleted a few
# milliseconds before it could have slept.
MAX_SLEEP_FAILURES = 3
SLEEP_GIVE_UP_S = 30.0


def about(runner: RawObj) -> dict[str, Any]:
    """Key-values naming what a line about a runner concerns: it, its Node, its requester if bound."""
    kv = {"runner": podview.name(runner), "node": podview.runner_node(runner)}
    bound = podview.bound_requester(runner)
    if bound is not None:
        kv["requester"] = bound[1]
    return kv


def end_of_life(cx: Context, uid: str) -> Outcome:
    # Said once per server: later events about the same UID (a deletion seen twice, a stale
    # key) find nothing to forget.
    names = cx.memory.forget_server(uid)
    cx.stamps.forget(uid)
    if names is not None:
        cx.log.info(LogMsg.END_OF_LIFE, requesterUID=uid, **names)
    return DONE


async def delete_runner(cx: Context, runner: RawObj, reason: DeleteReason) -> None:
    await cx.ports.pods.delete_pod(podview.name(runner), podview.uid(runner))
    await drop_runner_finalizer(cx, runner)
    cx.ports.report.runner_deleted(reason)
    cx.log.info("Deleted server-running Pod", runner=podview.name(runner), reason=reason)
    cx.ports.report.event(
        runner,
        "Warning" if reason != "duplicate" else "Normal",
        "RunnerDeleted",
        f"deleted server-running Pod: {reason}",
    )


async def reflect_runner_deletion(
    cx: Context, st: ServerState, requester: RawObj | None, runner: RawObj
) -> Outcome:
    """Someone deletes the runner: the requester goes too, then the runner is let go."""
    if requester is not None and not podview.is_deleting(requester) and not st.requester_delete_requested:
        await _delete_requester(
            cx,
            st,
            requester,
            "Requested deletion of server-requesting Pod because of deletion of server-running Pod",
            runner=podview.name(runner),
        )
        cx.ports.report.event(
            requester,
            "Normal",
            "RunnerDeleted",
            f"server-running Pod {podview.name(runner)} is being deleted, so this Pod is deleted too",
        )
    await drop_runner_finalizer(cx, runner)
    if requester is not None and not _still_serving(cx, runner):
        await set_requester_finalizer(cx, requester, present=False)
    return DONE


Unbind = Callable[[Context, ServerState, RawObj], Awaitable[Outcome]]


async def release(
    cx: Context,
    st: ServerState,
    requester: RawObj | None,
    runner: RawObj | None,
    unbind_with: Unbind | None = None,
) -> Outcome:
    """The requester is gone or going: unbind its runner (sleep it, or delete it), then let go.
    ``unbind_with``: how its kind of provider is unbound (a runner's `unbind` by default)."""
    if runner is not None:
        outcome = await (unbind_with or unbind)(cx, st, runner)
        if outcome is not DONE:
            return outcome
    if requester is not None:
        await set_requester_finalizer(cx, requester, present=False)
    return DONE


async def unbind(cx: Context, st: ServerState, runner: RawObj) -> Outcome:
    reason = _cannot_sleep_reason(cx, runner)
    if reason is not None:
        await delete_runner(cx, runner, reason)
        return DONE
    host, port = podview.pod_ip(runner), podview.server_port(runner) or 0
    if podview.sleeping_label(runner) != "true":
        # Routing that selects on sleeping=false stops before the server stops serving.
        await cx.ports.pods.patch_pod(podview.name(runner), patches.sleeping_label(True))
    try:
        await cx.ports.servers.sleep(host, port)
    except SleepModeUnavailable:
        await delete_runner(cx, runner, "no-sleep-mode")
        return DONE
    except HttpCallError as err:
        if st.sleep_failures.failed(MAX_SLEEP_FAILURES, SLEEP_GIVE_UP_S, time.monotonic()):
            await delete_runner(cx, runner, "sleep-failed")
            return DONE
        return Retry(f"putting {podview.name(runner)} to sleep: {err}")
    st.sleep_failures.reset()
    cx.ports.report.count("sleep")
    cx.log.info(LogMsg.SLEPT, **about(runner))
    cx.memory.runners[podview.uid(runner)] = RunnerState(asleep_instance=instance(runner))
    await cx.ports.pods.patch_pod(podview.name(runner), patches.unbinding(runner))
    cx.log.info(LogMsg.UNBOUND_RUNNER, **about(runner))
    cx.ports.report.event(runner, "Normal", "Unbound", "inference server put to sleep and unbound")
    return DONE


def _cannot_sleep_reason(cx: Context, runner: RawObj) -> DeleteReason | None:
    node = cx.cache.node(podview.runner_node(runner))
    if node is None or podview.is_deleting(node):
        return "node-gone"
    if podview.in_trouble(runner):
        return "in-trouble"
    if (
        not podview.container_running(runner)
        or not podview.pod_ip(runner)
        or podview.server_port(runner) is None
    ):
        return "not-running"
    return None


def _still_serving(cx: Context, runner: RawObj) -> bool:
    node = cx.cache.node(podview.runner_node(runner))
    return node is not None and podview.container_running(runner)


async def delete_requester_on_cordoned_node(cx: Context, st: ServerState, requester: RawObj) -> Outcome:
    if not st.requester_delete_requested:
        await _delete_requester(
            cx,
            st,
            requester,
            "Deleting server-requesting Pod because it is bound to an unschedulable Node and has no server-running Pod",
            node=podview.node_name(requester),
        )
    return DONE


async def _delete_requester(cx: Context, st: ServerState, requester: RawObj, line: str, **kv: Any) -> None:
    """Delete the requester, once per server: its deletion event brings the server back."""
    await cx.ports.pods.delete_pod(podview.name(requester), podview.uid(requester))
    st.requester_delete_requested = True
    cx.log.info(line, requester=podview.name(requester), **kv)


def names_of(requester: RawObj | None, runner: RawObj | None) -> Mapping[str, Any]:
    """The names a server is seen with now, kept for its end-of-life line."""
    names: dict[str, Any] = {}
    if requester is not None:
        names.update(requester=podview.name(requester), node=podview.node_name(requester))
    if runner is not None:
        names.update(about(runner))
    return names
