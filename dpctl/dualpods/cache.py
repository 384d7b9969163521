"""The controller's view of its informers: indexes over Pods, plus Nodes, the ``gpu-map``, and
the InferenceServerConfigs and LauncherConfigs of the launcher path.

Indexes are declared here (``INDEXERS``) and maintained by the informer store on every event,
so each lookup the reconciler makes is a dictionary hit, not a scan of the namespace.

:class:`RecentWrites` lays the controller's own latest writes over the cache until the informer
has caught up with them, so a reconcile that follows another one's writes neither repeats them
nor trips over their preconditions.

:func:`slim_pod` is the Pod informer's transform: what the controller keeps of each Pod. Of
``managedFields`` (often half of a Pod's JSON) only the controller's own last write time stays,
which is what the sleeper-limit LRU reads (``podview.manager_time``); of a runner's spec, only
where it runs and its ``inference-server`` container's env and readiness probe (its GPUs and its
port), and the same of a launcher (where it runs); a requester keeps its whole spec (a runner is built from it). A Pod that is neither keeps
only its identity, since nothing but "is it one of ours?" is ever asked of it; one that later
becomes one arrives whole with that change.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from dpctl import api
from dpctl.dualpods import gpumap, launcherview, podview
from dpctl.dualpods.podview import RawObj
from dpctl.informer import Store

BY_UID = "uid"
BY_BOUND_REQUESTER = "bound-requester"
BY_NOMINAL = "nominal"
BY_GPU = "gpu"
REQUESTERS_BY_NODE = "requesters-by-node"
REQUESTERS_BY_ISC = "requesters-by-isc"
LAUNCHERS_BY_HASH = "launchers-by-config-hash"
LAUNCHERS_BY_NODE = "launchers-by-node"


def _by_uid(pod: RawObj) -> Iterable[str]:
    return [podview.uid(pod)]


def _by_bound_requester(pod: RawObj) -> Iterable[str]:
    bound = podview.bound_requester(pod) if podview.is_provider(pod) else None
    return [bound[0]] if bound else []


def _by_nominal(pod: RawObj) -> Iterable[str]:
    return [podview.nominal_hash(pod)] if podview.is_runner(pod) else []


def gpu_key(node: str, index: int) -> str:
    return f"{node} {index}"


def _by_gpu(pod: RawObj) -> Iterable[str]:
    if not podview.is_runner(pod):
        return []
    node = podview.runner_node(pod)
    return [gpu_key(node, i) for i in podview.gpu_indices(pod)] if node else []


def _requesters_by_node(pod: RawObj) -> Iterable[str]:
    node = podview.node_name(pod)
    return [node] if node and podview.is_requester(pod) else []


def _requesters_by_isc(pod: RawObj) -> Iterable[str]:
    return [podview.isc_name(pod)] if podview.wants_launcher(pod) and podview.isc_name(pod) else []


def _launchers_by_hash(pod: RawObj) -> Iterable[str]:
    found = launcherview.config_hash(pod) if podview.is_launcher(pod) else ""
    return [found] if found else []


def _launchers_by_node(pod: RawObj) -> Iterable[str]:
    node = podview.runner_node(pod) if podview.is_launcher(pod) else ""
    return [node] if node else []


POD_INDEXERS: Mapping[str, Callable[[RawObj], Iterable[str]]] = {
    BY_UID: _by_uid,
    BY_BOUND_REQUESTER: _by_bound_requester,
    BY_NOMINAL: _by_nominal,
    BY_GPU: _by_gpu,
    REQUESTERS_BY_NODE: _requesters_by_node,
    REQUESTERS_BY_ISC: _requesters_by_isc,
    LAUNCHERS_BY_HASH: _launchers_by_hash,
    LAUNCHERS_BY_NODE: _launchers_by_node,
}


_IDENTITY = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp", "deletionTimestamp")
# Of a runner's spec, what podview reads: runner_node, gpu_indices, server_port.
_RUNNER_SPEC = ("nodeName", "nodeSelector")
_RUNNER_CONTAINER = ("name", "env", "readinessProbe")


def slim_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """What the controller keeps of a Pod (see the module docstring); changes ``pod`` in place."""
    meta = pod.get("metadata")
    if not isinstance(meta, dict):
        return pod
    if not (podview.is_requester(pod) or podview.is_provider(pod)):
        return {"metadata": {k: meta[k] for k in _IDENTITY if k in meta}}
    if "managedFields" in meta:
        used = podview.manager_time(pod)  # ours, else the creation time: the LRU clock either way
        ours = [{"manager": api.FIELD_MANAGER, "time": used}] if used != meta.get("creationTimestamp") else []
        if ours:
            meta["managedFields"] = ours
        else:
            del meta["managedFields"]
    if podview.is_provider(pod) and not podview.is_requester(pod) and isinstance(pod.get("spec"), dict):
        pod["spec"] = _runner_spec(pod["spec"])  # a new dict: callers may hand in a shallow copy
    return pod


def _runner_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """What is read of a runner's spec: where it runs, and its server's GPUs and port."""
    kept = {k: spec[k] for k in _RUNNER_SPEC if k in spec}
    kept["containers"] = [
        {k: c[k] for k in _RUNNER_CONTAINER if k in c}
        for c in spec.get("containers") or []
        if isinstance(c, dict) and c.get("name") == api.INFERENCE_SERVER_CONTAINER
    ]
    return kept


class RecentWrites:
    """What the controller's own Pod writes returned, until the informer catches up with them.

    The informer learns of a write a moment after the API server answered it; a reconcile in
    between (the next one of the same server, queued by the events of its own writes) would read
    the cached object from before the write, and write the same change again. As client-go's
    ``MutationCache`` does, a remembered object stands in for the cached one while its
    resourceVersion is newer (resourceVersions compare as integers, as etcd's are; any other
    form is never taken for newer). An entry goes once the cache has caught up, when the Pod's
    deletion is seen, or after ``ttl_s``.

    A runner we created or bound is also found by the requester it is bound to before the cache
    has it at all: the reconcile after a create must not create it again (client-go's
    "expectations", kept here as the object itself). And a Pod that a write found gone (404), or
    deleted (its last finalizer removed once its kubelet had finished: grace period 0), is no
    longer found, though the cache holds it until the deletion event arrives. A terminating Pod
    whose kubelet is still stopping it is not gone: a runner's GPUs are not free before.
    """

    def __init__(self, ttl_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._by_uid: dict[str, tuple[float, RawObj]] = {}
        self._bound: dict[str, str] = {}  # requester UID -> UID of the runner we last bound to it
        self._gone: dict[str, float] = {}  # UID -> when a write of ours found or made it gone
        self._purged = clock()

    def remember(self, written: RawObj) -> None:
        uid = podview.uid(written)
        if not uid:
            return
        now = self._clock()
        # A shallow copy will do: slim_pod only replaces metadata's managedFields.
        self._by_uid[uid] = (now, slim_pod({**written, "metadata": dict(podview.meta(written))}))
        bound = podview.bound_requester(written) if podview.is_provider(written) else None
        if bound is not None:
            self._bound[bound[0]] = uid
        meta = podview.meta(written)
        if (
            podview.is_deleting(written)
            and meta.get("deletionGracePeriodSeconds") == 0
            and not podview.finalizers(written)
        ):
            # Its kubelet was done, and we removed the last finalizer: the API server deleted it
            # in answering (and answered with the old resourceVersion, so it cannot look newer).
            self.gone(uid)
        if now - self._purged > self._ttl_s:
            self._purged = now
            self._by_uid = {k: v for k, v in self._by_uid.items() if now - v[0] <= self._ttl_s}
            self._bound = {k: v for k, v in self._bound.items() if v in self._by_uid}
            self._gone = {k: t for k, t in self._gone.items() if now - t <= self._ttl_s}

    def gone(self, uid: str) -> None:
        """A write found the Pod gone, or deleted it: it is not to be found any more."""
        if uid:
            self._gone[uid] = self._clock()

    def is_gone(self, uid: str) -> bool:
        at = self._gone.get(uid)
        return at is not None and self._clock() - at <= self._ttl_s

    def forget(self, uid: str) -> None:
        """The informer saw the Pod's deletion: nothing we know of it matters any more."""
        self._by_uid.pop(uid, None)
        self._gone.pop(uid, None)

    def bound_runner_not_cached(self, requester_uid: str, cached: Callable[[str], bool]) -> RawObj | None:
        """The runner we created or bound for ``requester_uid``, while the cache has no such Pod."""
        runner_uid = self._bound.get(requester_uid)
        if runner_uid is None:
            return None
        entry = self._by_uid.get(runner_uid)
        if entry is None or self._clock() - entry[0] > self._ttl_s or cached(runner_uid):
            del self._bound[requester_uid]  # the cache has it (or it went, or it is too old)
            return None
        runner = entry[1]
        bound = podview.bound_requester(runner)
        return runner if bound is not None and bound[0] == requester_uid else None

    def fresh(self, cached: RawObj) -> RawObj:
        """The newer of ``cached`` and what our last write of that Pod returned."""
        uid = podview.uid(cached)
        entry = self._by_uid.get(uid)
        if entry is None:
            return cached
        at, written = entry
        if self._clock() - at <= self._ttl_s and _newer(written, cached):
            return written
        del self._by_uid[uid]  # the cache has caught up (or the entry is too old to trust)
        return cached

    def __len__(self) -> int:
        return len(self._by_uid) + len(self._gone)


def _newer(a: RawObj, b: RawObj) -> bool:
    ra, rb = str(podview.meta(a).get("resourceVersion", "")), str(podview.meta(b).get("resourceVersion", ""))
    return ra.isdigit() and rb.isdigit() and int(ra) > int(rb)


class Lookup(Protocol):
    def get(self, key: str) -> RawObj | None: ...


class CacheView:
    """Implements :class:`dpctl.dualpods.reconcile.Cache` over the informer stores."""

    def __init__(
        self,
        namespace: str,
        pods: Store,
        nodes: Lookup,
        configmaps: Store,
        inference_server_configs: Lookup | None = None,
        launcher_configs: Lookup | None = None,
    ) -> None:
        self.namespace = namespace
        self.pods = pods
        self.nodes = nodes
        self.configmaps = configmaps
        # None: the launcher path is off (its CRDs are not served, or not readable).
        self.iscs = inference_server_configs
        self.lcs = launcher_configs
        self.recent = RecentWrites()
        self._parsed: tuple[str, gpumap.GpuMap | None] | None = None

    def _indexed(self, index: str, value: str) -> list[RawObj]:
        """The Pods filed under ``value``, each as fresh as our writes; one that our write moved
        out of the index is left out (one moved in shows up with the informer)."""
        found = [self.recent.fresh(pod) for pod in self.pods.by_index(index, value)]
        if not len(self.recent):
            return found
        return [
            pod
            for pod in found
            if value in POD_INDEXERS[index](pod) and not self.recent.is_gone(podview.uid(pod))
        ]

    def pod_by_uid(self, uid: str) -> RawObj | None:
        found = self._indexed(BY_UID, uid)
        return found[0] if found else None

    def pod(self, name: str) -> RawObj | None:
        pod = self.pods.get(f"{self.namespace}/{name}")
        if pod is None or self.recent.is_gone(podview.uid(pod)):
            return None
        return self.recent.fresh(pod)

    def providers_bound_to(self, requester_uid: str) -> Sequence[RawObj]:
        found = self._indexed(BY_BOUND_REQUESTER, requester_uid)
        if not found:
            pending = self.recent.bound_runner_not_cached(requester_uid, self._cached)
            if pending is not None:
                found = [pending]
        return found

    def _cached(self, uid: str) -> bool:
        return bool(self.pods.by_index(BY_UID, uid))

    def runners_with_nominal(self, nominal: str) -> Sequence[RawObj]:
        return self._indexed(BY_NOMINAL, nominal)

    def runners_on_gpu(self, node: str, index: int) -> Sequence[RawObj]:
        return self._indexed(BY_GPU, gpu_key(node, index))

    def requesters_on_node(self, node: str) -> Sequence[RawObj]:
        return self._indexed(REQUESTERS_BY_NODE, node)

    def requesters_of_isc(self, isc: str) -> Sequence[RawObj]:
        return self._indexed(REQUESTERS_BY_ISC, isc)

    def launchers_with_config_hash(self, config_hash: str) -> Sequence[RawObj]:
        return self._indexed(LAUNCHERS_BY_HASH, config_hash)

    def launchers_on_node(self, node: str) -> Sequence[RawObj]:
        return self._indexed(LAUNCHERS_BY_NODE, node)

    def launchers(self) -> Sequence[RawObj]:
        return [
            pod for node in self.pods.index_values(LAUNCHERS_BY_NODE) for pod in self.launchers_on_node(node)
        ]

    def launcher_path_on(self) -> bool:
        return self.iscs is not None and self.lcs is not None

    def inference_server_config(self, name: str) -> RawObj | None:
        return self.iscs.get(f"{self.namespace}/{name}") if self.iscs is not None else None

    def launcher_config(self, name: str) -> RawObj | None:
        return self.lcs.get(f"{self.namespace}/{name}") if self.lcs is not None else None

    def node(self, name: str) -> RawObj | None:
        return self.nodes.get(name)

    def gpu_map(self) -> gpumap.GpuMap | None:
        cm = self.configmaps.get(f"{self.namespace}/{api.GPU_MAP_NAME}")
        version = str(podview.meta(cm).get("resourceVersion", "")) if cm is not None else ""
        if self._parsed is None or self._parsed[0] != version:
            self._parsed = (version, gpumap.parse(cm))
        return self._parsed[1]
