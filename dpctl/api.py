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
from dataclasses import dataclass
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator


@dataclass(frozen=True)
class Dialect:
    """One upstream version's spelling of the names that changed after 8ed2953 (contract §2b).

    A requester's dialect is the prefix of its server-patch annotation; the controller answers
    in it (status annotation, runner finalizer) and asks the stub's accelerators path of it first.
    """

    name: str
    server_patch: str  # set by the user on the server-requesting Pod
    admin_port: str  # set by the user; DEFAULT_ADMIN_PORT when absent
    status: str  # set by the controller on the requester
    runner_finalizer: str  # set by the controller on a bound runner
    accelerators_path: str  # the stub's GPU query


# The Go original at 8ed2953, which the recipe uses (note its mix of "dual-pod." and "dual-pods.").
ORIGINAL: Final = Dialect(
    name="8ed2953",
    server_patch="dual-pod.llm-d.ai/server-patch",
    admin_port="dual-pod.llm-d.ai/admin-port",
    status="dual-pod.llm-d.ai/status",
    runner_finalizer="dual-pods.llm-d.ai/runner",
    accelerators_path="/v1/dual-pod/accelerators",
)
# Upstream's current names (553c7b7), renamed without back-compat.
HEAD: Final = Dialect(
    name="head",
    server_patch="dual-pods.llm-d.ai/server-patch",
    admin_port="dual-pods.llm-d.ai/admin-port",
    status="dual-pods.llm-d.ai/status",
    runner_finalizer="dual-pods.llm-d.ai/provider",
    accelerators_path="/v1/dual-pods/accelerators",
)
DIALECTS: Final = (ORIGINAL, HEAD)
# Either finalizer marks a bound runner, whichever controller version wrote it.
RUNNER_FINALIZERS: Final = tuple(d.runner_finalizer for d in DIALECTS)
DEFAULT_ADMIN_PORT: Final = 8081


def dialects_of(annotations: Mapping[str, str]) -> tuple[Dialect, ...]:
    """The dialects whose server-patch annotation a Pod carries: none (not a requester), one, or
    both (a requester in error: the two dialects' patches may disagree)."""
    return tuple(d for d in DIALECTS if d.server_patch in annotations)


# Set by the controller.
REQUESTER_ANNOTATION: Final = "dual-pods.llm-d.ai/requester"
NOMINAL_ANNOTATION: Final = "dual-pods.llm-d.ai/nominal"
ACCELERATORS_ANNOTATION: Final = "dual-pods.llm-d.ai/accelerators"
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
# HEAD's stub only (contract §2b): GPU memory in use per UUID, and the relayed server log.
ACCELERATOR_MEMORY_PATH: Final = "/v1/dual-pods/accelerator-memory-usage"
SET_LOG_PATH: Final = "/v1/set-log"
SET_LOG_START_PARAM: Final = "startPos"
BECOME_READY_PATH: Final = "/v1/become-ready"
BECOME_UNREADY_PATH: Final = "/v1/become-unready"

# The inference server's (vLLM's) HTTP surface used by the controller.
SLEEP_PATH: Final = "/sleep"
WAKE_UP_PATH: Final = "/wake_up"
IS_SLEEPING_PATH: Final = "/is_sleeping"
HEALTH_PATH: Final = "/health"

# The launcher path (launcher contract §1): a launcher Pod per node and LauncherConfig runs vLLM
# instances on request; the names are upstream's (553c7b7).
COMPONENT_LABEL: Final = "app.kubernetes.io/component"
LAUNCHER_COMPONENT: Final = "launcher"
LAUNCHER_CONFIG_NAME_LABEL: Final = "dual-pods.llm-d.ai/launcher-config-name"
NODE_NAME_LABEL: Final = "dual-pods.llm-d.ai/node-name"
LAUNCHER_TEMPLATE_HASH_ANNOTATION: Final = "dual-pods.llm-d.ai/launcher-populator-template-hash"
LAUNCHER_CONFIG_HASH_ANNOTATION: Final = "dual-pods.llm-d.ai/launcher-config-hash"
# Set by the user on a requester: serve it from a launcher with this InferenceServerConfig.
INFERENCE_SERVER_CONFIG_ANNOTATION: Final = "dual-pods.llm-d.ai/inference-server-config"
# Set by the controller on a bound requester: the instance serving it.
INSTANCE_LABEL: Final = "dual-pods.llm-d.ai/instance"
# The bound launcher's bookkeeping (with REQUESTER_ANNOTATION): enough to carry on after a restart.
INSTANCE_ID_ANNOTATION: Final = "dual-pods.llm-d.ai/instance-id"
SERVER_PORT_ANNOTATION: Final = "dual-pods.llm-d.ai/server-port"
VLLM_CONFIG_ANNOTATION: Final = "dual-pods.llm-d.ai/vllm-config"
ISC_ROUTING_METADATA_ANNOTATION: Final = "dual-pods.llm-d.ai/isc-routing-metadata"
BOOKKEEPING_ANNOTATIONS: Final = (
    INSTANCE_ID_ANNOTATION,
    SERVER_PORT_ANNOTATION,
    VLLM_CONFIG_ANNOTATION,
    ISC_ROUTING_METADATA_ANNOTATION,
)
# Set by the launcher Pod's notifier sidecar: a hash of its instances and their status, so that a
# change of the launcher's instances is a Pod event for the controllers (contract §3.3).
INSTANCE_SIGNATURE_ANNOTATION: Final = "dual-pods.llm-d.ai/vllm-instance-signature"
# Set by the populator on a launcher it gave up on.
LAUNCHER_STUCK_LABEL: Final = "dual-pods.llm-d.ai/launcher-stuck"
LAUNCHER_PORT: Final = 8001  # fixed between the controllers and the launcher
LAUNCHER_NOTIFIER_CONTAINER: Final = "state-change-reflector"
# Keys of a launch body's annotations: which ISC an instance serves, and on which port.
ISC_NAME_KEY: Final = "isc-name"
INFERENCE_PORT_KEY: Final = "inference-port"

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
    # The launcher path's (launcher contract §10).
    CREATED_LAUNCHER: Final = "Created launcher-based server-providing pod"
    BOUND_LAUNCHER: Final = "Bound server-providing Pod"
    CREATED_INSTANCE: Final = "Created vLLM instance"
    UNBOUND_LAUNCHER: Final = "Unbound server-providing Pod"
    RECLAIMED_INSTANCE: Final = "Ensured vLLM instance absent to reclaim launcher capacity"
    DELETED_OBSOLETE: Final = "Deleted obsolete sleeping instance"
    INSTANCE_STOPPED: Final = "Requested deletion of server-requesting Pod because bound instance stopped"


class RequesterStatus(BaseModel):
    """Value of the status annotation: the problems that stop progress, in words a user can act on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    errors: tuple[str, ...] = Field(default=(), alias="Errors")

    @field_validator("errors", mode="before")
    @classmethod
    def _null_is_none(cls, value: object) -> object:
        return () if value is None else value  # upstream's launcher path writes {"Errors":null}

    def to_annotation(self, none_as_null: bool = False) -> str:
        """The annotation's value; upstream's launcher path writes ``{"Errors":null}`` for none."""
        errors = list(self.errors) if self.errors or not none_as_null else None
        return json.dumps({"Errors": errors}, separators=(",", ":"))


def listen_host(env: Mapping[str, str] | None = None) -> str:
    """The address our servers bind: the simulated pod's IP when set, else all interfaces."""
    return (env if env is not None else os.environ).get(LISTEN_HOST_ENV) or "0.0.0.0"
