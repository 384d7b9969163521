"""The informer against a scripted list/watch: sync, handler order, resourceVersion tracking,
410 relists with tombstones, rewatch after a normal end, backoff after failures."""

from __future__ import annotations

import asyncio
import builtins
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import pytest

from dpctl.informer import Backoff, Informer
from dpctl.kube import ApiError

RawObj = dict[str, Any]


def pod(name: str, rv: str, node: str = "") -> RawObj:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}, "spec": {"nodeName": node}}


def event(kind: str, obj: RawObj) -> RawObj:
    return {"type": kind, "object": obj}


def bookmark(rv: str) -> RawObj:
    return {"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": rv}}}


GONE = ApiError(410, "Expired", "too old resource version", "WATCH", "/api/v1/namespaces/ns/pods")


class ScriptedLister:
    """Plays back list results and watch streams; once the script runs out, calls block.

    A list step is ``(items, rv)`` or an exception. A watch step is a list of events, where an
    exception entry is raised at that point; the stream ends after the last entry.
    """

    def __init__(self) -> None:
        self.lists: deque[tuple[list[RawObj], str] | Exception] = deque()
        self.watches: deque[list[RawObj | Exception]] = deque()
        self.calls: list[tuple[str, str, int]] = []  # ("list", "", 0) or ("watch", rv, timeout)
        self.exhausted = asyncio.Event()
        self.closed_streams = 0

    async def list(self) -> tuple[list[RawObj], str]:
        self.calls.append(("list", "", 0))
        if not self.lists:
            return await self._block()
        step = self.lists.popleft()
        if isinstance(step, Exception):
            raise step
        return step

    async def watch(self, resource_version: str, timeout_seconds: int) -> AsyncIterator[RawObj]:
        self.calls.append(("watch", resource_version, timeout_seconds))
        try:
            if not self.watches:
                await self._block()
            for entry in self.watches.popleft():
                if isinstance(entry, Exception):
                    raise entry
                yield entry
        finally:
            self.closed_streams += 1

    async def _block(self) -> NoReturn:
        self.exhausted.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    def call_kinds(self) -> builtins.list[str]:
        return [kind for kind, _, _ in self.calls]

    def watch_rvs(self) -> builtins.list[str]:
        return [rv for kind, rv, _ in self.calls if kind == "watch"]


class Recorder:
    """Handlers that record what they saw, and what the store held at that moment."""

    def __init__(self, informer: Informer) -> None:
        self.informer = informer
        self.seen: list[tuple[str, ...]] = []
        informer.add_handlers(self.on_add, self.on_update, self.on_delete)

    def _cached_rv(self, obj: RawObj) -> str | None:
        cached = self.informer.store.get(f"ns/{obj['metadata']['name']}")
        return None if cached is None else cached["metadata"]["resourceVersion"]

    def on_add(self, obj: RawObj) -> None:
        self.seen.append(("add", obj["metadata"]["name"], obj["metadata"]["resourceVersion"]))
        assert self._cached_rv(obj) == obj["metadata"]["resourceVersion"], "store updated first"

    def on_update(self, old: RawObj, new: RawObj) -> None:
        meta_old, meta_new = old["metadata"], new["metadata"]
        self.seen.append(
            ("update", meta_new["name"], meta_old["resourceVersion"], meta_new["resourceVersion"])
        )
        assert self._cached_rv(new) == meta_new["resourceVersion"], "store updated first"

    def on_delete(self, obj: RawObj) -> None:
        self.seen.append(("delete", obj["metadata"]["name"], obj["metadata"]["resourceVersion"]))
        assert self._cached_rv(obj) is None, "store updated first"


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@asynccontextmanager
async def running(informer: Informer) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(informer.run())
    try:
        yield task
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.fixture
def lister() -> ScriptedLister:
    return ScriptedLister()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def informer(lister: ScriptedLister, sleeps: Sleeps) -> Informer:
    return Informer(
        "pods", lister, {"node": lambda o: [o["spec"]["nodeName"]]}, backoff=Backoff(sleep=sleeps)
    )


async def test_initial_list_syncs_then_watches_from_its_resource_version(
    informer: Informer, lister: ScriptedLister
) -> None:
    lister.lists.append(([pod("a", "5", "n1"), pod("b", "6", "n1")], "10"))
    rec = Recorder(informer)
    assert not informer.has_synced()
    async with running(informer):
        await asyncio.wait_for(informer.wait_synced(), 5)
        await lister.exhausted.wait()
    assert informer.has_synced()
    assert rec.seen == [("add", "a", "5"), ("add", "b", "6")]
    assert len(informer.store.by_index("node", "n1")) == 2
    assert lister.calls[0] == ("list", "", 0)
    kind, rv, timeout = lister.calls[1]
    assert (kind, rv) == ("watch", "10")
    assert 300 <= timeout <= 600, "server-side timeout jittered between 5 and 10 minutes"


async def test_watch_events_reach_handlers_in_order_after_the_store(
    informer: Informer, lister: ScriptedLister
) -> None:
    lister.lists.append(([], "10"))
    lister.watches.append(
        [
            event("ADDED", pod("a", "11")),
            event("MODIFIED", pod("a", "12")),
            event("ADDED", pod("b", "13")),
            event("DELETED", pod("a", "14")),
        ]
    )
    rec = Recorder(informer)
    async with running(informer):
        await lister.exhausted.wait()
    assert rec.seen == [
        ("add", "a", "11"),
        ("update", "a", "11", "12"),
        ("add", "b", "13"),
        ("delete", "a", "14"),
    ]
    assert informer.store.keys() == ["ns/b"]


async def test_next_watch_starts_from_the_last_bookmark(
    informer: Informer, lister: ScriptedLister, sleeps: Sleeps
) -> None:
    lister.lists.append(([], "10"))
    lister.watches.append([event("ADDED", pod("a", "11")), bookmark("50")])
    rec = Recorder(informer)
    async with running(informer):
        await lister.exhausted.wait()
    assert lister.watch_rvs() == ["10", "50"]
    assert lister.call_kinds().count("list") == 1, "a normal end rewatches without relisting"
    assert rec.seen == [("add", "a", "11")], "bookmarks reach no handler"
    assert sleeps.delays == []


async def test_stream_end_rewatches_from_the_last_event(
    informer: Informer, lister: ScriptedLister, sleeps: Sleeps
) -> None:
    lister.lists.append(([], "10"))
    lister.watches.append([event("ADDED", pod("a", "11"))])
    lister.watches.append([event("MODIFIED", pod("a", "12"))])
    async with running(informer):
        await lister.exhausted.wait()
    assert lister.call_kinds() == ["list", "watch", "watch", "watch"]
    assert lister.watch_rvs() == ["10", "11", "12"]
    assert sleeps.delays == []
    assert lister.closed_streams == 3, "both ended streams, and the open one on cancel"


async def test_gone_relists_at_once_and_delivers_tombstones(
    informer: Informer, lister: ScriptedLister, sleeps: Sleeps
) -> None:
    lister.lists.append(([pod("a", "1"), pod("b", "2"), pod("c", "3")], "10"))
    lister.watches.append([event("MODIFIED", pod("c", "11")), GONE])
    # While no watch was open: a changed, b deleted, d created; c unchanged since the event.
    lister.lists.append(([pod("a", "15"), pod("c", "11"), pod("d", "16")], "20"))
    rec = Recorder(informer)
    async with running(informer):
        await lister.exhausted.wait()
    assert rec.seen[3:] == [
        ("update", "c", "3", "11"),
        ("add", "d", "16"),
        ("update", "a", "1", "15"),
        ("delete", "b", "2"),
    ]
    assert sorted(informer.store.keys()) == ["ns/a", "ns/c", "ns/d"]
    assert lister.call_kinds() == ["list", "watch", "list", "watch"]
    assert lister.watch_rvs() == ["10", "20"]
    assert sleeps.delays == [], "410 after progress relists without waiting"


async def test_gone_right_after_a_list_backs_off_first(
    informer: Informer, lister: ScriptedLister, sleeps: Sleeps
) -> None:
    lister.lists.append(([], "10"))
    lister.watches.append([GONE])
    lister.lists.append(([], "20"))
    async with running(informer):
        await lister.exhausted.wait()
    assert lister.call_kinds() == ["list", "watch", "list", "watch"]
    assert len(sleeps.delays) == 1


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(ApiError(500, "InternalError", "etcd unavailable"), id="watch-error-event"),
        pytest.param(ConnectionResetError("peer reset"), id="broken-stream"),
        pytest.param(TimeoutError(), id="dead-peer"),
    ],
)
async def test_other_watch_failures_back_off_then_relist(
    informer: Informer, lister: ScriptedLister, sleeps: Sleeps, failure: Exception
) -> None:
    lister.lists.append(([pod("a", "1")], "10"))
    lister.watches.append([event("ADDED", pod("b", "11")), failure])
    lister.lists.append(([pod("b", "11")], "20"))
    rec = Recorder(informer)
    async with running(informer):
        await lister.exhausted.wait()
    assert lister.call_kinds() == ["list", "watch", "list", "watch"]
    assert len(sleeps.delays) == 1 and 0.64 <= sleeps.delays[0] <= 0.8
    assert rec.seen == [("add", "a", "1"), ("add", "b", "11"), ("delete", "a", "1")]


async def test_list_failure_backs_off_and_escalates(
    informer: Informer, lister: ScriptedLister, sleeps: Sleeps
) -> None:
    lister.lists.extend([ApiError(403, "Forbidden", "no RBAC"), ConnectionRefusedError(), ([], "10")])
    async with running(informer):
        await lister.exhausted.wait()
        assert informer.has_synced()
    assert lister.call_kinds() == ["list", "list", "list", "watch"]
    assert len(sleeps.delays) == 2 and sleeps.delays[1] > sleeps.delays[0]


async def test_not_synced_while_the_list_keeps_failing(informer: Informer, lister: ScriptedLister) -> None:
    lister.lists.append(ApiError(403, "Forbidden", "no RBAC"))
    async with running(informer):
        await lister.exhausted.wait()
        assert not informer.has_synced()


async def test_empty_watch_that_ends_at_once_backs_off_and_rewatches(
    informer: Informer, lister: ScriptedLister, sleeps: Sleeps
) -> None:
    lister.lists.append(([], "10"))
    lister.watches.append([])
    async with running(informer):
        await lister.exhausted.wait()
    assert lister.call_kinds() == ["list", "watch", "watch"]
    assert lister.watch_rvs() == ["10", "10"]
    assert len(sleeps.delays) == 1


async def test_handler_exception_is_logged_and_does_not_stop_anything(
    informer: Informer, lister: ScriptedLister, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(obj: RawObj) -> None:
        raise RuntimeError("handler bug")

    informer.add_handlers(on_add=explode)
    rec = Recorder(informer)
    lister.lists.append(([pod("a", "1")], "10"))
    lister.watches.append([event("ADDED", pod("b", "11"))])
    async with running(informer):
        await lister.exhausted.wait()
    assert rec.seen == [("add", "a", "1"), ("add", "b", "11")]
    failures = [r for r in caplog.records if "event handler" in r.getMessage()]
    assert len(failures) == 2 and all(r.exc_info for r in failures)
    assert lister.watch_rvs() == ["10", "11"]


async def test_handlers_added_after_sync_hear_the_cached_objects(
    informer: Informer, lister: ScriptedLister
) -> None:
    lister.lists.append(([pod("a", "1")], "10"))
    async with running(informer):
        await lister.exhausted.wait()
        late: list[str] = []
        informer.add_handlers(on_add=lambda obj: late.append(obj["metadata"]["name"]))
    assert late == ["a"]


async def test_cancelling_closes_the_open_watch_stream(informer: Informer, lister: ScriptedLister) -> None:
    lister.lists.append(([], "10"))
    async with running(informer):
        await lister.exhausted.wait()  # blocked inside the watch generator
    assert lister.closed_streams == 1


async def test_last_event_time_moves_with_events(lister: ScriptedLister, sleeps: Sleeps) -> None:
    now = iter(float(t) for t in range(100, 200))
    informer = Informer("pods", lister, backoff=Backoff(sleep=sleeps), clock=lambda: next(now))
    start = informer.last_event_monotonic
    lister.lists.append(([], "10"))
    lister.watches.append([bookmark("11")])
    async with running(informer):
        await lister.exhausted.wait()
    assert informer.last_event_monotonic > start


class RecordingMetrics:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def observe_list_duration(self, informer: str, seconds: float) -> None:
        self.calls.append(("list",))

    def observe_watch_duration(self, informer: str, seconds: float) -> None:
        self.calls.append(("watch",))

    def inc_watch_restarts(self, informer: str) -> None:
        self.calls.append(("restart",))

    def inc_relists_gone(self, informer: str) -> None:
        self.calls.append(("gone",))

    def inc_events(self, informer: str, event_type: str) -> None:
        self.calls.append(("event", event_type))


async def test_metrics(lister: ScriptedLister, sleeps: Sleeps) -> None:
    metrics = RecordingMetrics()
    informer = Informer("pods", lister, metrics=metrics, backoff=Backoff(sleep=sleeps))
    lister.lists.append(([], "10"))
    lister.watches.append([event("ADDED", pod("a", "11")), bookmark("12"), GONE])
    lister.lists.append(([], "20"))
    async with running(informer):
        await lister.exhausted.wait()
    assert metrics.calls == [
        ("list",),
        ("event", "ADDED"),
        ("event", "BOOKMARK"),
        ("watch",),
        ("restart",),
        ("gone",),
        ("list",),
        ("watch",),  # the open watch, cancelled
    ]


async def test_a_transform_sees_every_object_first(lister: ScriptedLister, sleeps: Sleeps) -> None:
    def drop_spec(obj: RawObj) -> RawObj:
        if obj["metadata"]["name"] == "odd":
            raise ValueError("cannot slim this one")
        return {"metadata": obj["metadata"], "slim": True}

    informer = Informer("pods", lister, backoff=Backoff(sleep=sleeps), transform=drop_spec)
    lister.lists.append(([pod("a", "5", "n1"), pod("odd", "6", "n1")], "10"))
    lister.watches.append([event("ADDED", pod("b", "11")), event("MODIFIED", pod("a", "12"))])
    got: list[RawObj] = []
    informer.add_handlers(on_add=got.append, on_update=lambda _old, new: got.append(new))
    async with running(informer):
        await lister.exhausted.wait()
    assert [(o["metadata"]["name"], "slim" in o) for o in got] == [
        ("a", True),
        ("odd", False),  # a failing transform keeps the object whole
        ("b", True),
        ("a", True),
    ]
    stored = informer.store.get("ns/a")
    assert stored is not None and stored.get("slim") and "spec" not in stored
