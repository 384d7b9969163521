"""The reconcile decision for one inference server, readable top to bottom like contract §5.

:meth:`Reconciler.server` is the whole decision; each branch is a named step below it. The
reconciler reads only the informer caches (through :class:`Cache`) and acts only through
:class:`~dpctl.dualpods.effects.Effects`, so tests drive it with plain dicts and a recorder.

Ordering rules that keep contract invariant 1 (never two awake servers on one GPU):
- bind (annotate) before waking, sleep before unbinding, create runners already bound;
- no runner is created or woken on a GPU while a runner bound to another requester is there;
- a runner is marked ``sleeping=false`` only after ``/wake_up`` succeeded, and ``sleeping=true``
  before ``/sleep``, so label-selected routing never reaches a sleeping server.

User mistakes (bad server-patch, admin-port, gpu-map, a runner the API server refuses) become the
status annotation and an Event, and wait for the object to change; transient failures (HTTP, and
API calls as :func:`~dpctl.kube.is_transient` decides) retry with backoff.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from dpctl import api, log
from dpctl.api import LogMsg
from dpctl.clients.http import HttpCallError
from dpctl.clients.inference import SleepModeUnavailable
from dpctl.dualpods import gpumap, podview, sleepers
from dpctl.dualpods.effects import Effects
from dpctl.dualpods.keys import RunnerKey, ServerKey
from dpctl.dualpods.latency import Stamps, Step
from dpctl.dualpods.podview import RawObj
from dpctl.dualpods.state import RunnerState, ServerState, instance
from dpctl.kube import ApiError, is_transient
from dpctl.podbuild.nominal import BuildError, Runner, build_runner, fallback_runner_name
from dpctl.workqueue.outcome import Done, Outcome, RequeueAfter, Retry

DONE = Done()

# How often to look again while something we cannot watch settles: a GPU still held by a
# departing server, or sleeper-limit victims still terminating.
SETTLE_POLL_S = 0.5
# When /sleep (on unbind) or /wake_up (bound) keeps failing, at least this many times in a row
# and for at least this long, the runner is deleted instead: a wedged server must not hold a GPU
# or a requester forever. Counting time as well as tries matters: the work queue retries within
# milliseconds at first, and a server still loading its model (503, or nothing listening yet)
# would otherwise be deleted a few milliseconds before it could have slept.
MAX_SLEEP_FAILURES = 3
MAX_WAKE_FAILURES = 3
SLEEP_GIVE_UP_S = 30.0
WAKE_GIVE_UP_S = 30.0
# A stub that has just started may not listen yet: its first refusals are not worth a status error.
GPU_QUERY_GRACE_S = 5.0


class Cache(Protocol):
    """The informers' view, as the reconciler needs it."""

    def pod_by_uid(self, uid: str) -> RawObj | None: ...
    def pod(self, name: str) -> RawObj | None: ...
    def runners_bound_to(self, requester_uid: str) -> Sequence[RawObj]: ...
    def runners_with_nominal(self, nominal: str) -> Sequence[RawObj]: ...
    def runners_on_gpu(self, node: str, index: int) -> Sequence[RawObj]: ...
    def node(self, name: str) -> RawObj | None: ...
    def gpu_map(self) -> gpumap.GpuMap | None: ...


@dataclass(frozen=True)
class Settings:
    sleeper_limit: int = 2


class Reconciler:
    def __init__(
        self, cache: Cache, effects: Effects, settings: Settings, stamps: Stamps | None = None
    ) -> None:
        self.cache = cache
        self.fx = effects
        self.settings = settings
        # When the events that enable each step arrived (the controller's handlers mark them).
        self.stamps = stamps if stamps is not None else Stamps()
        self.servers: dict[str, ServerState] = {}
        self.runners: dict[str, RunnerState] = {}
        # Names of the objects an inference server was last seen with, for its end-of-life line.
        self.names: dict[str, dict[str, Any]] = {}
        self.log = log.get("dualpods")

    async def reconcile(self, key: ServerKey | RunnerKey) -> Outcome:
        """Decide and act for one key. An API call that failed is retried with backoff, without a
        traceback: for a transient reason (the API server restarting or overloaded, an object
        changed or gone since the cache saw it; the soak found these logged as unexpected
        errors), or because it was refused (403, 422) at a step no user can fix by editing a
        requester, so only an administrator's change (RBAC, an admission policy) helps, and the
        backoff (capped) keeps asking meanwhile. Refusals a user can fix are status errors at
        their call sites (:meth:`_create`, :meth:`_bind`)."""
        try:
            if isinstance(key, ServerKey):
                return await self.server(key.uid)
            return await self.unbound_runner(key.uid)
        except ApiError as err:
            if is_transient(err):
                return Retry(f"the API server answered {err.status} {err.reason}: {err.message}")
            return Retry(f"the API server refused a request ({err.status} {err.reason}): {err.message}")
        except Exception as err:
            if not is_transient(err):
                raise
            return Retry(f"the API server cannot be reached: {err}")

    def describe(self, key: ServerKey | RunnerKey) -> str:
        """``namespace/name`` of the Pod a key stands for, for log lines (the key's UID if unknown)."""
        pod = self.cache.pod_by_uid(key.uid)
        if pod is not None:
            return f"{podview.meta(pod).get('namespace', '')}/{podview.name(pod)}"
        known = self.names.get(key.uid, {}).get("requester")
        kind = "requester" if isinstance(key, ServerKey) else "runner"
        return str(known) if known else f"{kind} with UID {key.uid}"

    # ------------------------------------------------------------------ the decision

    async def server(self, uid: str) -> Outcome:
        requester = self.cache.pod_by_uid(uid)
        runner = await self._the_runner(uid)
        if requester is None and runner is None:
            return self._end_of_life(uid)
        names = self.names.setdefault(uid, {})
        if requester is not None:
            names.update(requester=podview.name(requester), node=podview.node_name(requester))
        if runner is not None:
            names.update(_about(runner))
        st = self.servers.setdefault(uid, ServerState())
        if runner is not None and podview.deleting(runner):
            return await self._reflect_runner_deletion(st, requester, runner)
        if requester is None or podview.deleting(requester):
            return await self._release(st, requester, runner)
        node_name = podview.node_name(requester)
        node = self.cache.node(node_name) if node_name else None
        if node is None or podview.deleting(node):
            return DONE  # not scheduled yet, or its Node is absent or departing
        if runner is not None:
            return await self._serve_bound(st, requester, runner)
        if podview.node_unschedulable(node):
            return await self._delete_requester_on_cordoned_node(st, requester)
        return await self._actuate(st, requester, node_name, podview.labels(node))

    # ------------------------------------------------------------------ steps

    def _end_of_life(self, uid: str) -> Outcome:
        # Said once per server: later events about the same UID (a deletion seen twice, a stale
        # key) find nothing to forget.
        known = self.servers.pop(uid, None) is not None or uid in self.names
        self.stamps.forget(uid)
        names = self.names.pop(uid, {})
        if known:
            self.log.info(LogMsg.END_OF_LIFE, requesterUID=uid, **names)
        return DONE

    async def _the_runner(self, uid: str) -> RawObj | None:
        """The runner bound to ``uid``; duplicates (which a lost race could make) are deleted."""
        runners = sorted(
            self.cache.runners_bound_to(uid),
            key=lambda r: (str(podview.meta(r).get("creationTimestamp", "")), podview.name(r)),
        )
        for extra in runners[1:]:
            if not podview.deleting(extra):
                self.log.warning("Deleting duplicate server-running Pod", runner=podview.name(extra))
                await self._delete_runner(extra, "duplicate")
        return runners[0] if runners else None

    async def _reflect_runner_deletion(
        self, st: ServerState, requester: RawObj | None, runner: RawObj
    ) -> Outcome:
        """Someone deletes the runner: the requester goes too, then the runner is let go."""
        if requester is not None and not podview.deleting(requester) and not st.requester_delete_requested:
            await self.fx.delete_pod(podview.name(requester), podview.uid(requester))
            st.requester_delete_requested = True
            self.log.info(
                "Requested deletion of server-requesting Pod because of deletion of server-running Pod",
                requester=podview.name(requester),
                runner=podview.name(runner),
            )
            self.fx.event(
                requester,
                "Normal",
                "RunnerDeleted",
                f"server-running Pod {podview.name(runner)} is being deleted, so this Pod is deleted too",
            )
        await self._drop_runner_finalizer(runner)
        if requester is not None and not self._runner_still_serving(runner):
            await self._set_requester_finalizer(requester, present=False)
        return DONE

    async def _release(self, st: ServerState, requester: RawObj | None, runner: RawObj | None) -> Outcome:
        """The requester is gone or going: unbind its runner (sleep it, or delete it), then let go."""
        if runner is not None:
            outcome = await self._unbind(st, runner)
            if outcome is not DONE:
                return outcome
        if requester is not None:
            await self._set_requester_finalizer(requester, present=False)
        return DONE

    async def _unbind(self, st: ServerState, runner: RawObj) -> Outcome:
        reason = self._cannot_sleep_reason(runner)
        if reason:
            await self._delete_runner(runner, reason)
            return DONE
        host, port = podview.pod_ip(runner), podview.server_port(runner) or 0
        if podview.labels(runner).get(api.SLEEPING_LABEL) != "true":
            # Routing that selects on sleeping=false stops before the server stops serving.
            await self.fx.patch_pod(
                podview.name(runner), {"metadata": {"labels": {api.SLEEPING_LABEL: "true"}}}
            )
        try:
            await self.fx.sleep(host, port)
        except SleepModeUnavailable:
            await self._delete_runner(runner, "no-sleep-mode")
            return DONE
        except HttpCallError as err:
            if st.sleep_failures.failed(MAX_SLEEP_FAILURES, SLEEP_GIVE_UP_S, time.monotonic()):
                await self._delete_runner(runner, "sleep-failed")
                return DONE
            return Retry(f"putting {podview.name(runner)} to sleep: {err}")
        st.sleep_failures.reset()
        self.fx.count("sleep")
        self.log.info(LogMsg.SLEPT, **_about(runner))
        self.runners[podview.uid(runner)] = RunnerState(asleep_instance=instance(runner))
        await self.fx.patch_pod(
            podview.name(runner),
            {
                "metadata": {
                    "annotations": {api.REQUESTER_ANNOTATION: None},
                    "labels": {api.DUAL_LABEL: None},
                    "$deleteFromPrimitiveList/finalizers": [api.RUNNER_FINALIZER],
                }
            },
        )
        self.log.info(LogMsg.UNBOUND_RUNNER, **_about(runner))
        self.fx.event(runner, "Normal", "Unbound", "inference server put to sleep and unbound")
        return DONE

    def _cannot_sleep_reason(self, runner: RawObj) -> str:
        node = self.cache.node(podview.runner_node(runner))
        if node is None or podview.deleting(node):
            return "node-gone"
        if podview.in_trouble(runner):
            return "in-trouble"
        if (
            not podview.container_running(runner)
            or not podview.pod_ip(runner)
            or podview.server_port(runner) is None
        ):
            return "not-running"
        return ""

    async def _serve_bound(self, st: ServerState, requester: RawObj, runner: RawObj) -> Outcome:
        """Keep a bound pair right: runner awake, requester state current, readiness relayed."""
        errors: list[str] = []
        if podview.in_trouble(runner):
            errors.append(
                f"the inference server in {podview.name(runner)} has restarted "
                f"{podview.restart_count(runner)} times and is not ready; see its log"
            )
        outcome = await self._ensure_awake(st, runner, errors)
        await self._ensure_requester_state(st, requester, runner, errors)
        if outcome is not DONE:
            return outcome
        return await self._relay_readiness(st, requester, runner)

    async def _ensure_awake(self, st: ServerState, runner: RawObj, errors: list[str]) -> Outcome:
        if not st.knows_awake(runner):
            if not (podview.pod_ready(runner) and podview.pod_ip(runner)):
                return DONE  # its Ready condition will change; ask then
            host, port = podview.pod_ip(runner), podview.server_port(runner) or 0
            try:
                asleep = await self.fx.is_sleeping(host, port)
                if asleep:
                    await self.fx.wake(host, port)
                    self.fx.count("wake")
                    self.log.info(LogMsg.WOKE, **_about(runner))
            except SleepModeUnavailable:
                asleep = False  # a server without sleep mode is never asleep
            except HttpCallError as err:
                errors.append(f"cannot wake the inference server in {podview.name(runner)}: {err}")
                if st.wake_failures.failed(MAX_WAKE_FAILURES, WAKE_GIVE_UP_S, time.monotonic()):
                    await self._delete_runner(runner, "wake-failed")
                    return DONE
                return Retry(str(err))
            st.wake_failures.reset()
            st.awake_instance = instance(runner)
        if podview.labels(runner).get(api.SLEEPING_LABEL) != "false":
            await self.fx.patch_pod(
                podview.name(runner), {"metadata": {"labels": {api.SLEEPING_LABEL: "false"}}}
            )
        return DONE

    async def _relay_readiness(self, st: ServerState, requester: RawObj, runner: RawObj) -> Outcome:
        """Whenever the runner's Ready differs from what the requester shows, tell the stub."""
        want = podview.pod_ready(runner) and st.knows_awake(runner)
        if want == podview.container_ready(requester) or st.already_relayed(want, requester):
            return DONE
        host = podview.pod_ip(requester)
        try:
            port = podview.admin_port(requester)
            if want:
                self._sending("relay", podview.uid(requester))
            await self.fx.relay(host, port, want)
        except (ValueError, HttpCallError) as err:
            return Retry(f"relaying readiness to {podview.name(requester)}: {err}")
        st.relayed = (want, instance(requester))
        self.log.info(
            LogMsg.RELAYED_READINESS,
            requester=podview.name(requester),
            runner=podview.name(runner),
            node=podview.node_name(requester),
            ready=want,
        )
        if want and not st.actuation_observed and st.actuation_path in ("cold", "hot"):
            st.actuation_observed = True
            self.fx.actuated("cold" if st.actuation_path == "cold" else "hot", requester)
        return DONE

    async def _delete_requester_on_cordoned_node(self, st: ServerState, requester: RawObj) -> Outcome:
        if not st.requester_delete_requested:
            await self.fx.delete_pod(podview.name(requester), podview.uid(requester))
            st.requester_delete_requested = True
            self.log.info(
                "Deleting server-requesting Pod because it is bound to an unschedulable Node and has no server-running Pod",
                requester=podview.name(requester),
                node=podview.node_name(requester),
            )
        return DONE

    async def _actuate(
        self, st: ServerState, requester: RawObj, node: str, node_labels: Mapping[str, str]
    ) -> Outcome:
        """Give an unbound requester a server: wake a matching sleeper, or create a runner."""
        name = podview.name(requester)
        try:
            admin_port = podview.admin_port(requester)
        except ValueError as err:
            return await self._user_error(st, requester, "BadAdminPort", str(err))
        if not podview.pod_ip(requester) or not podview.container_running(requester):
            return DONE  # the stub is not up yet; its status change will bring us back
        uuids = st.known_gpus(requester)
        if not uuids:
            try:
                uuids = tuple(await self.fx.query_gpus(podview.pod_ip(requester), admin_port))
            except HttpCallError as err:
                now = time.monotonic()
                st.gpu_query_failing_since = st.gpu_query_failing_since or now
                starting = now - st.gpu_query_failing_since < GPU_QUERY_GRACE_S
                if not starting:
                    await self._ensure_requester_state(
                        st, requester, None, [f"cannot get the GPUs from the requester: {err}"]
                    )
                return Retry(f"querying GPUs of {name}: {err}", expected=starting)
            st.gpu_uuids, st.gpu_uuids_from = uuids, instance(requester)
            st.gpu_query_failing_since = None
            self.log.info(LogMsg.FOUND_GPUS, requester=name, node=node, gpuUUIDs=list(uuids))
        try:
            indices = gpumap.indices_for(self.cache.gpu_map(), node, uuids)
            built = build_runner(requester, node, indices, uuids, node_labels)
        except (gpumap.GpuMapError, BuildError) as err:
            reason = "GpuMap" if isinstance(err, gpumap.GpuMapError) else "BadServerPatch"
            return await self._user_error(st, requester, reason, str(err))
        if st.refused == (podview.resource_version(requester), built.nominal_hash):
            return DONE  # the API server refused this runner; nothing has changed since
        await self._drop_restarted_sleepers(node, indices)
        busy = self._gpus_held_by_others(requester, node, indices)
        if busy:
            return await self._wait(st, requester, f"GPUs {busy} still held by another inference server")
        sleeper = self._matching_sleeper(built.nominal_hash)
        if sleeper is not None:
            return await self._bind(st, requester, sleeper, built)
        waiting = await self._make_room(node, indices)
        if waiting:
            return await self._wait(st, requester, f"waiting for {waiting} sleeping runner(s) to go")
        return await self._create(st, requester, built)

    async def _user_error(self, st: ServerState, requester: RawObj, reason: str, message: str) -> Outcome:
        self.fx.count("status_error", reason)
        if message not in self._status_errors(requester):
            self.log.warning(
                "Server-requesting Pod cannot be served", requester=podview.name(requester), reason=message
            )
            self.fx.event(requester, "Warning", reason, message)
        await self._ensure_requester_state(st, requester, None, [message])
        return DONE  # retried when the requester, the gpu-map or its Node changes

    async def _wait(self, st: ServerState, requester: RawObj, why: str) -> Outcome:
        """Look again soon. The requester got this far, so the errors its status shows (the stub
        did not answer, a bad patch since fixed) hold no more and go now, not after the wait."""
        if self._status_errors(requester):
            await self._ensure_requester_state(st, requester, None, [])
        return RequeueAfter(SETTLE_POLL_S, why)

    async def _refused(
        self, st: ServerState, requester: RawObj, built: Runner, err: ApiError, what: str
    ) -> Outcome:
        """The API server (422) or an admission policy or RBAC (403) refused a write of the runner:
        a user error in the server's own words. The same write is not sent again until the
        requester changes, or what would be sent does (its gpu-map indices, its Node)."""
        verdict = "is invalid" if err.invalid else "is forbidden"
        message = f"{what} {verdict}: {err.detail}"
        outcome = await self._user_error(st, requester, "RunnerRefused", message)
        current = self.cache.pod_by_uid(podview.uid(requester)) or requester
        st.refused = (podview.resource_version(current), built.nominal_hash)
        return outcome

    def _gpus_held_by_others(self, requester: RawObj, node: str, indices: Sequence[int]) -> list[int]:
        """GPUs where a runner bound to another requester is, or an unbound one that may be awake."""
        uid = podview.uid(requester)
        held = []
        for index in indices:
            for runner in self.cache.runners_on_gpu(node, index):
                bound = podview.bound_requester(runner)
                if (bound is not None and bound[0] != uid) or (bound is None and self._may_be_awake(runner)):
                    held.append(index)
                    break
        return held

    def _may_be_awake(self, runner: RawObj) -> bool:
        """Whether an unbound runner's server may be awake: its container (re)started after the
        controller last wrote the runner (it unbinds a runner only once asleep), and nobody has
        found this container instance asleep since. A restarted vLLM loads its model onto its
        GPUs awake, before anyone can ask it anything (the soak found runners created beside one).
        Decided from the API, so a restarted controller decides the same."""
        if not podview.container_running(runner):
            return False
        st = self.runners.get(podview.uid(runner))
        if st is not None and st.asleep_instance == instance(runner):
            return False
        started = podview.container_started_at(runner)
        return bool(started) and started >= podview.manager_time(runner)

    async def _drop_restarted_sleepers(self, node: str, indices: Sequence[int]) -> None:
        """A sleeper whose server restarted and is not Ready again (loading, or crash-looping) is no
        longer warm and may hold its GPUs: a requester that needs them does not wait for it."""
        for index in indices:
            for runner in self.cache.runners_on_gpu(node, index):
                if (
                    podview.bound_requester(runner) is None
                    and not podview.deleting(runner)
                    and podview.in_trouble(runner)
                    and self._may_be_awake(runner)
                ):
                    await self._delete_runner(runner, "restarted-sleeper")

    def _matching_sleeper(self, nominal: str) -> RawObj | None:
        """A sleeping runner built from the same definition on the same GPUs, most recently used first."""
        candidates = [
            r
            for r in self.cache.runners_with_nominal(nominal)
            if sleepers.is_sleeper(r) and podview.container_running(r) and not podview.in_trouble(r)
        ]
        candidates.sort(key=lambda r: (podview.manager_time(r), podview.name(r)), reverse=True)
        return candidates[0] if candidates else None

    async def _make_room(self, node: str, indices: Sequence[int]) -> int:
        """Enforce the sleeper limit on each GPU; the number of runners still going away there."""
        going = 0
        deleted: set[str] = set()
        for index in indices:
            on_gpu = self.cache.runners_on_gpu(node, index)
            for victim in sleepers.victims(on_gpu, self.settings.sleeper_limit):
                if podview.uid(victim) in deleted:
                    continue  # a multi-GPU sleeper counts on each of its GPUs
                deleted.add(podview.uid(victim))
                try:
                    await self.fx.delete_pod(
                        podview.name(victim),
                        podview.uid(victim),
                        podview.resource_version(victim) or None,
                    )
                except ApiError as err:
                    if not (err.conflict or err.not_found):
                        raise
                    # Changed since the cache saw it (or gone): look again with a fresher cache.
                    going += 1
                    continue
                self.fx.count("eviction")
                self.fx.count("runner_deleted", "sleeper-limit")
                self.log.info(LogMsg.SLEEPER_LIMIT_DELETE, runner=podview.name(victim), node=node, gpu=index)
                self.fx.event(
                    victim,
                    "Normal",
                    "SleeperEvicted",
                    f"deleted to keep at most {self.settings.sleeper_limit} sleeping servers on GPU {index} of {node}",
                )
                going += 1
            # Its process must exit (freeing GPU memory) before a new server starts there.
            going += sum(1 for r in on_gpu if podview.deleting(r))
        return going

    async def _bind(self, st: ServerState, requester: RawObj, sleeper: RawObj, built: Runner) -> Outcome:
        name, runner_name = podview.name(requester), podview.name(sleeper)
        node = podview.node_name(requester)
        try:
            bound = await self.fx.patch_pod(runner_name, _binding_patch(requester, built, sleeper))
        except ApiError as err:
            if err.refused:
                return await self._refused(
                    st, requester, built, err, f"binding the sleeping server-running Pod {runner_name}"
                )
            if err.conflict or err.not_found:
                return Retry(f"sleeper {runner_name} changed while binding: {err.message}")
            raise
        self.fx.count("bind")
        st.actuation_path = "hot"
        self.log.info(LogMsg.BOUND_RUNNER, requester=name, runner=runner_name, node=node)
        try:
            self._sending("wake", podview.uid(requester))
            await self.fx.wake(podview.pod_ip(sleeper), built.server_port)
        except HttpCallError as err:
            # Bound now: the bound path asks /is_sleeping and wakes it again.
            return Retry(f"waking {runner_name}: {err}")
        self.stamps.mark("relay", podview.uid(requester))  # a sleeper was Ready all along
        self.fx.count("wake")
        self.log.info(LogMsg.WOKE, runner=runner_name, requester=name, node=node)
        self.fx.event(
            requester, "Normal", "WokeSleeper", f"woke sleeping server-running Pod {runner_name} and bound it"
        )
        st.awake_instance = instance(bound)
        await self.fx.patch_pod(runner_name, {"metadata": {"labels": {api.SLEEPING_LABEL: "false"}}})
        await self._ensure_requester_state(st, requester, bound, [])
        return DONE

    async def _create(self, st: ServerState, requester: RawObj, built: Runner) -> Outcome:
        name = podview.name(requester)
        try:
            self._sending("create", podview.uid(requester))
            created = await self._create_or_adopt(requester, built)
        except ApiError as err:
            if not err.refused:
                raise
            return await self._refused(st, requester, built, err, f"the server-running Pod {built.name}")
        if created is None:
            return RequeueAfter(SETTLE_POLL_S, f"name {built.name} is taken by a Pod on its way out")
        st.actuation_path = "cold"
        st.awake_instance = instance(created)
        self.log.info(
            LogMsg.CREATED_RUNNER,
            requester=name,
            runner=podview.name(created),
            node=podview.runner_node(created),
        )
        self.fx.event(
            requester, "Normal", "CreatedRunner", f"created server-running Pod {podview.name(created)}"
        )
        await self._ensure_requester_state(st, requester, created, [])
        return DONE

    async def _create_or_adopt(self, requester: RawObj, built: Runner) -> dict[str, Any] | None:
        """The runner, created (or found created); None while its name is held by a departing Pod."""
        try:
            return await self.fx.create_pod(built.pod)
        except ApiError as err:
            if not err.already_exists:
                raise
        return await self._adopt_or_rename(requester, built)

    async def _adopt_or_rename(self, requester: RawObj, built: Runner) -> dict[str, Any] | None:
        """The runner's name exists: ours from a lost create response, or someone else's."""
        existing = await self.fx.get_pod(built.name)
        if existing is not None and podview.bound_requester(existing) == (
            podview.uid(requester),
            podview.name(requester),
        ):
            return existing
        if existing is not None and podview.deleting(existing):
            return None
        alt = built.renamed(fallback_runner_name(podview.name(requester), podview.uid(requester))).pod
        try:
            return await self.fx.create_pod(alt)
        except ApiError as err:
            if not err.already_exists:
                raise
            existing = await self.fx.get_pod(alt["metadata"]["name"])
            return existing if existing is not None and podview.bound_requester(existing) else None

    # ------------------------------------------------------------------ unbound runners

    async def unbound_runner(self, uid: str) -> Outcome:
        """A sleeper whose server restarted is awake again: put it back to sleep."""
        runner = self.cache.pod_by_uid(uid)
        if runner is None:
            self.runners.pop(uid, None)
            return DONE
        if podview.bound_requester(runner) is not None or podview.deleting(runner):
            return DONE
        st = self.runners.setdefault(uid, RunnerState())
        if st.asleep_instance == instance(runner) or not podview.pod_ready(runner):
            return DONE
        host, port = podview.pod_ip(runner), podview.server_port(runner) or 0
        try:
            if await self.fx.is_sleeping(host, port):
                st.asleep_instance = instance(runner)
                return DONE
            await self.fx.sleep(host, port)
        except SleepModeUnavailable:
            await self._delete_runner(runner, "no-sleep-mode")
            return DONE
        except HttpCallError as err:
            return Retry(f"checking sleeper {podview.name(runner)}: {err}")
        self.fx.count("sleep")
        self.log.info(LogMsg.SLEPT, **_about(runner), why="unbound server was awake")
        st.asleep_instance = instance(runner)
        if podview.labels(runner).get(api.SLEEPING_LABEL) != "true":
            await self.fx.patch_pod(
                podview.name(runner), {"metadata": {"labels": {api.SLEEPING_LABEL: "true"}}}
            )
        return DONE

    # ------------------------------------------------------------------ small writes

    def _sending(self, step: Step, uid: str) -> None:
        """About to send ``step``'s call: report how long after its enabling event (once)."""
        elapsed = self.stamps.take(step, uid)
        if elapsed is not None:
            self.fx.added_latency(step, elapsed)

    async def _delete_runner(self, runner: RawObj, reason: str) -> None:
        await self.fx.delete_pod(podview.name(runner), podview.uid(runner))
        await self._drop_runner_finalizer(runner)
        self.fx.count("runner_deleted", reason)
        self.log.info("Deleted server-running Pod", runner=podview.name(runner), reason=reason)
        self.fx.event(
            runner,
            "Warning" if reason != "duplicate" else "Normal",
            "RunnerDeleted",
            f"deleted server-running Pod: {reason}",
        )

    async def _drop_runner_finalizer(self, runner: RawObj) -> None:
        if api.RUNNER_FINALIZER in podview.finalizers(runner):
            await self._patch_ignoring_gone(
                runner, {"metadata": {"$deleteFromPrimitiveList/finalizers": [api.RUNNER_FINALIZER]}}
            )
            self.log.progress("Removed finalizer from server-running Pod", runner=podview.name(runner))

    async def _set_requester_finalizer(self, requester: RawObj, present: bool) -> None:
        if (api.REQUESTER_FINALIZER in podview.finalizers(requester)) == present:
            return
        patch: dict[str, Any] = (
            {"metadata": {"finalizers": [api.REQUESTER_FINALIZER]}}
            if present
            else {"metadata": {"$deleteFromPrimitiveList/finalizers": [api.REQUESTER_FINALIZER]}}
        )
        await self._patch_ignoring_gone(requester, patch)
        self.log.progress(
            "Added requester finalizer" if present else "Removed requester finalizer",
            requester=podview.name(requester),
        )

    async def _patch_ignoring_gone(self, pod: RawObj, patch: RawObj) -> None:
        try:
            await self.fx.patch_pod(
                podview.name(pod), {"metadata": {"uid": podview.uid(pod), **patch["metadata"]}}
            )
        except ApiError as err:
            # 422 "no new finalizers can be added if the object is being deleted": the cache has
            # not seen the deletion yet (the soak found this); its event brings the server back.
            being_deleted = err.invalid and "being deleted" in err.message
            if not (err.not_found or err.conflict or being_deleted):
                raise

    def _runner_still_serving(self, runner: RawObj) -> bool:
        node = self.cache.node(podview.runner_node(runner))
        return node is not None and podview.container_running(runner)

    @staticmethod
    def _status_errors(requester: RawObj) -> tuple[str, ...]:
        raw = podview.annotations(requester).get(api.STATUS_ANNOTATION)
        if not raw:
            return ()
        try:
            return api.RequesterStatus.model_validate_json(raw).errors
        except ValueError:
            return ()

    async def _ensure_requester_state(
        self, st: ServerState, requester: RawObj, runner: RawObj | None, errors: Sequence[str]
    ) -> None:
        """One patch, only when something differs: status, FYI label and annotation, finalizer."""
        want_status = api.RequesterStatus(Errors=tuple(errors)).to_annotation()
        have_ann = podview.annotations(requester)
        new_ann: dict[str, str | None] = {}
        if have_ann.get(api.STATUS_ANNOTATION) != want_status:
            new_ann[api.STATUS_ANNOTATION] = want_status
        accelerators = ",".join(st.known_gpus(requester))
        if not accelerators and runner is not None:
            # Bound before a restart: the stub is not asked again, the bound runner has them.
            accelerators = podview.annotations(runner).get(api.ACCELERATORS_ANNOTATION) or ""
        if accelerators and have_ann.get(api.ACCELERATORS_ANNOTATION) != accelerators:
            new_ann[api.ACCELERATORS_ANNOTATION] = accelerators
        labels: dict[str, str | None] = {}
        dual = podview.name(runner) if runner is not None else None
        if podview.labels(requester).get(api.DUAL_LABEL) != dual:
            labels[api.DUAL_LABEL] = dual
        metadata: dict[str, Any] = {}
        if new_ann:
            metadata["annotations"] = new_ann
        if labels:
            metadata["labels"] = labels
        want_finalizer = runner is not None and podview.container_running(runner)
        if want_finalizer != (api.REQUESTER_FINALIZER in podview.finalizers(requester)):
            if want_finalizer:
                metadata["finalizers"] = [api.REQUESTER_FINALIZER]
            else:
                metadata["$deleteFromPrimitiveList/finalizers"] = [api.REQUESTER_FINALIZER]
        if metadata:
            await self._patch_ignoring_gone(requester, {"metadata": metadata})


def _about(runner: RawObj) -> dict[str, Any]:
    """Key-values naming what a line about a runner concerns: it, its Node, its requester if bound."""
    kv = {"runner": podview.name(runner), "node": podview.runner_node(runner)}
    bound = podview.bound_requester(runner)
    if bound is not None:
        kv["requester"] = bound[1]
    return kv


def _binding_patch(requester: RawObj, built: Runner, sleeper: RawObj) -> dict[str, Any]:
    """Bind a sleeper: the resourceVersion makes it fail if anyone changed the sleeper meanwhile."""
    meta: Mapping[str, Any] = built.pod["metadata"]
    ann = meta.get("annotations") or {}
    return {
        "metadata": {
            "resourceVersion": podview.meta(sleeper).get("resourceVersion"),
            "annotations": {
                api.REQUESTER_ANNOTATION: f"{podview.uid(requester)} {podview.name(requester)}",
                api.ACCELERATORS_ANNOTATION: ann.get(api.ACCELERATORS_ANNOTATION),
            },
            "labels": {api.DUAL_LABEL: podview.name(requester)},
            "finalizers": [api.RUNNER_FINALIZER],
        }
    }
