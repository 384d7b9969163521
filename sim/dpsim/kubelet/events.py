"""Pod Events as the kubelet records them (``Pulled``, ``Created``, ``Started``, ``Failed``,
``BackOff``, ``Killing``, ``Unhealthy``), so ``kubectl describe pod`` tells what happened.

Built on :class:`dpctl.events.EventRecorder` (rate-limited, aggregated, never blocking), which
writes into one namespace: an Event must live in its pod's namespace to be listed with it, so
there is one recorder per namespace, created on first use. At most ``max_namespaces`` are kept;
the least recently used one is dropped (its pending Events with it) beyond that.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final, Protocol

from dpctl.events import EventRecorder
from dpctl.kube import Kube

COMPONENT: Final = "kubelet"
NORMAL: Final = "Normal"
WARNING: Final = "Warning"


class EventSink(Protocol):
    def emit(self, pod: Mapping[str, Any], type_: str, reason: str, message: str) -> None: ...


class PodEvents:
    def __init__(self, kube: Kube, max_namespaces: int = 256) -> None:
        self._kube = kube
        self._max = max_namespaces
        self._recorders: OrderedDict[str, tuple[EventRecorder, asyncio.Task[None]]] = OrderedDict()

    def emit(self, pod: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        namespace = str((pod.get("metadata") or {}).get("namespace", "default"))
        entry = self._recorders.get(namespace)
        if entry is None:
            recorder = EventRecorder(self._kube, namespace, COMPONENT)
            task = asyncio.get_running_loop().create_task(recorder.run(), name=f"events-{namespace}")
            entry = (recorder, task)
            self._recorders[namespace] = entry
            if len(self._recorders) > self._max:
                _, (_, oldest) = self._recorders.popitem(last=False)
                oldest.cancel()
        self._recorders.move_to_end(namespace)
        entry[0].record(pod, type_, reason, message)

    async def close(self) -> None:
        tasks = [task for _, task in self._recorders.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._recorders.clear()
