"""Kubernetes Events for what users care about, rate-limited and aggregated.

Recording never blocks the caller and never fails it: events go into a bounded queue drained by
one task. A repeat of the same (object, reason, message) within the aggregation window bumps the
existing Event's count instead of creating another, and each object gets a small token bucket so
a stuck object cannot flood the API server. Events that do not fit are dropped and counted.

Generic: knows the Event API, not dual pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dpctl import log
from dpctl.kube import CORE_EVENTS, ApiError, Kube

_log = log.get("events")


@dataclass
class _Seen:
    name: str
    count: int
    last: float


@dataclass
class _Bucket:
    tokens: float
    stamp: float


def _now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        component: str,
        max_pending: int = 1000,
        window_s: float = 600.0,
        per_object_burst: int = 10,
        per_object_rate: float = 1 / 30,
        max_tracked: int = 4096,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.component = component
        self.window_s = window_s
        self.burst = per_object_burst
        self.rate = per_object_rate
        self.max_tracked = max_tracked
        self.dropped = 0
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(max_pending)
        self._seen: OrderedDict[tuple[str, str, str], _Seen] = OrderedDict()
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def record(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        meta = obj.get("metadata") or {}
        uid = str(meta.get("uid", ""))
        if not uid or not self._take_token(uid):
            self.dropped += 1
            return
        item = {
            "involved": {
                "apiVersion": obj.get("apiVersion", "v1"),
                "kind": obj.get("kind", "Pod"),
                "name": meta.get("name"),
                "namespace": meta.get("namespace", self.namespace),
                "uid": uid,
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
        }
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1

    def _take_token(self, uid: str) -> bool:
        now = time.monotonic()
        bucket = self._buckets.get(uid)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
            self._buckets[uid] = bucket
            if len(self._buckets) > self.max_tracked:
                self._buckets.popitem(last=False)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        self._buckets.move_to_end(uid)
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    async def run(self) -> None:
        """Drain the queue until cancelled."""
        while True:
            item = await self._queue.get()
            try:
                await self._write(item)
            except ApiError as err:
                _log.warning("Could not record an Event", reason=item["reason"], error=str(err))
            except Exception as err:  # a dropped connection must not end recording for good
                _log.warning("Could not record an Event", reason=item["reason"], error=repr(err))

    async def _write(self, item: dict[str, Any]) -> None:
        involved = item["involved"]
        key = (involved["uid"], item["reason"], item["message"])
        now, stamp = time.monotonic(), _now_rfc3339()
        seen = self._seen.get(key)
        if seen is not None and now - seen.last < self.window_s:
            seen.count += 1
            seen.last = now
            with contextlib.suppress(ApiError):
                await self.kube.patch(
                    CORE_EVENTS,
                    seen.name,
                    {"count": seen.count, "lastTimestamp": stamp},
                    self.namespace,
                    patch_type="merge",
                )
                return
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{involved['name']}.", "namespace": self.namespace},
            "involvedObject": involved,
            "type": item["type"],
            "reason": item["reason"],
            "message": item["message"],
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.component,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        created = await self.kube.create(CORE_EVENTS, body, self.namespace)
        self._seen[key] = _Seen(str(created["metadata"]["name"]), 1, now)
        if len(self._seen) > self.max_tracked:
            self._seen.popitem(last=False)
