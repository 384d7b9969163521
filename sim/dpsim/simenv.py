"""The environment contract between the simulated kubelet and the processes it runs as containers.

The simulated kubelet runs every container as a plain process on the host. These variables tell
the process which simulated node and pod it belongs to, which simulated GPUs its container was
given and where the local cluster keeps the state that all of them share. The requester stub, the
vLLM emulator and `dpctl sim-nvidia-smi` read them; the names are fixed because the kubelet, the
containers and the tests all rely on them. The two a real node has too, or that the product's
stub reads (``NVIDIA_VISIBLE_DEVICES``, ``DPCTL_SIM_NODE``), are the product's, in
``dpctl.gpuenv``; the rest are the simulator's own.

The pod's IP is passed in ``dpctl.api.LISTEN_HOST_ENV`` (``DPCTL_LISTEN_HOST``), which the lead
owns. This module does not import ``dpctl.api`` at load time: `sim-nvidia-smi` runs on every GPU
discovery and should not pay for pydantic.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final

from dpctl.gpuenv import NVIDIA_VISIBLE_DEVICES_ENV, SIM_NODE_ENV

# Set by the simulated kubelet on every container it runs.
STATE_DIR_ENV: Final = "DPCTL_SIM_STATE"
POD_ENV: Final = "DPCTL_SIM_POD"
POD_UID_ENV: Final = "DPCTL_SIM_POD_UID"
# The container a process belongs to, inherited by all it starts: the runtime's "cgroup".
CONTAINER_ENV: Final = "DPCTL_SIM_CONTAINER"
PATH_ENV: Final = "PATH"

# Read by CUDA, hence by vLLM and its emulator; set by the controller on the runner.
CUDA_VISIBLE_DEVICES_ENV: Final = "CUDA_VISIBLE_DEVICES"
CUDA_DEVICE_ORDER_ENV: Final = "CUDA_DEVICE_ORDER"
PCI_BUS_ID_ORDER: Final = "PCI_BUS_ID"


def state_dir(env: Mapping[str, str]) -> Path | None:
    """The local cluster's state dir, or None outside a simulated container."""
    value = env.get(STATE_DIR_ENV)
    return Path(value) if value else None


def gpu_table_path(state: Path, node: str) -> Path:
    return state / "gpus" / f"{node}.json"


def ledger_path(state: Path) -> Path:
    return state / "gpu-ledger.sqlite"


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
        SIM_NODE_ENV: node,
        POD_ENV: pod,
        POD_UID_ENV: pod_uid,
        LISTEN_HOST_ENV: listen_host,
        NVIDIA_VISIBLE_DEVICES_ENV: nvidia_visible_devices,
        PATH_ENV: f"{shim_dir}:{base_path}" if base_path else str(shim_dir),
    }
