"""GPU UUID → index, the number ``CUDA_VISIBLE_DEVICES`` takes (contract §3.2).

The index is the GPU's position in NVML's enumeration, else in ``nvidia-smi``'s list (both PCI
bus order), as the requester stub discovers them; the launcher asks on first use and keeps the
first answer (a container's GPUs never change), retrying a failure on the next request. With
``--mock-gpus`` there is no hardware: GPUs ``GPU-0`` … ``GPU-<n-1>`` have indices 0 … n-1, as in
upstream's mock mode.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Protocol

from dpctl.stub.discovery import DiscoveryError, FirstSuccess, device_sources


class UnknownGpu(ValueError):
    """A UUID this launcher does not see: HTTP 400 (upstream answers 409 by accident)."""


class GpuLookupFailed(RuntimeError):
    """The launcher could not list its GPUs (HTTP 500); the next request tries again."""


class GpuIndex(Protocol):
    async def indices(self, uuids: Sequence[str]) -> list[int]:
        """The index of each UUID, in order; UnknownGpu or GpuLookupFailed."""
        ...


def _lookup(mapping: Mapping[str, int], uuids: Sequence[str]) -> list[int]:
    unknown = [u for u in uuids if u not in mapping]
    if unknown:
        raise UnknownGpu(f"GPU UUID {unknown[0]!r} not found. Available UUIDs: {list(mapping)}")
    return [mapping[u] for u in uuids]


class MockGpus:
    def __init__(self, count: int) -> None:
        self.mapping = {f"GPU-{i}": i for i in range(count)}

    async def indices(self, uuids: Sequence[str]) -> list[int]:
        return _lookup(self.mapping, uuids)


class DeviceGpus:
    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        self._discovery = FirstSuccess(device_sources(env))

    async def indices(self, uuids: Sequence[str]) -> list[int]:
        try:
            found = await self._discovery.discover()
        except DiscoveryError as e:
            raise GpuLookupFailed(f"cannot list this node's GPUs: {e}") from None
        return _lookup({uuid: i for i, uuid in enumerate(found)}, uuids)


def cuda_visible_devices(indices: Sequence[int]) -> str:
    return ",".join(str(i) for i in indices)
