"""The GPU table of a simulated node: its GPUs by node-wide index and UUID, and their product.

The table is deterministic (a UUID is derived from the node name and index only), so every run of
the local cluster, every test and the `gpu-map` script agree on it. The simulated kubelet saves it
when it registers the node, at ``$DPCTL_SIM_STATE/gpus/<node>.json``; the vLLM emulator,
`dpctl sim-nvidia-smi` and tests load it from there.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from dpctl.gpuenv import VisibleDevices, is_gpu_uuid
from dpsim.simenv import gpu_table_path

DEFAULT_GPU_NAME: Final = "NVIDIA L40S"
DEFAULT_MEMORY_MIB: Final = 46068  # what nvidia-smi reports for an L40S
# Fixed forever: changing it changes every simulated GPU UUID.
_UUID_NAMESPACE: Final = uuid.UUID("ba4e4d9d-5220-498a-a035-42333d3b4009")
_T = TypeVar("_T")


class UnknownDeviceError(ValueError):
    """A container was given a GPU its node does not have."""


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str

    @property
    def pci_bus_id(self) -> str:
        # Ascending with the index, so PCI order and index order agree as on a real node.
        return f"00000000:{self.index + 1:02X}:00.0"


@dataclass(frozen=True)
class GpuTable:
    node: str
    name: str
    memory_mib: int
    gpus: tuple[Gpu, ...]

    @classmethod
    def generate(
        cls, node: str, count: int, *, name: str = DEFAULT_GPU_NAME, memory_mib: int = DEFAULT_MEMORY_MIB
    ) -> GpuTable:
        gpus = tuple(Gpu(i, f"GPU-{uuid.uuid5(_UUID_NAMESPACE, f'{node}/{i}')}") for i in range(count))
        return cls(node=node, name=name, memory_mib=memory_mib, gpus=gpus)

    @property
    def product(self) -> str:
        """The ``nvidia.com/gpu.product`` label value, spelled as GPU feature discovery spells it."""
        return self.name.replace(" ", "-")

    @property
    def uuids(self) -> tuple[str, ...]:
        return tuple(g.uuid for g in self.gpus)

    def visible(self, devices: VisibleDevices) -> tuple[Gpu, ...]:
        """The GPUs a container with this ``NVIDIA_VISIBLE_DEVICES`` sees, in PCI order.

        Raises UnknownDeviceError for an id the node lacks, as the NVIDIA container runtime
        refuses to start such a container.
        """
        if devices.all:
            return self.gpus
        chosen = {self._lookup(device_id) for device_id in devices.ids}
        return tuple(sorted(chosen, key=lambda g: g.index))

    def _lookup(self, device_id: str) -> Gpu:
        for gpu in self.gpus:
            if device_id == gpu.uuid or (device_id.isdigit() and int(device_id) == gpu.index):
                return gpu
        raise UnknownDeviceError(f"unknown device id: {device_id} (node {self.node})")

    def to_json(self) -> str:
        return json.dumps(
            {
                "node": self.node,
                "name": self.name,
                "product": self.product,
                "memoryMiB": self.memory_mib,
                "gpus": [{"index": g.index, "uuid": g.uuid} for g in self.gpus],
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> GpuTable:
        """Parse and validate; raises ValueError saying what is wrong."""
        try:
            doc = json.loads(text)
            table = cls(
                node=_typed(doc["node"], str),
                name=_typed(doc["name"], str),
                memory_mib=_typed(doc["memoryMiB"], int),
                gpus=tuple(Gpu(_typed(g["index"], int), _typed(g["uuid"], str)) for g in doc["gpus"]),
            )
        except (KeyError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"malformed GPU table: {e!r}") from e
        if [g.index for g in table.gpus] != list(range(len(table.gpus))):
            raise ValueError("malformed GPU table: indices must be 0..n-1 in order")
        if len(set(table.uuids)) != len(table.gpus) or not all(is_gpu_uuid(u) for u in table.uuids):
            raise ValueError("malformed GPU table: UUIDs must be distinct and start with GPU-")
        return table


def _typed(value: Any, kind: type[_T]) -> _T:
    # bool is an int in Python but not in the file format.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"expected {kind.__name__}, got {value!r}")
    return value


def save_gpu_table(state: Path, table: GpuTable) -> Path:
    """Write the table atomically, so a reader never sees half of it."""
    path = gpu_table_path(state, table.node)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        f.write(table.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(f.name, path)
    return path


def load_gpu_table(state: Path, node: str) -> GpuTable:
    """Raises FileNotFoundError if the node was never registered, ValueError if the file is bad."""
    table = GpuTable.from_json(gpu_table_path(state, node).read_text())
    if table.node != node:
        raise ValueError(f"GPU table of node {node} names node {table.node}")
    return table
