"""RecentWrites: our own writes stand in for a lagging cache, until it catches up; and the
controller's GC handling around the first sync."""

from __future__ import annotations

import copy
import gc
from typing import Any

from dpctl import api
from dpctl.dualpods import controller as controller_module
from dpctl.dualpods.cache import POD_INDEXERS, CacheView, RecentWrites
from dpctl.dualpods.controller import Controller
from dpctl.dualpods.keys import ServerKey
from dpctl.dualpods.reconcile import Settings
from dpctl.informer import Store
from helpers import ManualClock

from .fakes import NS, Recorder, World, gpu_map_cm, node, requester, runner


def at(pod: dict[str, Any], rv: str) -> dict[str, Any]:
    pod = copy.deepcopy(pod)
    pod["metadata"]["resourceVersion"] = rv
    return pod


def test_a_newer_write_stands_in_until_the_cache_catches_up() -> None:
    recent = RecentWrites(clock=ManualClock())
    written = at(requester(), "12")
    written["metadata"]["finalizers"] = [api.REQUESTER_FINALIZER]
    recent.remember(written)
    stale = at(requester(), "11")
    assert recent.fresh(stale)["metadata"]["finalizers"] == [api.REQUESTER_FINALIZER]
    caught_up = at(requester(), "12")
    assert recent.fresh(caught_up) is caught_up
    assert len(recent) == 0  # dropped once the cache had it
    assert recent.fresh(stale) is stale


def test_entries_expire_and_odd_resource_versions_are_never_newer() -> None:
    clock = ManualClock()
    recent = RecentWrites(ttl_s=10, clock=clock)
    recent.remember(at(requester(), "12"))
    clock.now = 11
    stale = at(requester(), "11")
    assert recent.fresh(stale) is stale and len(recent) == 0
    recent.remember(at(requester(), "abc"))
    assert recent.fresh(stale) is stale


def test_a_write_that_moved_a_runner_out_of_an_index_hides_it_there() -> None:
    pods = Store(POD_INDEXERS)
    pods.upsert(at(runner(), "20"))
    view = CacheView(NS, pods, Store(), Store())
    assert [p["metadata"]["resourceVersion"] for p in view.providers_bound_to("uid-a")] == ["20"]
    view.recent.remember(at(runner(bound_to=None), "21"))  # our unbind, not yet in the cache
    assert view.providers_bound_to("uid-a") == []
    fresh = view.pod_by_uid("uid-r")
    assert fresh is not None and fresh["metadata"]["resourceVersion"] == "21"


async def test_a_reconcile_right_after_another_does_not_repeat_its_writes() -> None:
    recorder = Recorder(World())
    c = Controller(object(), NS, recorder.ports, Settings())  # type: ignore[arg-type]
    req = at(requester(), "10")
    run = at(runner(), "20")
    c.pods.store.upsert(req)
    c.pods.store.upsert(run)
    assert c.nodes is not None
    c.nodes.store.upsert(node())
    c.configmaps.store.upsert(gpu_map_cm({"node-1": 2}))
    # The API server's answer to the requester patch: newer than the cache, which lags.
    answered = at(req, "15")
    answered["metadata"]["finalizers"] = [api.REQUESTER_FINALIZER]
    answered["metadata"]["labels"][api.DUAL_LABEL] = "req-a-server"
    answered["metadata"]["annotations"][api.ORIGINAL.status] = api.RequesterStatus(Errors=()).to_annotation()
    recorder.world.pods["req-a"] = answered  # what Recorder.patch_pod returns
    await c.reconciler.reconcile(ServerKey("uid-a"))
    first = [a for a in recorder.actions if a[0] == "patch" and a[1] == "req-a"]
    assert len(first) == 1
    await c.reconciler.reconcile(ServerKey("uid-a"))  # the cache still holds resourceVersion 10
    again = [a for a in recorder.actions if a[0] == "patch" and a[1] == "req-a"]
    assert again == first


def test_the_collector_is_off_during_the_first_sync_and_frozen_after() -> None:
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    try:
        with controller_module._collector_off_during_initial_sync():
            assert not gc.isenabled()
            kept = [{"pod": i} for i in range(1000)]
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen + len(kept)
    finally:
        gc.unfreeze()


def test_a_runner_we_created_is_bound_before_the_cache_has_it() -> None:
    view = CacheView(NS, Store(POD_INDEXERS), Store(), Store())
    created = at(runner(uid="uid-new"), "30")
    view.recent.remember(created)
    assert [p["metadata"]["uid"] for p in view.providers_bound_to("uid-a")] == ["uid-new"]
    view.pods.upsert(at(runner(uid="uid-new"), "31"))  # the informer catches up
    assert [p["metadata"]["resourceVersion"] for p in view.providers_bound_to("uid-a")] == ["31"]
    view.pods.delete(f"{NS}/req-a-server")
    view.recent.forget("uid-new")  # its deletion was seen
    assert view.providers_bound_to("uid-a") == []


async def test_a_reconcile_before_the_created_runner_is_cached_does_not_create_again() -> None:
    recorder = Recorder(World(), gpus={"127.64.0.2": ["GPU-node-1-0"]})
    c = Controller(object(), NS, recorder.ports, Settings())  # type: ignore[arg-type]
    c.pods.store.upsert(requester())
    assert c.nodes is not None
    c.nodes.store.upsert(node())
    c.configmaps.store.upsert(gpu_map_cm({"node-1": 2}))
    await c.reconciler.reconcile(ServerKey("uid-a"))
    await c.reconciler.reconcile(ServerKey("uid-a"))  # e.g. a kubelet event from before the create
    assert [a[0] for a in recorder.actions].count("create") == 1


def test_a_pod_a_write_found_gone_is_not_found_until_its_deletion_is_seen() -> None:
    view = CacheView(NS, Store(POD_INDEXERS), Store(), Store())
    view.pods.upsert(at(requester(deleting=True, finalizers=[api.REQUESTER_FINALIZER]), "40"))
    view.recent.gone("uid-a")  # a finalizer patch answered 404
    assert view.pod_by_uid("uid-a") is None and view.pod("req-a") is None
    view.pods.delete(f"{NS}/req-a")
    view.recent.forget("uid-a")
    assert len(view.recent) == 0


async def test_a_404_on_a_uid_preconditioned_patch_marks_the_pod_gone() -> None:
    from dpctl.kube import ApiError

    recorder = Recorder(World(), fail={"patch": ApiError(404, "NotFound", "gone", "PATCH", "/pods/req-a")})
    c = Controller(object(), NS, recorder.ports, Settings())  # type: ignore[arg-type]
    c.pods.store.upsert(requester(deleting=True, finalizers=[api.REQUESTER_FINALIZER]))
    assert c.nodes is not None
    c.nodes.store.upsert(node())
    await c.reconciler.reconcile(ServerKey("uid-a"))  # releases: the finalizer patch finds it gone
    assert c.cache.pod_by_uid("uid-a") is None
    await c.reconciler.reconcile(ServerKey("uid-a"))
    assert [a[0] for a in recorder.actions].count("patch") == 1


def test_removing_the_last_finalizer_after_the_kubelet_finished_deletes_the_pod() -> None:
    """The API server answers that patch with the old resourceVersion and deletes the Pod."""
    view = CacheView(NS, Store(POD_INDEXERS), Store(), Store())
    cached = at(requester(deleting=True, finalizers=[api.REQUESTER_FINALIZER]), "270")
    cached["metadata"]["deletionGracePeriodSeconds"] = 0
    view.pods.upsert(cached)
    answer = at(requester(deleting=True), "270")
    answer["metadata"]["deletionGracePeriodSeconds"] = 0
    view.recent.remember(answer)
    assert view.pod_by_uid("uid-a") is None


def test_a_pod_its_kubelet_still_stops_is_not_taken_for_gone() -> None:
    view = CacheView(NS, Store(POD_INDEXERS), Store(), Store())
    stopping = at(runner(deleting=True), "50")
    stopping["metadata"]["deletionGracePeriodSeconds"] = 30
    view.pods.upsert(stopping)
    answer = at(runner(deleting=True, bound_to=None), "51")
    answer["metadata"]["deletionGracePeriodSeconds"] = 30
    view.recent.remember(answer)
    assert [p["metadata"]["resourceVersion"] for p in view.runners_on_gpu("node-1", 0)] == ["51"]
