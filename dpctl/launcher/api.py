"""The launcher's wire shapes and names (contract §3.2), spelled once.

The JSON field names, the service name and version of ``GET /`` and the event types are
upstream's, byte for byte: controllers written for upstream's launcher read them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel

from dpctl.api import LAUNCHER_PORT

DEFAULT_PORT: Final = LAUNCHER_PORT
SERVICE_NAME: Final = "Multi-Instance vLLM Management API"
API_VERSION: Final = "2.0"
INSTANCES_PATH: Final = "/v2/vllm/instances"
WATCH_PATH: Final = f"{INSTANCES_PATH}/watch"
# At most this many bytes of an instance log per reply.
MAX_LOG_REPLY_BYTES: Final = 1024 * 1024
# Watch events kept for `since`; an older `since` is answered 410.
EVENT_BUFFER_SIZE: Final = 1000
CUDA_VISIBLE_DEVICES_ENV: Final = "CUDA_VISIBLE_DEVICES"
CUDA_DEVICE_ORDER_ENV: Final = "CUDA_DEVICE_ORDER"
# NVML numbers GPUs in PCI bus order; CUDA does so only when told (contract §3.2 [D]).
PCI_BUS_ID_ORDER: Final = "PCI_BUS_ID"

ENDPOINTS: Final = {
    "index": "GET /",
    "health": "GET /health",
    "create_instance": f"POST {INSTANCES_PATH}",
    "create_named_instance": f"PUT {INSTANCES_PATH}/{{instance_id}}",
    "delete_instance": f"DELETE {INSTANCES_PATH}/{{instance_id}}",
    "delete_all_instances": f"DELETE {INSTANCES_PATH}",
    "get_instance_status": f"GET {INSTANCES_PATH}/{{instance_id}}",
    "get_all_instances": f"GET {INSTANCES_PATH}",
    "get_instance_logs": f"GET {INSTANCES_PATH}/{{instance_id}}/log",
    "watch_instances": f"GET {WATCH_PATH}",
}


class VllmConfig(BaseModel):
    """The body of POST/PUT: what to run. Unknown fields are ignored, as upstream's are."""

    options: str  # the `vllm serve` arguments, split on whitespace as upstream splits them
    gpu_uuids: list[str] | None = None
    env_vars: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class Status(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"


class EventType(StrEnum):
    CREATED = "CREATED"
    STOPPED = "STOPPED"
    DELETED = "DELETED"


class InstanceState(VllmConfig):
    """An instance as the API shows it (what `state_object` writes), read back by a client."""

    status: Status
    instance_id: str
    revision: int = 0
    exit_code: int | None = None


def state_object(status: Status, instance_id: str, revision: int, config: VllmConfig) -> dict[str, Any]:
    """An instance as the API shows it: status, id, the revision of its latest event, and the
    config's non-null fields (``env_vars`` with the injected ``CUDA_VISIBLE_DEVICES``)."""
    return {
        "status": status.value,
        "instance_id": instance_id,
        "revision": revision,
        **config.model_dump(exclude_none=True),
    }
