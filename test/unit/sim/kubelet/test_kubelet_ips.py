"""Node and pod addresses: the plans' formulas and blocks, round-robin reuse, exhaustion and restore."""

from __future__ import annotations

import ipaddress

import pytest

from dpsim.kubelet.ips import (
    LOOPBACK,
    NETNS,
    POD_ADDRESSES_PER_NODE,
    IpAllocator,
    NoAddressError,
    all_veth_host_addresses,
    node_index,
    veth_addresses,
)


def test_addresses_follow_the_formula() -> None:
    assert LOOPBACK.node_ip(0) == "127.64.0.1"
    assert LOOPBACK.node_ip(255) == "127.64.255.1"
    assert LOOPBACK.node_ip(256) == "127.65.0.1"
    assert LOOPBACK.pod_ip(1, 2) == "127.64.1.2"
    assert node_index("node-1", "node-") == 0
    assert node_index("gpu-300", "gpu-") == 299
    for bad in ("node-0", "node-01", "node-x", "other-1", "node-"):
        with pytest.raises(ValueError):
            node_index(bad, "node-")


def test_netns_plan_stays_in_the_benchmarking_range_and_off_the_veth_subnet() -> None:
    assert (NETNS.node_ip(0), NETNS.node_ip(256), NETNS.pod_ip(NETNS.max_nodes - 1, 254)) == (
        "198.18.0.1",
        "198.19.0.1",
        "198.19.191.254",
    )
    with pytest.raises(ValueError):
        NETNS.node_ip(NETNS.max_nodes)
    bench = ipaddress.IPv4Network("198.18.0.0/15")
    blocks = [NETNS.block_network(b) for b in range(NETNS.blocks)]
    assert [str(n) for n in blocks[:2]] == ["198.18.0.0/18", "198.18.64.0/18"]
    assert all(n.subnet_of(bench) for n in blocks)
    assert not any(a.overlaps(b) for i, a in enumerate(blocks) for b in blocks[i + 1 :])
    links = [ipaddress.IPv4Address(a) for b in range(NETNS.blocks) for a in veth_addresses(b)]
    assert veth_addresses(1) == ("198.19.255.5", "198.19.255.6")
    assert len(set(links)) == len(links)
    assert all(a in bench and not any(a in n for n in blocks) for a in links)
    assert all_veth_host_addresses()[:2] == ("198.19.255.1", "198.19.255.5")
    with pytest.raises(ValueError):
        veth_addresses(NETNS.blocks)


def test_a_block_holds_its_nodes_subnets() -> None:
    assert str(LOOPBACK.block_network(1)) == "127.65.0.0/16"
    index = 1 * NETNS.nodes_per_block + NETNS.nodes_per_block - 1
    assert ipaddress.IPv4Address(NETNS.pod_ip(index, 254)) in NETNS.block_network(1)
    assert ipaddress.IPv4Address(NETNS.node_ip(index + 1)) not in NETNS.block_network(1)


def test_the_allocator_hands_out_its_plans_addresses() -> None:
    ips = IpAllocator(NETNS)
    ips.add_node("n", 65)
    assert ips.allocate("a", "n") == "198.18.65.2"
    assert ips.restore("b", "n", "198.18.65.9")
    assert not ips.restore("c", "n", "127.64.65.10")


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
