"""Loopback addresses: the node/pod formula, round-robin reuse, exhaustion and restore."""

from __future__ import annotations

import pytest

from dpsim.kubelet.ips import (
    POD_ADDRESSES_PER_NODE,
    IpAllocator,
    NoAddressError,
    node_index,
    node_ip,
    pod_ip,
)


def test_addresses_follow_the_formula() -> None:
    assert node_ip(0) == "127.64.0.1"
    assert node_ip(255) == "127.64.255.1"
    assert node_ip(256) == "127.65.0.1"
    assert pod_ip(1, 2) == "127.64.1.2"
    assert node_index("node-1", "node-") == 0
    assert node_index("gpu-300", "gpu-") == 299
    for bad in ("node-0", "node-01", "node-x", "other-1", "node-"):
        with pytest.raises(ValueError):
            node_index(bad, "node-")


def test_round_robin_so_a_freed_address_is_reused_last() -> None:
    ips = IpAllocator()
    ips.add_node("n", 0)
    a = ips.allocate("a", "n")
    b = ips.allocate("b", "n")
    assert (a, b) == ("127.64.0.2", "127.64.0.3")
    ips.release("a")
    assert ips.allocate("c", "n") == "127.64.0.4"
    assert ips.allocate("b", "n") == b  # idempotent


def test_exhaustion_then_wraparound_to_freed_addresses() -> None:
    ips = IpAllocator()
    ips.add_node("n", 3)
    got = {ips.allocate(f"p{i}", "n") for i in range(POD_ADDRESSES_PER_NODE)}
    assert len(got) == POD_ADDRESSES_PER_NODE
    assert all(ip.startswith("127.64.3.") for ip in got)
    with pytest.raises(NoAddressError):
        ips.allocate("one-more", "n")
    ips.release("p7")
    assert ips.allocate("one-more", "n") == "127.64.3.9"


def test_restore_takes_back_recorded_addresses_only_once() -> None:
    ips = IpAllocator()
    ips.add_node("n", 0)
    assert ips.restore("old", "n", "127.64.0.10")
    assert not ips.restore("other", "n", "127.64.0.10")
    assert not ips.restore("x", "n", "127.64.1.5")  # another node's subnet
    assert not ips.restore("x", "n", "127.64.0.1")  # the node's own address
    assert ips.allocate("new", "n") == "127.64.0.11"  # continues after the restored one
    ips.release_node("n")
    assert ips.in_use("n") == 0
    assert ips.ip_of("old") is None
