"""The local cluster's network namespace as a crash leaves it: the next start on that block
removes what was left and makes its own, and a stop leaves nothing behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dpsim.kubelet.ips import NETNS
from dpsim.localcluster import netns
from dpsim.localcluster.bins import Bins
from dpsim.localcluster.cluster import AddressBlocks, LocalCluster

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(netns.unavailable() is not None, reason="no namespace here"),
]


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True, timeout=10).stdout


def test_a_namespace_left_by_a_killed_cluster_is_replaced_and_a_stop_removes_it(
    bins: Bins, tmp_path: Path
) -> None:
    # What a SIGKILLed cluster leaves: its namespace, veth pair and route, its block's lock gone.
    blocks = AddressBlocks.reserve(1, NETNS)
    stale = netns.PodNetwork(blocks.first)
    netns.create(stale)
    stale_ns = stale.path.stat().st_ino  # the namespace's own inode (nsfs)
    blocks.release()

    cluster = LocalCluster(tmp_path / "cluster", bins, nodes=1, gpus=1, network="netns")
    try:
        cluster.start()
        assert cluster.network == stale  # the lowest free block: the one the crash left
        assert cluster.control_plane.server.startswith(f"https://{stale.host_address}:")
        assert f"{NETNS.block_network(stale.block)} via {stale.ns_address}" in ip("route")
        assert stale.path.stat().st_ino != stale_ns  # made anew, not adopted
    finally:
        cluster.stop()
    assert stale.name not in ip("netns", "list")
    assert stale.host_if not in ip("link")
    assert str(NETNS.block_network(stale.block)) not in ip("route")
