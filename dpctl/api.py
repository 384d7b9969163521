"""The wire contract: every name another party reads or writes, spelled exactly once.

These strings are shared with users, the requester stub, the recipe and the Go original, so
they are kept byte-for-byte (note the deliberate mix of the ``dual-pod.`` and ``dual-pods.``
prefixes). The log messages users grep for (contract §7) live here too, so tests can assert on
the same constants the controller logs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

# Annotations the user sets on the server-requesting Pod.
SERVER_PATCH_ANNOTATION: Final = "dual-pod.llm-d.ai/server-patch"
ADMIN_PORT_ANNOTATION: Final = "dual-pod.llm-d.ai/admin-port"
DEFAULT_ADMIN_PORT: Final = 8081

# Set by the controller.
STATUS_ANNOTATION: Final = "dual-pod.llm-d.ai/status"
REQUESTER_ANNOTATION: Final = "dual-pods.llm-d.ai/requester"
NOMINAL_ANNOTATION: Final = "dual-pods.llm-d.ai/nominal"
ACCELERATORS_ANNOTATION: Final = "dual-pods.llm-d.ai/accelerators"
RUNNER_FINALIZER: Final = "dual-pods.llm-d.ai/runner"
REQUESTER_FINALIZER: Final = "dual-pods.llm-d.ai/requester"
DUAL_LABEL: Final = "dual-pods.llm-d.ai/dual"
SLEEPING_LABEL: Final = "dual-pods.llm-d.ai/sleeping"

GPU_MAP_NAME: Final = "gpu-map"
INFERENCE_SERVER_CONTAINER: Final = "inference-server"
FIELD_MANAGER: Final = "dual-pods-controller"
GPU_RESOURCE: Final = "nvidia.com/gpu"
HOSTNAME_LABEL: Final = "kubernetes.io/hostname"
RUNNER_NAME_SUFFIX: Final = "-server"

# The requester stub's HTTP surface.
PROBES_PORT_ENV: Final = "PROBES_PORT"
SPI_PORT_ENV: Final = "SPI_PORT"
DEFAULT_PROBES_PORT: Final = 8080
DEFAULT_SPI_PORT: Final = 8081
READY_PATH: Final = "/ready"
ACCELERATORS_PATH: Final = "/v1/dual-pod/accelerators"
BECOME_READY_PATH: Final = "/v1/become-ready"
BECOME_UNREADY_PATH: Final = "/v1/become-unready"

# The inference server's (vLLM's) HTTP surface used by the controller.
SLEEP_PATH: Final = "/sleep"
WAKE_UP_PATH: Final = "/wake_up"
IS_SLEEPING_PATH: Final = "/is_sleeping"
HEALTH_PATH: Final = "/health"

# A simulated container binds here instead of 0.0.0.0 (processes share the host's network).
LISTEN_HOST_ENV: Final = "DPCTL_LISTEN_HOST"


class LogMsg:
    """Log messages users grep for (contract §7); keep the words."""

    FOUND_GPUS: Final = "Found GPUs"
    CREATED_RUNNER: Final = "Created server-running Pod"
    BOUND_RUNNER: Final = "Bound server-running Pod"
    WOKE: Final = "Woke inference server"
    SLEPT: Final = "Put inference server to sleep"
    UNBOUND_RUNNER: Final = "Unbound server-running Pod"
    RELAYED_READINESS: Final = "Successfully relayed the readiness"
    END_OF_LIFE: Final = "End of life of inference server"
    SLEEPER_LIMIT_DELETE: Final = "Deleted server-running Pod with sleeping server, to respect sleeper-limit"


class RequesterStatus(BaseModel):
    """Value of the status annotation: the problems that stop progress, in words a user can act on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    errors: tuple[str, ...] = Field(default=(), alias="Errors")

    def to_annotation(self) -> str:
        return json.dumps({"Errors": list(self.errors)}, separators=(",", ":"))


def listen_host(env: Mapping[str, str] | None = None) -> str:
    """The address our servers bind: the simulated pod's IP when set, else all interfaces."""
    return (env if env is not None else os.environ).get(LISTEN_HOST_ENV) or "0.0.0.0"
