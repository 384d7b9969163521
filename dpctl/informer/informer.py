"""An informer: keep a :class:`Store` in step with the API server and tell handlers what changed.

Port of client-go's reflector + shared informer, for one event loop:

* List, replace the store, then watch from the list's resourceVersion with bookmarks and a
  jittered server-side timeout (``watch_timeout_s`` to twice that, so watches of many
  informers do not all restart together). Every event's resourceVersion is tracked, bookmarks
  included, so a rewatch resumes where the last one ended.
* A watch that ends normally is reopened from the last resourceVersion, without a relist. One
  that ends within a second having delivered nothing is treated as a failure (backoff), so a
  server that closes streams at once cannot spin us.
* ``410 Gone`` (the resourceVersion was compacted away) relists at once — unless nothing arrived
  since the last list, in which case an immediate relist would likely loop, so back off first.
* Any other failure (list or watch, HTTP error, broken stream, dead peer) backs off (0.8 s
  doubling to 30 s, jittered, reset after two healthy minutes) and relists.
* A relist replaces the store: new objects → add, changed → update, unchanged
  resourceVersion → nothing, missing → delete with the last known object (deletions that
  happened while no watch was open are not lost).
* The store and its indexes are updated before handlers run. Handlers are synchronous and
  should only enqueue; an exception in one is logged and does not stop the informer or the
  other handlers.
* An optional ``transform`` (client-go's ``SetTransform``) sees every object first, listed or
  watched, and what it returns is what the store keeps and handlers get: a way to drop what
  the owner never reads (e.g. ``managedFields``) before it costs memory. It may change the
  object it is given (a freshly decoded one) but must keep its key and resourceVersion.

Objects handed to handlers and returned by the store are shared: never mutate them.

Does not own what the objects mean or what happens when they change.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dpctl.informer.backoff import Backoff
from dpctl.informer.listwatch import ListerWatcher
from dpctl.informer.metrics import InformerMetrics, NoopInformerMetrics
from dpctl.informer.store import Changes, IndexFunc, Store
from dpctl.kube import ApiError, RawObj
from dpctl.kube.objects import meta_namespace_key, resource_version

# A watch that ends sooner than this having delivered no event is a failure, not a timeout.
MIN_HEALTHY_WATCH_S = 1.0

_log = logging.getLogger(__name__)

OnAdd = Callable[[RawObj], None]
OnUpdate = Callable[[RawObj, RawObj], None]
OnDelete = Callable[[RawObj], None]
Transform = Callable[[RawObj], RawObj]


@dataclass(frozen=True)
class _Handlers:
    on_add: OnAdd | None
    on_update: OnUpdate | None
    on_delete: OnDelete | None


class Informer:
    def __init__(
        self,
        name: str,
        lister: ListerWatcher,
        indexers: Mapping[str, IndexFunc] | None = None,
        metrics: InformerMetrics | None = None,
        watch_timeout_s: int = 300,
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        transform: Transform | None = None,
    ) -> None:
        if watch_timeout_s < 1:
            raise ValueError(f"watch_timeout_s must be at least 1, got {watch_timeout_s}")
        self.name = name
        self.store = Store(indexers)
        self._lister = lister
        self._metrics = metrics or NoopInformerMetrics()
        self._watch_timeout_s = watch_timeout_s
        self._backoff = backoff or Backoff(now=clock)
        self._clock = clock
        self._transform = transform
        self._handlers: list[_Handlers] = []
        self._synced = asyncio.Event()
        self._resource_version = ""
        self._events_since_list = 0
        # Last sign of life from the API server (list done, event, watch ended normally); for /healthz.
        self.last_event_monotonic = clock()

    # -- public --------------------------------------------------------------------------------

    def add_handlers(
        self,
        on_add: OnAdd | None = None,
        on_update: OnUpdate | None = None,
        on_delete: OnDelete | None = None,
    ) -> None:
        """Register handlers; added after the first sync, they first hear an add per cached object."""
        handlers = _Handlers(on_add, on_update, on_delete)
        self._handlers.append(handlers)
        if self.has_synced() and on_add is not None:
            for obj in self.store.list():
                self._call(on_add, obj)

    def has_synced(self) -> bool:
        """True once the first list is in the store and its adds have been delivered."""
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    async def run(self) -> None:
        """List and watch until cancelled."""
        while True:
            try:
                await self._list()
            except Exception as err:
                await self._back_off("list failed", err)
                continue
            await self._watch_until_relist_needed()

    # -- list ----------------------------------------------------------------------------------

    async def _list(self) -> None:
        started = self._clock()
        items, rv = await self._lister.list()
        if self._transform is not None:
            items = [self._transformed(obj) for obj in items]
        self._metrics.observe_list_duration(self.name, self._clock() - started)
        changes = self.store.replace(items)
        self._resource_version = rv
        self._events_since_list = 0
        self.last_event_monotonic = self._clock()
        self._deliver(changes)
        if not self._synced.is_set():
            _log.info("Informer %s synced: %d objects at resourceVersion %s", self.name, len(self.store), rv)
            self._synced.set()

    def _deliver(self, changes: Changes) -> None:
        for obj in changes.added:
            self._notify_add(obj)
        for old, new in changes.updated:
            self._notify_update(old, new)
        for obj in changes.deleted:
            self._notify_delete(obj)

    # -- watch ---------------------------------------------------------------------------------

    async def _watch_until_relist_needed(self) -> None:
        while True:
            started = self._clock()
            try:
                received = await self._watch_once()
            except Exception as err:
                self._metrics.inc_watch_restarts(self.name)
                await self._after_watch_failure(err)
                return
            self._metrics.inc_watch_restarts(self.name)
            if received == 0 and self._clock() - started < MIN_HEALTHY_WATCH_S:
                await self._back_off("watch ended at once with no events", None)
            else:
                self.last_event_monotonic = self._clock()

    async def _after_watch_failure(self, err: Exception) -> None:
        """Wait as long as the failure calls for before the relist."""
        if not (isinstance(err, ApiError) and err.gone):
            await self._back_off("watch failed", err)
            return
        self._metrics.inc_relists_gone(self.name)
        if self._events_since_list == 0:
            await self._back_off("watch expired (410 Gone) right after a list", err)
        else:
            _log.info("Informer %s: watch expired (410 Gone), relisting", self.name)

    async def _watch_once(self) -> int:
        """One watch stream, applied event by event; returns how many events arrived."""
        timeout = random.randint(self._watch_timeout_s, 2 * self._watch_timeout_s)
        started = self._clock()
        events = self._lister.watch(self._resource_version, timeout)
        received = 0
        try:
            async for event in events:
                received += 1
                self._apply(event)
        finally:
            # Release the HTTP stream now, not whenever the generator is collected.
            if isinstance(events, AsyncGenerator):
                await events.aclose()
            self._metrics.observe_watch_duration(self.name, self._clock() - started)
        return received

    def _apply(self, event: RawObj) -> None:
        kind = str(event.get("type", ""))
        obj = event.get("object")
        if not isinstance(obj, dict):
            _log.warning("Informer %s: ignoring %s event without an object", self.name, kind)
            return
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            obj = self._transformed(obj)
        if kind in ("ADDED", "MODIFIED"):
            old = self.store.upsert(obj)
            if old is None:
                self._notify_add(obj)
            else:
                self._notify_update(old, obj)
        elif kind == "DELETED":
            self.store.delete(meta_namespace_key(obj))
            self._notify_delete(obj)
        elif kind != "BOOKMARK":
            _log.debug("Informer %s: ignoring watch event of type %r", self.name, kind)
            return
        rv = resource_version(obj)
        if rv:
            self._resource_version = rv
        self._events_since_list += 1
        self.last_event_monotonic = self._clock()
        self._metrics.inc_events(self.name, kind)

    def _transformed(self, obj: RawObj) -> RawObj:
        if self._transform is None:
            return obj
        try:
            return self._transform(obj)
        except Exception:
            # A transform is the owner's code; one that fails on an odd object keeps it whole.
            _log.exception(
                "Informer %s: transform failed on %s; keeping the object as is",
                self.name,
                meta_namespace_key(obj),
            )
            return obj

    async def _back_off(self, what: str, err: Exception | None) -> None:
        delay = self._backoff.next_delay()
        detail = f": {type(err).__name__}: {err}" if err is not None else ""
        _log.warning("Informer %s: %s; retrying in %.1fs%s", self.name, what, delay, detail)
        await self._backoff.sleep(delay)

    # -- handlers ------------------------------------------------------------------------------

    def _notify_add(self, obj: RawObj) -> None:
        for h in self._handlers:
            if h.on_add is not None:
                self._call(h.on_add, obj)

    def _notify_update(self, old: RawObj, new: RawObj) -> None:
        for h in self._handlers:
            if h.on_update is not None:
                self._call(h.on_update, old, new)

    def _notify_delete(self, obj: RawObj) -> None:
        for h in self._handlers:
            if h.on_delete is not None:
                self._call(h.on_delete, obj)

    def _call(self, handler: Callable[..., None], *args: Any) -> None:
        try:
            handler(*args)
        except Exception:
            _log.exception("Informer %s: event handler %r failed", self.name, handler)
