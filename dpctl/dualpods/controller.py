"""Wiring of the dual-pods controller: informers → event handlers → workqueue → reconciler.

Handlers only translate an object change into the keys it may concern and enqueue them, and
note when an event arrived that makes a step possible (:mod:`dpctl.dualpods.latency`); all
decisions happen in :mod:`dpctl.dualpods.reconcile`, one inference server at a time (the
workqueue never hands the same key to two workers). Workers start only after every cache has
synced, so the first decisions see the whole namespace — a controller restart rebuilds all state
from the API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
from collections.abc import Iterable, Iterator
from typing import Any

from dpctl import api, log
from dpctl.dualpods import patches, podview
from dpctl.dualpods.cache import POD_INDEXERS, CacheView, RecentWrites, slim_pod
from dpctl.dualpods.keys import IscKey, Key, RunnerKey, ServerKey
from dpctl.dualpods.latency import Stamps
from dpctl.dualpods.podview import RawObj
from dpctl.dualpods.ports import PodWrites, Ports
from dpctl.dualpods.reconcile import Reconciler, Settings
from dpctl.fma.v1alpha1 import API_VERSION, INFERENCE_SERVER_CONFIG, LAUNCHER_CONFIG, Kind
from dpctl.informer import Informer, InformerMetrics, kube_lister
from dpctl.kube import CONFIGMAPS, NODES, PODS, ApiError, Kube, Resource
from dpctl.workqueue import QueueMetrics, RateLimitingQueue, default_controller_rate_limiter, run_workers
from dpctl.workqueue.outcome import Outcome

SYNC_WARN_AFTER_S = 30.0


def resource(kind: Kind) -> Resource:
    """Where the API serves one of the launcher path's kinds (all namespaced)."""
    return Resource(API_VERSION, kind.plural, namespaced=True)


ISCS = resource(INFERENCE_SERVER_CONFIG)
LCS = resource(LAUNCHER_CONFIG)


class Controller:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        ports: Ports,
        settings: Settings,
        num_workers: int = 32,
        watch_nodes: bool = True,
        queue_metrics: QueueMetrics | None = None,
        informer_metrics: InformerMetrics | None = None,
        launcher_path: bool = True,
    ) -> None:
        self.namespace = namespace
        self.num_workers = num_workers
        self.log = log.get("controller", namespace=namespace)
        self.pods = Informer(
            "pods",
            kube_lister(kube, PODS, namespace, transform=slim_pod),  # page by page: never all at once
            indexers=POD_INDEXERS,
            metrics=informer_metrics,
            transform=slim_pod,
        )
        self.configmaps = Informer(
            "gpu-map",
            kube_lister(kube, CONFIGMAPS, namespace, field_selector=f"metadata.name={api.GPU_MAP_NAME}"),
            metrics=informer_metrics,
        )
        self.nodes: Informer | None = (
            Informer("nodes", kube_lister(kube, NODES), metrics=informer_metrics) if watch_nodes else None
        )
        # The launcher path's objects; None when their CRDs are not served or readable.
        self.iscs: Informer | None = None
        self.lcs: Informer | None = None
        if launcher_path:
            self.iscs = Informer(
                "inferenceserverconfigs", kube_lister(kube, ISCS, namespace), metrics=informer_metrics
            )
            self.lcs = Informer(
                "launcherconfigs", kube_lister(kube, LCS, namespace), metrics=informer_metrics
            )
        self.cache = CacheView(
            namespace,
            self.pods.store,
            self.nodes.store if self.nodes is not None else _AnyNode(),
            self.configmaps.store,
            self.iscs.store if self.iscs is not None else None,
            self.lcs.store if self.lcs is not None else None,
        )
        self.queue: RateLimitingQueue[Key] = RateLimitingQueue(
            "dualpods", default_controller_rate_limiter(), metrics=queue_metrics
        )
        self.stamps = Stamps()
        remembering = dataclasses.replace(ports, pods=_Remembering(ports.pods, self.cache.recent))
        self.reconciler = Reconciler(self.cache, remembering, settings, self.stamps)
        self.pods.add_handlers(
            on_add=self._pod_changed, on_update=self._pod_updated, on_delete=self._pod_deleted
        )
        self.configmaps.add_handlers(
            on_add=lambda _: self._gpu_map_changed(),
            on_update=lambda _o, _n: self._gpu_map_changed(),
            on_delete=lambda _: self._gpu_map_changed(),
        )
        if self.nodes is not None:
            self.nodes.add_handlers(
                on_add=self._node_changed, on_update=self._node_updated, on_delete=self._node_changed
            )
        if self.iscs is not None:
            self.iscs.add_handlers(
                on_add=self._isc_changed, on_update=self._isc_updated, on_delete=self._isc_deleted
            )
        if self.lcs is not None:
            self.lcs.add_handlers(
                on_add=self._lc_changed,
                on_update=lambda _o, new: self._lc_changed(new),
                on_delete=self._lc_changed,
            )
        self.synced = asyncio.Event()
        self._reconciled = False

    @property
    def informers(self) -> list[Informer]:
        return [i for i in (self.pods, self.configmaps, self.nodes, self.iscs, self.lcs) if i is not None]

    async def run_informers(self) -> None:
        """Fill and follow the caches until cancelled."""
        async with asyncio.TaskGroup() as group:
            for informer in self.informers:
                group.create_task(informer.run(), name=f"informer-{informer.name}")

    async def run_workers(self) -> None:
        """Once every cache has synced, reconcile until the queue is shut down and drained.

        Start it right after :meth:`run_informers` (same tick): the collector then stays off
        while the first lists are decoded (see :func:`_collector_off_during_initial_sync`).
        """
        with _collector_off_during_initial_sync():
            await self._wait_synced()
        self.synced.set()
        self.log.info(
            "Caches synced; starting workers", workers=self.num_workers, pods=len(self.pods.store.keys())
        )
        await run_workers(self.queue, self._process, self.num_workers, self.log, self.reconciler.describe)

    async def run(self) -> None:
        """Informers and workers together, until cancelled (tests and single-process use)."""
        async with asyncio.TaskGroup() as group:
            informers = group.create_task(self.run_informers())
            try:
                await self.run_workers()
            finally:
                informers.cancel()

    async def _wait_synced(self) -> None:
        waits = asyncio.gather(*(i.wait_synced() for i in self.informers))
        try:
            await asyncio.wait_for(asyncio.shield(waits), SYNC_WARN_AFTER_S)
        except TimeoutError:
            pending = [i.name for i in self.informers if not i.has_synced()]
            self.log.warning(
                "Caches have not synced yet; check the controller's RBAC and the API server", pending=pending
            )
            await waits

    async def _process(self, key: Key) -> Outcome:
        outcome = await self.reconciler.reconcile(key)
        if not self._reconciled:
            self._reconciled = True
            self.log.info("First reconcile done", pods=len(self.pods.store))
        return outcome

    # ---- event handlers: translate a change into keys; never decide anything here

    def _enqueue(self, keys: Iterable[Key]) -> None:
        for key in keys:
            self.queue.add(key)

    def _pod_changed(self, pod: RawObj) -> None:
        self._stamp(None, pod)
        self._enqueue(_keys_of(pod))
        if podview.is_runner(pod):
            self._gpus_may_be_free(pod)
        elif podview.is_launcher(pod) and podview.bound_requester(pod) is None:
            self._launcher_may_serve(pod)

    def _pod_deleted(self, pod: RawObj) -> None:
        self.cache.recent.forget(podview.uid(pod))
        self._pod_changed(pod)

    def _pod_updated(self, old: RawObj, new: RawObj) -> None:
        self._stamp(old, new)
        self._enqueue(_keys_of(new))
        old_bound = podview.bound_requester(old) if podview.is_provider(old) else None
        new_bound = podview.bound_requester(new) if podview.is_provider(new) else None
        if old_bound is not None and old_bound != new_bound:
            self.queue.add(ServerKey(old_bound[0]))
        if podview.is_runner(new) and (
            (old_bound and not new_bound) or (podview.is_deleting(new) and not podview.is_deleting(old))
        ):
            self._gpus_may_be_free(new)
        if podview.is_launcher(new) and (new_bound is None or podview.is_deleting(new)):
            # R21, R23: an unbound launcher changed (Ready, its instances, going), or one let go
            # of a server: the Node's waiting requesters may be served now.
            self._launcher_may_serve(new)

    def _stamp(self, old: RawObj | None, new: RawObj) -> None:
        """Note the arrival of what enables a step: a requester's container now running and not
        yet served (create or wake), a bound runner now Ready (relay)."""
        if podview.is_deleting(new):
            return
        if podview.is_requester(new):
            started = podview.container_running(new) and not (old and podview.container_running(old))
            if started and not self.cache.providers_bound_to(podview.uid(new)):
                self.stamps.mark("actuate", podview.uid(new))
        elif podview.is_runner(new):
            bound = podview.bound_requester(new)
            turned_ready = podview.pod_ready(new) and not (old and podview.pod_ready(old))
            if bound is not None and turned_ready:
                self.stamps.mark("relay", bound[0])

    def _gpus_may_be_free(self, runner: RawObj) -> None:
        """A runner left its GPUs: requesters waiting on that Node may go ahead now."""
        for requester in self.cache.requesters_on_node(podview.runner_node(runner)):
            if not self.cache.providers_bound_to(podview.uid(requester)):
                self.queue.add(ServerKey(podview.uid(requester)))

    def _launcher_may_serve(self, launcher: RawObj) -> None:
        for requester in self.cache.requesters_on_node(podview.runner_node(launcher)):
            if podview.wants_launcher(requester) and not self.cache.providers_bound_to(
                podview.uid(requester)
            ):
                self.queue.add(ServerKey(podview.uid(requester)))

    def _isc_changed(self, isc: RawObj) -> None:
        """R7: the requesters that name it (the unbound ones wait on it; bound ones ignore it)."""
        for requester in self.cache.requesters_of_isc(podview.name(isc)):
            self.queue.add(ServerKey(podview.uid(requester)))

    def _isc_updated(self, old: RawObj, new: RawObj) -> None:
        self._isc_changed(new)
        if old.get("spec") != new.get("spec"):
            self.queue.add(IscKey(podview.name(new)))  # R22: its older instances are obsolete

    def _isc_deleted(self, isc: RawObj) -> None:
        self._isc_changed(isc)
        self.queue.add(IscKey(podview.name(isc)))  # R22 [D]: its sleeping instances go too

    def _lc_changed(self, lc: RawObj) -> None:
        """R10 [D]: the requesters whose ISC names this LauncherConfig (upstream misses these)."""
        if self.iscs is None:
            return
        for isc in self.iscs.store.list():
            spec = isc.get("spec")
            if isinstance(spec, dict) and spec.get("launcherConfigName") == podview.name(lc):
                self._isc_changed(isc)

    def _gpu_map_changed(self) -> None:
        for pod in self.pods.store.list():
            if podview.is_requester(pod) and not self.cache.providers_bound_to(podview.uid(pod)):
                self.queue.add(ServerKey(podview.uid(pod)))

    def _node_changed(self, node: RawObj) -> None:
        for requester in self.cache.requesters_on_node(podview.name(node)):
            self.queue.add(ServerKey(podview.uid(requester)))

    def _node_updated(self, old: RawObj, new: RawObj) -> None:
        if podview.node_unschedulable(old) != podview.node_unschedulable(new) or (
            podview.is_deleting(new) != podview.is_deleting(old)
        ):
            self._node_changed(new)


@contextlib.contextmanager
def _collector_off_during_initial_sync() -> Iterator[None]:
    """No cyclic GC while the caches fill; afterwards, what they hold is out of its sight.

    Decoding the first lists allocates millions of dicts and lists, none of them in a cycle
    (reference counting frees them), yet each allocation burst triggers collections that walk
    the whole growing heap: over half the CPU of a 10,000-Pod sync. Once synced, ``gc.freeze``
    moves everything alive into the permanent generation, so later collections walk only what
    is new, not every cached Pod. Later changes replace cached objects; reference counting still
    frees the frozen ones they replace.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def _keys_of(pod: RawObj) -> list[Key]:
    keys: list[Key] = []
    if podview.is_requester(pod):
        keys.append(ServerKey(podview.uid(pod)))
    if podview.is_provider(pod):
        bound = podview.bound_requester(pod)
        keys.append(ServerKey(bound[0]) if bound else RunnerKey(podview.uid(pod)))
    return keys


class _Remembering:
    """Pod writes with every Pod the API server returns remembered
    (:class:`~dpctl.dualpods.cache.RecentWrites`), so the next reconcile reads past the lag."""

    def __init__(self, pods: PodWrites, recent: RecentWrites) -> None:
        self._pods = pods
        self._recent = recent

    async def create_pod(self, pod: RawObj) -> dict[str, Any]:
        created = await self._pods.create_pod(pod)
        self._recent.remember(created)
        return created

    async def patch_pod(self, name: str, patch: RawObj | list[RawObj]) -> dict[str, Any]:
        try:
            patched = await self._pods.patch_pod(name, patch)
        except ApiError as err:
            if err.not_found:  # a UID-preconditioned patch names the Pod it found gone
                self._recent.gone(patches.target_uid(patch))
            raise
        self._recent.remember(patched)
        return patched

    async def delete_pod(self, name: str, uid: str, resource_version: str | None = None) -> None:
        await self._pods.delete_pod(name, uid, resource_version)

    async def get_pod(self, name: str) -> dict[str, Any] | None:
        return await self._pods.get_pod(name)


class _AnyNode:
    """Stands in for the Node cache when the controller may not read Nodes (no ClusterRole).

    Every Node then looks present and schedulable: cordons and departing Nodes go unnoticed,
    which the controller says once at start.
    """

    def get(self, key: str) -> dict[str, Any] | None:
        return {"metadata": {"name": key}, "spec": {}}
