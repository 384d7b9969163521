"""The reconciler of one inference server, readable top to bottom like contract §5.

:meth:`Reconciler.server` is the whole of it: :func:`~dpctl.dualpods.decide.decide` picks the
step, and the step's module acts (:mod:`dpctl.dualpods.steps`). This module owns only the error
policy around a reconcile: user mistakes are status errors inside the steps; transient failures
(HTTP, and API calls as :func:`~dpctl.kube.is_transient` decides) retry with backoff.
"""

from __future__ import annotations

from dpctl.dualpods import decide, podview
from dpctl.dualpods.keys import IscKey, Key, ServerKey
from dpctl.dualpods.latency import Stamps
from dpctl.dualpods.metrics import CURRENT_ISC
from dpctl.dualpods.podview import RawObj
from dpctl.dualpods.ports import Ports
from dpctl.dualpods.steps import actuation, finalizers, instances, launching, pool, serving, teardown
from dpctl.dualpods.steps.context import Cache, Context, Settings
from dpctl.kube import ApiError, is_transient
from dpctl.workqueue.outcome import Done, Outcome, Retry

__all__ = ["Reconciler", "Settings"]


class Reconciler:
    def __init__(self, cache: Cache, ports: Ports, settings: Settings, stamps: Stamps | None = None) -> None:
        self.cx = Context(cache, ports, settings, stamps if stamps is not None else Stamps())
        self.memory = self.cx.memory
        self.stamps = self.cx.stamps

    async def reconcile(self, key: Key) -> Outcome:
        """Decide and act for one key. An API call that failed is retried with backoff, without a
        traceback: for a transient reason (the API server restarting or overloaded, an object
        changed or gone since the cache saw it; the soak found these logged as unexpected
        errors), or because it was refused (403, 422) at a step no user can fix by editing a
        requester, so only an administrator's change (RBAC, an admission policy) helps, and the
        backoff (capped) keeps asking meanwhile. Refusals a user can fix are status errors where
        they happen (creating and binding runners)."""
        try:
            if isinstance(key, ServerKey):
                return await self.server(key.uid)
            if isinstance(key, IscKey):
                return await instances.delete_obsolete(self.cx, key.name)
            pod = self.cx.cache.pod_by_uid(key.uid)
            if pod is not None and podview.is_launcher(pod):
                return await instances.tend_unbound(self.cx, pod)
            return await pool.resleep_unbound(self.cx, key.uid)
        except ApiError as err:
            if is_transient(err):
                return Retry(f"the API server answered {err.status} {err.reason}: {err.message}")
            return Retry(f"the API server refused a request ({err.status} {err.reason}): {err.message}")
        except Exception as err:
            if not is_transient(err):
                raise
            return Retry(f"the API server cannot be reached: {err}")

    def describe(self, key: Key) -> str:
        """``namespace/name`` of the Pod a key stands for, for log lines (the key's UID if unknown)."""
        if isinstance(key, IscKey):
            return f"InferenceServerConfig {key.name}"
        pod = self.cx.cache.pod_by_uid(key.uid)
        if pod is not None:
            return f"{podview.meta(pod).get('namespace', '')}/{podview.name(pod)}"
        kind = "requester" if isinstance(key, ServerKey) else "runner or launcher"
        return self.memory.name_of(key.uid) or f"{kind} with UID {key.uid}"

    async def server(self, uid: str) -> Outcome:
        cx = self.cx
        requester = cx.cache.pod_by_uid(uid)
        CURRENT_ISC.set(podview.isc_name(requester) if requester is not None else "")
        runner = await self._the_runner(uid)
        step = decide.decide(requester, runner, self._node_of(requester))
        on_launcher = runner is not None and podview.is_launcher(runner)
        if not isinstance(step, decide.ServeBound):
            cx.ports.logs.stop(uid)  # the log relay follows exactly the bound pairs being served
        if isinstance(step, decide.Forget):
            return teardown.end_of_life(cx, uid)
        self.memory.note_names(uid, **teardown.names_of(requester, runner))
        st = self.memory.server(uid)
        match step:
            case decide.ReflectRunnerDeletion(requester, runner):
                if on_launcher:
                    cx.memory.forget_launcher(podview.uid(runner))
                return await teardown.reflect_runner_deletion(cx, st, requester, runner)
            case decide.Release(requester, runner):
                unbind = instances.unbind if on_launcher else teardown.unbind
                return await teardown.release(cx, st, requester, runner, unbind)
            case decide.RefuseTwoDialects(requester):
                return await finalizers.refuse_two_dialects(cx, requester)
            case decide.RefuseTwoPaths(requester):
                return await finalizers.refuse_two_paths(cx, st, requester)
            case decide.AwaitNode():
                return Done()
            case decide.ServeBound(requester, runner):
                if on_launcher:
                    return await instances.serve_bound(cx, st, requester, runner)
                return await serving.serve_bound(cx, st, requester, runner)
            case decide.DeleteOnCordon(requester):
                return await teardown.delete_requester_on_cordoned_node(cx, st, requester)
            case decide.Actuate(requester, node, labels):
                if podview.wants_launcher(requester):
                    return await launching.actuate(cx, st, requester, node)
                return await actuation.actuate(cx, st, requester, node, labels)

    async def _the_runner(self, uid: str) -> RawObj | None:
        """The runner bound to ``uid``; duplicates are deleted."""
        runner, duplicates = decide.the_runner(self.cx.cache.providers_bound_to(uid))
        for extra in duplicates:
            self.cx.log.warning("Deleting duplicate server-running Pod", runner=podview.name(extra))
            await teardown.delete_runner(self.cx, extra, "duplicate")
        return runner

    def _node_of(self, requester: RawObj | None) -> RawObj | None:
        node_name = podview.node_name(requester) if requester is not None else ""
        return self.cx.cache.node(node_name) if node_name else None
