"""The local cluster's own network namespace, where its pods' addresses are ones Kubernetes accepts.

On loopback (``dpsim.kubelet.ips.LOOPBACK``) Services have no endpoints: EndpointSlice
validation refuses 127.x. So where it can (root, ``ip`` and ``nsenter`` present), the cluster
that holds address block ``b`` makes:

- a namespace ``dpctl-b<b>`` in which the block's /18 of 198.18.0.0/15 (``ips.NETNS``) is a local
  route on ``lo``: every node and pod address is bindable there without configuring each one;
- a veth pair ``dpctl-b<b>h`` (host) / ``dpctl-b<b>n`` (namespace) with a /30 of 198.19.255.0/24
  (``ips.veth_addresses``), and on the host a route of the block's /18 through it. The
  namespace has no default route: from inside, only the host's end of the pair is reachable.

Who reaches what: the API server listens on the host's end of the pair, so host processes
(control plane, tests, a controller run by a test) and the namespace's (the kubelet, its pods)
both reach it there. The kubelet runs inside (``nsenter --net``), so its node endpoints, its
pods' processes, hollow servers' sockets and podman's host-network containers all are in the
namespace; host processes reach them by the route. Nothing is bound to an address outside the
machine, and no address of the range leaves it (no forwarding, no default route).

Names and addresses derive from the block, whose lock (``cluster.AddressBlocks``) the caller
holds, so what a killed cluster left behind under that name is removed before set-up. Owns the
commands (pure, unit-tested) and running them; knows nothing about the cluster's processes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dpsim.kubelet.ips import NETNS, veth_addresses

IP: Final = "ip"
NSENTER: Final = "nsenter"
NETNS_DIR: Final = Path("/run/netns")
VETH_PREFIX: Final = 30
COMMAND_TIMEOUT_S: Final = 10.0


class NetnsError(RuntimeError):
    """The namespace could not be made; the message says which command failed and why."""


@dataclass(frozen=True)
class PodNetwork:
    """One cluster's namespace: its name, veth ends and addresses, and the block it routes."""

    block: int
    blocks: int = 1

    @property
    def name(self) -> str:
        return f"dpctl-b{self.block}"

    @property
    def host_if(self) -> str:
        return f"{self.name}h"

    @property
    def ns_if(self) -> str:
        return f"{self.name}n"

    @property
    def host_address(self) -> str:
        """The host's end of the pair: where the API server listens."""
        return veth_addresses(self.block)[0]

    @property
    def ns_address(self) -> str:
        return veth_addresses(self.block)[1]

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.name

    def networks(self) -> list[str]:
        return [str(NETNS.block_network(b)) for b in range(self.block, self.block + self.blocks)]

    def enter(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace. nsenter execs it (no fork for a network namespace
        alone), so the pid, and a PR_SET_PDEATHSIG set before the exec, stay the program's."""
        return [NSENTER, f"--net={self.path}", "--", *argv]

    def setup_commands(self) -> list[list[str]]:
        ns = ["-n", self.name]
        cmds = [
            [IP, "netns", "add", self.name],
            [IP, "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if, "netns", self.name],
            [IP, "addr", "add", f"{self.host_address}/{VETH_PREFIX}", "dev", self.host_if],
            [IP, "link", "set", self.host_if, "up"],
            [IP, *ns, "link", "set", "lo", "up"],
            [IP, *ns, "addr", "add", f"{self.ns_address}/{VETH_PREFIX}", "dev", self.ns_if],
            [IP, *ns, "link", "set", self.ns_if, "up"],
        ]
        for net in self.networks():
            cmds.append([IP, *ns, "route", "add", "local", net, "dev", "lo"])
            cmds.append([IP, "route", "add", net, "via", self.ns_address, "dev", self.host_if])
        return cmds

    def teardown_commands(self) -> list[list[str]]:
        """Deleting either end of a veth pair deletes both, and the host's routes through it."""
        return [[IP, "link", "del", self.host_if], [IP, "netns", "del", self.name]]


def unavailable() -> str | None:
    """Why no namespace can be made here, or None."""
    if os.geteuid() != 0:
        return "not running as root"
    missing = [tool for tool in (IP, NSENTER) if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found"
    return None


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)


def create(net: PodNetwork) -> None:
    """Remove what a killed cluster left under these names, then make the namespace; on failure
    nothing is left and NetnsError says why."""
    remove(net)
    for argv in net.setup_commands():
        done = _run(argv)
        if done.returncode != 0:
            remove(net)
            raise NetnsError(f"{' '.join(argv)}: {done.stderr.strip() or f'exit {done.returncode}'}")


def remove(net: PodNetwork) -> None:
    """Idempotent: either part may be gone already."""
    for argv in net.teardown_commands():
        _run(argv)
