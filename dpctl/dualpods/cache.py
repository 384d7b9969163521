"""The controller's view of its informers: indexes over Pods, plus Nodes and the ``gpu-map``.

Indexes are declared here (``INDEXERS``) and maintained by the informer store on every event,
so each lookup the reconciler makes is a dictionary hit, not a scan of the namespace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from dpctl import api
from dpctl.dualpods import gpumap, podview
from dpctl.dualpods.podview import RawObj
from dpctl.informer import Store

BY_UID = "uid"
BY_BOUND_REQUESTER = "bound-requester"
BY_NOMINAL = "nominal"
BY_GPU = "gpu"
REQUESTERS_BY_NODE = "requesters-by-node"


def _by_uid(pod: RawObj) -> Iterable[str]:
    return [podview.uid(pod)]


def _by_bound_requester(pod: RawObj) -> Iterable[str]:
    bound = podview.bound_requester(pod) if podview.is_runner(pod) else None
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


POD_INDEXERS: Mapping[str, Callable[[RawObj], Iterable[str]]] = {
    BY_UID: _by_uid,
    BY_BOUND_REQUESTER: _by_bound_requester,
    BY_NOMINAL: _by_nominal,
    BY_GPU: _by_gpu,
    REQUESTERS_BY_NODE: _requesters_by_node,
}


class Lookup(Protocol):
    def get(self, key: str) -> RawObj | None: ...


class CacheView:
    """Implements :class:`dpctl.dualpods.reconcile.Cache` over the informer stores."""

    def __init__(self, namespace: str, pods: Store, nodes: Lookup, configmaps: Store) -> None:
        self.namespace = namespace
        self.pods = pods
        self.nodes = nodes
        self.configmaps = configmaps
        self._parsed: tuple[str, gpumap.GpuMap | None] | None = None

    def pod_by_uid(self, uid: str) -> RawObj | None:
        found = self.pods.by_index(BY_UID, uid)
        return found[0] if found else None

    def pod(self, name: str) -> RawObj | None:
        return self.pods.get(f"{self.namespace}/{name}")

    def runners_bound_to(self, requester_uid: str) -> Sequence[RawObj]:
        return self.pods.by_index(BY_BOUND_REQUESTER, requester_uid)

    def runners_with_nominal(self, nominal: str) -> Sequence[RawObj]:
        return self.pods.by_index(BY_NOMINAL, nominal)

    def runners_on_gpu(self, node: str, index: int) -> Sequence[RawObj]:
        return self.pods.by_index(BY_GPU, gpu_key(node, index))

    def requesters_on_node(self, node: str) -> Sequence[RawObj]:
        return self.pods.by_index(REQUESTERS_BY_NODE, node)

    def node(self, name: str) -> RawObj | None:
        return self.nodes.get(name)

    def gpu_map(self) -> gpumap.GpuMap | None:
        cm = self.configmaps.get(f"{self.namespace}/{api.GPU_MAP_NAME}")
        version = str(podview.meta(cm).get("resourceVersion", "")) if cm is not None else ""
        if self._parsed is None or self._parsed[0] != version:
            self._parsed = (version, gpumap.parse(cm))
        return self._parsed[1]
