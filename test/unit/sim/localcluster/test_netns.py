"""The network namespace's names, addresses and commands (pure; the e2e tests make real ones)."""

from __future__ import annotations

import os
import shutil

import pytest

from dpsim.localcluster import netns


def test_names_fit_an_interface_name_and_derive_from_the_block() -> None:
    net = netns.PodNetwork(block=6)
    assert (net.name, net.host_if, net.ns_if) == ("dpctl-b6", "dpctl-b6h", "dpctl-b6n")
    assert all(len(n) <= 15 for n in (net.host_if, net.ns_if))  # IFNAMSIZ - 1
    assert str(net.path) == "/run/netns/dpctl-b6"
    assert (net.host_address, net.ns_address) == ("198.19.255.25", "198.19.255.26")


def test_setup_routes_every_block_into_the_namespace_and_nothing_else() -> None:
    net = netns.PodNetwork(block=1, blocks=2)
    assert net.networks() == ["198.18.64.0/18", "198.18.128.0/18"]
    cmds = [" ".join(c) for c in net.setup_commands()]
    assert cmds[0] == "ip netns add dpctl-b1"
    assert "ip link add dpctl-b1h type veth peer name dpctl-b1n netns dpctl-b1" in cmds
    assert "ip addr add 198.19.255.5/30 dev dpctl-b1h" in cmds
    assert "ip -n dpctl-b1 addr add 198.19.255.6/30 dev dpctl-b1n" in cmds
    for block in net.networks():
        assert f"ip -n dpctl-b1 route add local {block} dev lo" in cmds
        assert f"ip route add {block} via 198.19.255.6 dev dpctl-b1h" in cmds
    # No default route inside: from the namespace only the host's end of the pair is reachable.
    assert not any("default" in c for c in cmds)


def test_teardown_removes_the_pair_and_the_namespace() -> None:
    assert netns.PodNetwork(block=0).teardown_commands() == [
        ["ip", "link", "del", "dpctl-b0h"],
        ["ip", "netns", "del", "dpctl-b0"],
    ]


def test_enter_runs_the_program_itself_in_the_namespace() -> None:
    assert netns.PodNetwork(block=0).enter(["python", "-m", "x"]) == [
        "nsenter",
        "--net=/run/netns/dpctl-b0",
        "--",
        "python",
        "-m",
        "x",
    ]


def test_unavailable_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert netns.unavailable() == "not running as root"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == "ip" else f"/usr/bin/{tool}")
    assert netns.unavailable() == "ip not found"
