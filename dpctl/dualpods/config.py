"""The controller's configuration, validated once at start (flags and environment)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

UPSTREAM_MIB_PER_SLEEPER = 4096


class ControllerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str = Field(min_length=1, description="the namespace of requesters, runners and gpu-map")
    kubeconfig: str | None = None
    context: str | None = None
    sleeper_limit: int = Field(default=2, ge=0, description="sleeping runners kept per GPU")
    num_workers: int = Field(default=32, ge=1, le=256)
    # Generous: a 2,000-requester burst sends about 4 writes and a few reads per actuation, over
    # the seconds the cluster takes to start the Pods; this limit is a guard against a runaway
    # loop hammering the API server, not a pace for normal work (client-go's 5/10 was that).
    kube_api_qps: float = Field(default=500.0, gt=0, description="API requests a second, sustained")
    kube_api_burst: int = Field(default=1000, ge=1, description="API requests at once, above the qps")
    verbosity: int = Field(default=2, ge=0, le=10)
    log_format: Literal["text", "json"] = "text"
    metrics_port: int = Field(default=8002, ge=0, le=65535, description="0 disables /metrics and health")
    metrics_host: str = "0.0.0.0"
    leader_elect: bool = False
    lease_name: str = "dpctl-controller"
    lease_duration_s: float = Field(default=15.0, gt=2)
    renew_deadline_s: float = Field(default=10.0, gt=1)
    retry_period_s: float = Field(default=2.0, gt=0)
    identity: str = ""
    debug_accelerator_memory: bool = Field(default=False, description="check GPU memory before a wake")
    wake_memory_budget_mib: int | None = Field(
        default=None, ge=0, description="memory in use a wake tolerates"
    )

    def wake_memory_budget(self) -> int | None:
        """Bytes per GPU, with the guard on. Upstream's rule by default: 4 GiB per sleeper the
        limit allows, what sleeping vLLM servers (CUDA context, graphs) keep on a GPU."""
        if not self.debug_accelerator_memory:
            return None
        mib = self.wake_memory_budget_mib
        return (mib if mib is not None else UPSTREAM_MIB_PER_SLEEPER * self.sleeper_limit) << 20

    log_relay: bool = Field(default=True, description="relay bound runners' logs to their stubs")
    instance_start_timeout_s: float = Field(
        default=900.0, gt=0, description="how long a launcher instance may take to answer after its start"
    )
    log_relay_bytes_per_s: int = Field(default=65536, ge=1024, description="per relay")
