"""The simulated NVIDIA device plugin: exclusive ``nvidia.com/gpu`` allocation per node.

Like the kubelet's device manager with the NVIDIA plugin, a pod that asks for ``n`` GPUs gets
``n`` devices of its node that no other live pod holds, and keeps them until its containers have
terminated. The real plugin may pick any free devices; here the choice is deterministic, the
lowest free indices first, so tests and humans can predict which GPU a pod gets. The caller puts
the UUIDs into ``NVIDIA_VISIBLE_DEVICES``, as the plugin's Allocate response does.

Pure: no I/O; ``allocations`` persists the result so a restarted kubelet never double-allocates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from dpctl.api import GPU_RESOURCE

_RESOURCE_KEYS: Final = ("limits", "requests")


class InsufficientGpusError(RuntimeError):
    """Fewer free GPUs than requested: the kubelet rejects the pod (UnexpectedAdmissionError)."""

    def __init__(self, node: str, requested: int, available: int) -> None:
        # The device manager's words, so the message reads as on a real node.
        super().__init__(
            f"Allocate failed due to requested number of devices unavailable for {GPU_RESOURCE}."
            f" Requested: {requested}, Available: {available}, which is unexpected"
        )
        self.node = node
        self.requested = requested
        self.available = available


def container_gpus(container: Mapping[str, Any]) -> int:
    """GPUs one container asks for. Extended resources are integers whose requests equal their
    limits; the limit wins if both are given (the API server rejects a mismatch anyway)."""
    resources = container.get("resources") or {}
    for key in _RESOURCE_KEYS:
        value = (resources.get(key) or {}).get(GPU_RESOURCE)
        if value is not None:
            try:
                return max(0, int(str(value)))
            except ValueError:
                return 0
    return 0


def pod_gpu_request(spec: Mapping[str, Any]) -> int:
    """The pod's GPU count as the device manager sees it: the sum over its containers, or the
    largest init container's if that is more (init containers run one at a time and hand their
    devices on to the app containers)."""
    init = max((container_gpus(c) for c in spec.get("initContainers") or []), default=0)
    return max(init, sum(container_gpus(c) for c in spec.get("containers") or []))


def split_devices(spec: Mapping[str, Any], uuids: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Which of the pod's devices each container gets: app containers take consecutive slices in
    spec order; an init container reuses the first ones, as the device manager reuses devices."""
    result: dict[str, tuple[str, ...]] = {}
    for c in spec.get("initContainers") or []:
        result[str(c.get("name"))] = tuple(uuids[: container_gpus(c)])
    start = 0
    for c in spec.get("containers") or []:
        n = container_gpus(c)
        result[str(c.get("name"))] = tuple(uuids[start : start + n])
        start += n
    return result


class GpuAllocator:
    """GPUs per node (by index order) and which pod UID holds each. Allocation is idempotent per UID."""

    def __init__(self) -> None:
        self._nodes: dict[str, tuple[str, ...]] = {}
        self._holder: dict[str, str] = {}  # GPU UUID -> pod UID
        self._held: dict[str, tuple[str, tuple[str, ...]]] = {}  # pod UID -> (node, UUIDs)

    def add_node(self, node: str, uuids: Sequence[str]) -> None:
        self._nodes[node] = tuple(uuids)

    def allocate(self, uid: str, node: str, count: int) -> tuple[str, ...]:
        held = self._held.get(uid)
        if held is not None:
            if held[0] != node or len(held[1]) != count:
                raise ValueError(f"pod {uid} already holds {held[1]} on {held[0]}")
            return held[1]
        if count <= 0:
            return ()
        free = self.free(node)
        if len(free) < count:
            raise InsufficientGpusError(node, count, len(free))
        chosen = tuple(free[:count])
        self._take(uid, node, chosen)
        return chosen

    def restore(self, uid: str, node: str, uuids: Sequence[str]) -> bool:
        """Re-take devices recorded before a restart; False if any is unknown or held by another pod."""
        known = self._nodes.get(node, ())
        if any(u not in known or self._holder.get(u, uid) != uid for u in uuids):
            return False
        if uid in self._held and self._held[uid] != (node, tuple(uuids)):
            return False
        if uuids:
            self._take(uid, node, tuple(uuids))
        return True

    def _take(self, uid: str, node: str, uuids: tuple[str, ...]) -> None:
        for u in uuids:
            self._holder[u] = uid
        self._held[uid] = (node, uuids)

    def release(self, uid: str) -> tuple[str, ...]:
        held = self._held.pop(uid, None)
        if held is None:
            return ()
        for u in held[1]:
            if self._holder.get(u) == uid:
                del self._holder[u]
        return held[1]

    def release_node(self, node: str) -> None:
        """Free every device of a node (the machine died)."""
        for uid, (n, _) in list(self._held.items()):
            if n == node:
                self.release(uid)

    def free(self, node: str) -> list[str]:
        return [u for u in self._nodes.get(node, ()) if u not in self._holder]

    def held_by(self, uid: str) -> tuple[str, ...]:
        held = self._held.get(uid)
        return held[1] if held else ()

    def holder_of(self, uuid: str) -> str | None:
        return self._holder.get(uuid)
