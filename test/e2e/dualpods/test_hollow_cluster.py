"""The recipe's Example 1 (and 7) on a *hollow* local cluster, with ``dpctl controller`` as a process.

The simulated kubelet runs with ``--hollow``: requester stubs and vLLM emulators are served inside
it instead of one process per container. The controller cannot tell: this module runs the very
flow of ``test_controller_process.test_example_1_cycle_and_example_7_sleep_and_wake`` against such
a cluster (its own, started here; the GPU ledger in the cluster's sqlite file, so the flow's
invariant check reads it as usual).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dpsim.kubelet import ctl
from dpsim.localcluster.bins import Bins
from dpsim.localcluster.cluster import LocalCluster
from e2e.conftest import ClusterHandle

from .test_controller_process import test_example_1_cycle_and_example_7_sleep_and_wake as example_1

pytestmark = pytest.mark.e2e

HOLLOW_ARGS = ["--hollow", "--hollow-ledger=sqlite"]


@pytest.fixture(scope="module")
def cluster(bins: Bins, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    """A hollow local cluster of its own (this module's tests only), torn down after them."""
    if os.environ.get("KUBECONFIG") and os.environ.get("DPCTL_E2E_REUSE") == "1":
        pytest.skip("a hollow cluster is started here; not with DPCTL_E2E_REUSE")
    local = LocalCluster(
        tmp_path_factory.mktemp("hollow-cluster"), bins, nodes=2, gpus=4, kubelet_extra_args=HOLLOW_ARGS
    )
    try:
        local.start()
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("KUBECONFIG", str(local.kubeconfig))
            yield ClusterHandle(
                local.kubeconfig,
                str(bins.kubectl),
                str(bins.helm) if bins.helm else None,
                local.state_dir,
                True,
                local,
            )
    finally:
        local.stop()


def test_example_1_and_7_on_a_hollow_cluster(
    cluster: ClusterHandle,
    kubectl: Any,
    gpu_map: dict[str, dict[str, int]],
    ledger: Any,
    start_controller: Any,
) -> None:
    example_1(cluster, kubectl, gpu_map, ledger, start_controller)
    # It was hollow: no process of the cluster's state dir serves a stub or an emulator.
    assert cluster.state_dir is not None
    assert _container_processes(cluster.state_dir) == []
    # The one runner holds its GPU awake, in the cluster's sqlite file as asked; the kubelet agrees.
    assert [h.awake for h in ledger.holds()] == [True]
    assert ctl.call(cluster.state_dir, "GET", "/ledger") == (200, {"holds": 1, "awake": 1, "violations": []})


def _container_processes(state_dir: Path) -> list[int]:
    """Pids of processes started as containers of this cluster (they carry its state dir)."""
    wanted = f"DPCTL_SIM_STATE={state_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found
