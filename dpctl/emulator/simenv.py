"""The environment contract between the simulated kubelet and the processes it runs as containers.

The simulated kubelet runs every container as a plain process on the host. These variables tell
the process which simulated node and pod it belongs to, which simulated GPUs its container was
given and where the local cluster keeps the state that all of them share. The requester stub, the
vLLM emulator and `dpctl sim-nvidia-smi` read them; the names are fixed because the kubelet, the
containers and the tests all rely on them.

The pod's IP is passed in ``dpctl.api.LISTEN_HOST_ENV`` (``DPCTL_LISTEN_HOST``), which the lead
owns. This module does not import ``dpctl.api`` at load time: `sim-nvidia-smi` runs on every GPU
discovery and should not pay for pydantic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# Set by the simulated kubelet on every container it runs.
STATE_DIR_ENV: Final = "DPCTL_SIM_STATE"
NODE_ENV: Final = "DPCTL_SIM_NODE"
POD_ENV: Final = "DPCTL_SIM_POD"
POD_UID_ENV: Final = "DPCTL_SIM_POD_UID"
NVIDIA_VISIBLE_DEVICES_ENV: Final = "NVIDIA_VISIBLE_DEVICES"
PATH_ENV: Final = "PATH"

# Read by CUDA, hence by vLLM and its emulator; set by the controller on the runner.
CUDA_VISIBLE_DEVICES_ENV: Final = "CUDA_VISIBLE_DEVICES"
CUDA_DEVICE_ORDER_ENV: Final = "CUDA_DEVICE_ORDER"
PCI_BUS_ID_ORDER: Final = "PCI_BUS_ID"

# NVIDIA_VISIBLE_DEVICES values that the NVIDIA container runtime reads as "no GPU".
_NO_DEVICES: Final = frozenset({"", "none", "void"})
_ALL_DEVICES: Final = "all"
_UUID_PREFIX: Final = "GPU-"


def state_dir(env: Mapping[str, str]) -> Path | None:
    """The local cluster's state dir, or None outside a simulated container."""
    value = env.get(STATE_DIR_ENV)
    return Path(value) if value else None


def gpu_table_path(state: Path, node: str) -> Path:
    return state / "gpus" / f"{node}.json"


def ledger_path(state: Path) -> Path:
    return state / "gpu-ledger.sqlite"


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


def container_env(
    *,
    state: Path,
    node: str,
    pod: str,
    pod_uid: str,
    listen_host: str,
    nvidia_visible_devices: str,
    shim_dir: Path,
    base_path: str,
) -> dict[str, str]:
    """The variables the simulated kubelet gives a container, with the nvidia-smi shim first on PATH.

    ``pod`` is ``namespace/name``; ``nvidia_visible_devices`` is what the device plugin (for a GPU
    request) or the image (``all`` for CUDA images such as vLLM's) would set.
    """
    from dpctl.api import LISTEN_HOST_ENV

    return {
        STATE_DIR_ENV: str(state),
        NODE_ENV: node,
        POD_ENV: pod,
        POD_UID_ENV: pod_uid,
        LISTEN_HOST_ENV: listen_host,
        NVIDIA_VISIBLE_DEVICES_ENV: nvidia_visible_devices,
        PATH_ENV: f"{shim_dir}:{base_path}" if base_path else str(shim_dir),
    }
