"""What a container's environment says about its GPUs, on a real GPU node or a simulated one.

Owns the facts of the NVIDIA container stack that the requester stub relies on: the
``NVIDIA_VISIBLE_DEVICES`` variable (set by the device plugin for a GPU request, or by a CUDA
image's config) and its values, and the shape of a GPU UUID (``GPU-...``). Also the one name a
simulated node puts in every container it runs, :data:`SIM_NODE_ENV`, because the stub must
know where NVML would lie. The simulator (``dpsim``) imports these from here; nothing here
imports the simulator.

Standard library only, on purpose: `dpctl sim-nvidia-smi` imports this on every GPU discovery in
a simulated container and should not pay for pydantic (``dpctl.api``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

NVIDIA_VISIBLE_DEVICES_ENV: Final = "NVIDIA_VISIBLE_DEVICES"
# Set (to the node's name) in every container of a simulated node. There NVML would report the
# host's real GPUs, not the simulated ones the container was given.
SIM_NODE_ENV: Final = "DPCTL_SIM_NODE"

# NVIDIA_VISIBLE_DEVICES values that the NVIDIA container runtime reads as "no GPU".
_NO_DEVICES: Final = frozenset({"", "none", "void"})
_ALL_DEVICES: Final = "all"
_UUID_PREFIX: Final = "GPU-"


def is_gpu_uuid(device_id: str) -> bool:
    return device_id.startswith(_UUID_PREFIX) and len(device_id) > len(_UUID_PREFIX)


@dataclass(frozen=True)
class VisibleDevices:
    """What ``NVIDIA_VISIBLE_DEVICES`` grants a container: every GPU of the node, or the listed ids.

    Listed ids are UUIDs or node-wide indices, exactly as written.
    """

    all: bool
    ids: tuple[str, ...]

    @property
    def uuids(self) -> tuple[str, ...] | None:
        """The listed ids when every one is a GPU UUID, else None (``all``, none, or indices)."""
        if self.all or not self.ids or not all(is_gpu_uuid(i) for i in self.ids):
            return None
        return self.ids


def parse_visible_devices(value: str | None) -> VisibleDevices:
    if value is None or value.strip().lower() in _NO_DEVICES:
        return VisibleDevices(all=False, ids=())
    if value.strip().lower() == _ALL_DEVICES:
        return VisibleDevices(all=True, ids=())
    return VisibleDevices(all=False, ids=tuple(i.strip() for i in value.split(",") if i.strip()))
