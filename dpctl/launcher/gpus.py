"""GPU UUID → index, the number ``CUDA_VISIBLE_DEVICES`` takes (contract §3.2).

The index is the GPU's position in NVML's enumeration, else in ``nvidia-smi``'s list (both PCI
bus order), as the requester stub discovers them; the launcher asks on first use and keeps the
first answer (a container's GPUs never change), retrying a failure on the next request. With
``--mock-gpus`` there is no hardware, and, as in upstream's mock mode, the map is this node's
entry of the ``gpu-map`` ConfigMap when ``NODE_NAME`` and ``NAMESPACE`` are set (JSON
``{"<UUID>": <index>}``, read once), else, or when the ConfigMap or the entry is missing, GPUs
``GPU-0`` … ``GPU-<n-1>`` with indices 0 … n-1.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from dpctl.api import GPU_MAP_NAME
from dpctl.dualpods.gpumap import parse
from dpctl.kube import CONFIGMAPS, ApiError, Kube, RawObj
from dpctl.stub.discovery import DiscoveryError, FirstSuccess, device_sources

log = logging.getLogger(__name__)


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


class ConfigMapGpus:
    """This node's entry of the gpu-map ConfigMap, else ``fallback``; read on first use and kept
    (a failure to read it, other than its absence, is retried on the next request)."""

    def __init__(
        self, node: str, fallback: MockGpus, read_configmap: Callable[[], Awaitable[RawObj | None]]
    ) -> None:
        self.node = node
        self.fallback = fallback
        self._read = read_configmap
        self._mapping: Mapping[str, int] | None = None

    async def indices(self, uuids: Sequence[str]) -> list[int]:
        if self._mapping is None:
            self._mapping = await self._load()
        return _lookup(self._mapping, uuids)

    async def _load(self) -> Mapping[str, int]:
        try:
            configmap = await self._read()
        except Exception as e:
            raise GpuLookupFailed(f"cannot read ConfigMap {GPU_MAP_NAME}: {e}") from None
        gpu_map = parse(configmap)
        entry = None if gpu_map is None else gpu_map.nodes.get(self.node)
        if entry is None or entry.error:
            why = entry.error if entry else f"ConfigMap {GPU_MAP_NAME} has no entry for node {self.node!r}"
            log.warning("%s; using the %d mock GPUs GPU-0 ...", why, len(self.fallback.mapping))
            return self.fallback.mapping
        log.info("GPUs of node %s from ConfigMap %s: %s", self.node, GPU_MAP_NAME, dict(entry.gpus))
        return entry.gpus


def configmap_reader(namespace: str) -> Callable[[], Awaitable[RawObj | None]]:
    """Reads the gpu-map ConfigMap of ``namespace`` with in-cluster (or kubeconfig) credentials;
    None when it does not exist."""

    async def read() -> RawObj | None:
        kube = await Kube.connect()
        try:
            return await kube.get(CONFIGMAPS, GPU_MAP_NAME, namespace)
        except ApiError as e:
            if e.not_found:
                return None
            raise
        finally:
            await kube.close()

    return read


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
