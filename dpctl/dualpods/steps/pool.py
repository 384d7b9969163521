"""The pool of sleepers on a GPU: which may be awake, the sleeper limit, the one to wake, and an
unbound runner found awake put back to sleep.

Contract invariant 1 (never two awake servers on one GPU) rests on :func:`gpus_held_by_others`:
no runner is created or woken on a GPU while a runner bound to another requester is there, or
an unbound one that may be awake; and, across both paths, on :func:`gpus_served_by_launchers`:
nor while a launcher serves another requester there (launcher contract I1).
"""

from __future__ import annotations

from collections.abc import Sequence

from dpctl.api import LogMsg
from dpctl.clients.http import HttpCallError
from dpctl.clients.inference import SleepModeUnavailable
from dpctl.dualpods import launcherview, patches, podview, sleepers
from dpctl.dualpods.podview import RawObj
from dpctl.dualpods.state import instance
from dpctl.dualpods.steps.context import Context
from dpctl.dualpods.steps.teardown import about, delete_runner
from dpctl.kube import ApiError
from dpctl.workqueue.outcome import Done, Outcome, Retry

DONE = Done()


def may_be_awake(cx: Context, runner: RawObj) -> bool:
    """Whether an unbound runner's server may be awake: its container (re)started after the
    controller last wrote the runner (it unbinds a runner only once asleep), and nobody has
    found this container instance asleep since. A restarted vLLM loads its model onto its
    GPUs awake, before anyone can ask it anything (the soak found runners created beside one).
    Decided from the API, so a restarted controller decides the same."""
    if not podview.container_running(runner) or cx.memory.verified_asleep(runner):
        return False
    started = podview.container_started_at(runner)
    return bool(started) and started >= podview.manager_time(runner)


def gpus_held_by_others(cx: Context, requester: RawObj, node: str, indices: Sequence[int]) -> list[int]:
    """GPUs where a runner bound to another requester is, or an unbound one that may be awake."""
    uid = podview.uid(requester)
    held = []
    for index in indices:
        for runner in cx.cache.runners_on_gpu(node, index):
            bound = podview.bound_requester(runner)
            if (bound is not None and bound[0] != uid) or (bound is None and may_be_awake(cx, runner)):
                held.append(index)
                break
    return held


def gpus_served_by_launchers(cx: Context, requester: RawObj, node: str, uuids: Sequence[str]) -> list[str]:
    """GPUs of ``uuids`` a launcher on the Node still serves another requester with: its instance
    may be awake until its unbinding has put it to sleep."""
    mine, held = podview.uid(requester), set[str]()
    for launcher in cx.cache.launchers_on_node(node):
        bound = podview.bound_requester(launcher)
        if bound is None or bound[0] == mine:
            continue
        try:
            body = launcherview.bookkeeping(launcher).vllm_config
        except launcherview.BookkeepingError:
            continue  # its own requester's status says so; its GPUs are unknown
        held.update(u for u in body.get("gpu_uuids") or [] if u in uuids)
    return sorted(held)


async def drop_restarted_sleepers(cx: Context, node: str, indices: Sequence[int]) -> None:
    """A sleeper whose server restarted and is not Ready again (loading, or crash-looping) is no
    longer warm and may hold its GPUs: a requester that needs them does not wait for it."""
    for index in indices:
        for runner in cx.cache.runners_on_gpu(node, index):
            if (
                podview.bound_requester(runner) is None
                and not podview.is_deleting(runner)
                and podview.in_trouble(runner)
                and may_be_awake(cx, runner)
            ):
                await delete_runner(cx, runner, "restarted-sleeper")


def matching_sleeper(cx: Context, nominal: str) -> RawObj | None:
    """A sleeping runner built from the same definition on the same GPUs, most recently used first."""
    candidates = [
        r
        for r in cx.cache.runners_with_nominal(nominal)
        if sleepers.is_sleeper(r) and podview.container_running(r) and not podview.in_trouble(r)
    ]
    candidates.sort(key=lambda r: (podview.manager_time(r), podview.name(r)), reverse=True)
    return candidates[0] if candidates else None


async def make_room(cx: Context, node: str, indices: Sequence[int]) -> int:
    """Enforce the sleeper limit on each GPU; the number of runners still going away there."""
    limit = cx.settings.sleeper_limit
    going = 0
    deleted: set[str] = set()
    for index in indices:
        on_gpu = cx.cache.runners_on_gpu(node, index)
        for victim in sleepers.victims(on_gpu, limit):
            if podview.uid(victim) in deleted:
                continue  # a multi-GPU sleeper counts on each of its GPUs
            deleted.add(podview.uid(victim))
            try:
                await cx.ports.pods.delete_pod(
                    podview.name(victim), podview.uid(victim), podview.resource_version(victim) or None
                )
            except ApiError as err:
                if not (err.conflict or err.not_found):
                    raise
                # Changed since the cache saw it (or gone): look again with a fresher cache.
                going += 1
                continue
            cx.ports.report.count("eviction")
            cx.ports.report.runner_deleted("sleeper-limit")
            cx.log.info(LogMsg.SLEEPER_LIMIT_DELETE, runner=podview.name(victim), node=node, gpu=index)
            cx.ports.report.event(
                victim,
                "Normal",
                "SleeperEvicted",
                f"deleted to keep at most {limit} sleeping servers on GPU {index} of {node}",
            )
            going += 1
        # Its process must exit (freeing GPU memory) before a new server starts there.
        going += sum(1 for r in on_gpu if podview.is_deleting(r))
    return going


async def resleep_unbound(cx: Context, uid: str) -> Outcome:
    """A sleeper whose server restarted is awake again: put it back to sleep."""
    runner = cx.cache.pod_by_uid(uid)
    if runner is None:
        cx.memory.forget_runner(uid)
        return DONE
    if podview.bound_requester(runner) is not None or podview.is_deleting(runner):
        return DONE
    st = cx.memory.runner(uid)
    if st.asleep_instance == instance(runner) or not podview.pod_ready(runner):
        return DONE
    host, port = podview.pod_ip(runner), podview.server_port(runner) or 0
    try:
        if await cx.ports.servers.is_sleeping(host, port):
            st.asleep_instance = instance(runner)
            return DONE
        await cx.ports.servers.sleep(host, port)
    except SleepModeUnavailable:
        await delete_runner(cx, runner, "no-sleep-mode")
        return DONE
    except HttpCallError as err:
        return Retry(f"checking sleeper {podview.name(runner)}: {err}")
    cx.ports.report.count("sleep")
    cx.log.info(LogMsg.SLEPT, **about(runner), why="unbound server was awake")
    st.asleep_instance = instance(runner)
    if podview.sleeping_label(runner) != "true":
        await cx.ports.pods.patch_pod(podview.name(runner), patches.sleeping_label(True))
    return DONE
