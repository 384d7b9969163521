"""The stub's ``accelerator-memory-usage`` (upstream's HEAD endpoint, contract §2b) on the local
cluster: a requester's stub reports the GPU memory its runner's emulated vLLM holds, high while it
is awake, the sleep residue after it sleeps, high again after it wakes, whether the sleep and wake
come straight to the runner or from the controller (Example 7's scale to zero and back).

The numbers are the simulator's (``Footprint`` of the recipe's ``--gpu-memory-utilization=0.8``
on the node's GPUs), so the test needs the local cluster. It compares differences, not totals:
sleepers of earlier tests may hold their residue on the same GPU.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from dpctl import api
from dpsim.emulator.gputable import load_gpu_table
from dpsim.emulator.ledger import Footprint
from e2e.recipe import Kubectl, ServerPatch, annotations_of, mkrs, name_of, pod_get, unique_name

from .conftest import Dpctlr, Gpus, skip_unless_local
from .steps import pair_ready, scale_to_zero_keeps_sleeper

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

# The recipe's server-patch (``ServerPatch.text``) runs vLLM with --gpu-memory-utilization=0.8.
RECIPE_GPU_MEMORY_UTILIZATION = 0.8
SPI_PORT = 8081  # mkrs's admin port
RUNNER_PORT = 8000  # the recipe's vLLM --port


def memory_mib(kubectl: Kubectl, req: Mapping[str, Any]) -> dict[str, int]:
    """What the requester's stub answers on the HEAD memory path (MiB per GPU UUID)."""
    used: dict[str, int] = json.loads(
        pod_get(kubectl, req, SPI_PORT, api.ACCELERATOR_MEMORY_PATH, direct=True)
    )
    return used


def post_runner(runner: Mapping[str, Any], path: str) -> None:
    """POST to the runner's inference server, as the controller does for sleep and wake."""
    url = f"http://{runner['status']['podIP']}:{RUNNER_PORT}{path}"
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=30) as resp:
        assert resp.status == 200, f"POST {path}: {resp.status}"


def test_memory_usage_follows_the_runner_through_sleep_and_wake(
    cluster: Any, kubectl: Kubectl, dpctlr: Dpctlr, gpu_map: dict[str, dict[str, int]], gpus: Gpus
) -> None:
    skip_unless_local(cluster, "GPU memory that follows the emulated vLLM")
    node = gpus.worker()
    gpus.leave_free(node, 1)  # so the scaled-up requester gets the same GPU, and the same runner
    footprint = Footprint.of(
        load_gpu_table(Path(cluster.state_dir), node).memory_mib, RECIPE_GPU_MEMORY_UTILIZATION
    )
    freed_by_sleep = footprint.awake_mib - footprint.asleep_mib
    rs = unique_name()
    kubectl.apply(mkrs(rs, ServerPatch(), node_selector={api.HOSTNAME_LABEL: node}))
    req, runner = pair_ready(kubectl, rs)
    [gpu] = annotations_of(req)[api.ACCELERATORS_ANNOTATION].split(",")

    awake = memory_mib(kubectl, req)
    assert list(awake) == [gpu], "the stub reports other GPUs than its container's"
    assert awake[gpu] >= footprint.awake_mib

    post_runner(runner, api.SLEEP_PATH)
    assert memory_mib(kubectl, req) == {gpu: awake[gpu] - freed_by_sleep}
    post_runner(runner, api.WAKE_UP_PATH)
    assert memory_mib(kubectl, req) == awake

    # The controller's sleep and wake: scale to zero (the runner sleeps, unbound), then back up
    # (the new requester lands on the same GPU and the controller wakes the sleeper for it).
    scale_to_zero_keeps_sleeper(kubectl, dpctlr, rs, req, runner)
    kubectl.scale(rs, 1)
    req2, runner2 = pair_ready(kubectl, rs)
    assert name_of(req2) != name_of(req) and name_of(runner2) == name_of(runner)
    assert memory_mib(kubectl, req2) == awake
