"""A bound pair kept right: the runner awake, the requester's state current, readiness relayed.

A runner is labelled ``sleeping=false`` only after ``/wake_up`` succeeded, so label-selected
routing never reaches a sleeping server; the requester's stub is told ready only while its
runner is Ready and known awake.
"""

from __future__ import annotations

import time

from dpctl import api
from dpctl.api import LogMsg
from dpctl.clients.http import HttpCallError
from dpctl.clients.inference import SleepModeUnavailable
from dpctl.dualpods import patches, podview
from dpctl.dualpods.logrelay import Target
from dpctl.dualpods.podview import RawObj
from dpctl.dualpods.state import ServerState, instance
from dpctl.dualpods.steps.context import Context
from dpctl.dualpods.steps.finalizers import ensure_requester_state
from dpctl.dualpods.steps.teardown import about, delete_runner
from dpctl.workqueue.outcome import Done, Outcome, Retry

DONE = Done()
MIB = 1 << 20

# When /wake_up of a bound runner keeps failing, this many times in a row and for this long,
# the runner is deleted: a wedged server must not hold a requester forever (see teardown's
# MAX_SLEEP_FAILURES for why time counts as well as tries).
MAX_WAKE_FAILURES = 3
WAKE_GIVE_UP_S = 30.0


async def serve_bound(cx: Context, st: ServerState, requester: RawObj, runner: RawObj) -> Outcome:
    errors: list[str] = []
    if podview.in_trouble(runner):
        errors.append(
            f"the inference server in {podview.name(runner)} has restarted "
            f"{podview.restart_count(runner)} times and is not ready; see its log"
        )
    outcome = await _ensure_awake(cx, st, requester, runner, errors)
    await ensure_requester_state(cx, st, requester, runner, errors)
    _relay_log(cx, requester, runner)
    if outcome is not DONE:
        return outcome
    return await _relay_readiness(cx, st, requester, runner)


async def _ensure_awake(
    cx: Context, st: ServerState, requester: RawObj, runner: RawObj, errors: list[str]
) -> Outcome:
    if not st.knows_awake(runner):
        if not (podview.pod_ready(runner) and podview.pod_ip(runner)):
            return DONE  # its Ready condition will change; ask then
        host, port = podview.pod_ip(runner), podview.server_port(runner) or 0
        try:
            if await cx.ports.servers.is_sleeping(host, port):
                held = await _memory_held(cx, requester, runner)
                if held:
                    errors.append(held)
                    return Retry(held)
                await cx.ports.servers.wake(host, port)
                cx.ports.report.count("wake")
                cx.log.info(LogMsg.WOKE, **about(runner))
        except SleepModeUnavailable:
            pass  # a server without sleep mode is never asleep
        except HttpCallError as err:
            errors.append(f"cannot wake the inference server in {podview.name(runner)}: {err}")
            if st.wake_failures.failed(MAX_WAKE_FAILURES, WAKE_GIVE_UP_S, time.monotonic()):
                await delete_runner(cx, runner, "wake-failed")
                return DONE
            return Retry(str(err))
        st.wake_failures.reset()
        st.awake_instance = instance(runner)
    if podview.sleeping_label(runner) != "false":
        await cx.ports.pods.patch_pod(podview.name(runner), patches.sleeping_label(False))
    return DONE


def _relay_log(cx: Context, requester: RawObj, runner: RawObj) -> None:
    """The runner's log goes to the requester's stub while both containers run."""
    if not (podview.container_running(runner) and podview.container_running(requester)):
        return
    try:
        port = podview.admin_port(requester)
    except ValueError:
        return  # the status error says so; no stub to send to
    target = Target(
        namespace=str(podview.meta(runner).get("namespace") or ""),
        runner=podview.name(runner),
        runner_instance=instance(runner),
        stub_host=podview.pod_ip(requester),
        stub_port=port,
        stub_instance=instance(requester),
    )
    if target.stub_host:
        cx.ports.logs.follow(podview.uid(requester), target)


async def _memory_held(cx: Context, requester: RawObj, runner: RawObj) -> str | None:
    """With the memory guard on, why the runner's GPUs cannot take a woken server yet: memory
    still held there (a departing server not yet gone), or no answer. None: wake."""
    budget = cx.settings.wake_memory_budget
    if budget is None:
        return None
    gpus = [u for u in (podview.annotations(runner).get(api.ACCELERATORS_ANNOTATION) or "").split(",") if u]
    try:
        used = await cx.ports.stubs.accelerator_memory(
            podview.pod_ip(requester), podview.admin_port(requester)
        )
    except (ValueError, HttpCallError) as err:
        return f"cannot check the GPU memory before waking {podview.name(runner)}: {err}"
    over = [f"{u}: {used[u] // MIB} MiB" for u in gpus if used.get(u, 0) > budget]
    if not over:
        return None
    return (
        f"not waking {podview.name(runner)} yet: GPU memory in use is over the wake budget of"
        f" {budget // MIB} MiB ({', '.join(over)}); waiting for it to be freed"
    )


async def _relay_readiness(cx: Context, st: ServerState, requester: RawObj, runner: RawObj) -> Outcome:
    want = podview.pod_ready(runner) and st.knows_awake(runner)
    return await relay_readiness(cx, st, requester, runner, want)


async def relay_readiness(
    cx: Context, st: ServerState, requester: RawObj, provider: RawObj, want: bool, isc: str = ""
) -> Outcome:
    """Whenever the provider's readiness (``want``) differs from what the requester shows, tell
    the stub; the first positive relay ends one actuation (``isc``: on the launcher path)."""
    if want == podview.container_ready(requester) or st.already_relayed(want, requester):
        return DONE
    host = podview.pod_ip(requester)
    try:
        port = podview.admin_port(requester)
        if want:
            cx.sending("relay", podview.uid(requester))
        await cx.ports.stubs.relay(host, port, want)
    except (ValueError, HttpCallError) as err:
        return Retry(f"relaying readiness to {podview.name(requester)}: {err}")
    st.relayed = (want, instance(requester))
    cx.log.info(
        LogMsg.RELAYED_READINESS,
        requester=podview.name(requester),
        runner=podview.name(provider),
        node=podview.node_name(requester),
        ready=want,
    )
    if want and not st.actuation_observed and st.actuation_path is not None:
        st.actuation_observed = True
        cx.ports.report.actuated(st.actuation_path, requester, isc, st.instances_deleted)
    return DONE
