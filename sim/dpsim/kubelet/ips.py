"""Addresses for simulated nodes and pods, and the pod IP allocator.

Each node and each pod gets its own address, and programs bind there instead of 0.0.0.0. Node
``i`` (0-based: ``node-1`` is 0) owns the ``i``-th /24 of its :class:`AddressPlan`: the node is
``.1``, its pods get ``.2`` to ``.254``. Two plans:

- :data:`LOOPBACK` (127.64.0.0 and up): every process shares the host's network, and all of
  127.0.0.0/8 reaches the loopback interface on Linux without any set up. Kubernetes refuses
  loopback addresses in EndpointSlices, so Services have no endpoints.
- :data:`NETNS` (198.18.0.0/15, the range set aside for benchmarking networks, RFC 2544): the
  kubelet and its pods run in a network namespace of the local cluster's own where that range
  is local, and the host routes it there over a veth pair (``dpsim.localcluster.netns``).
  Kubernetes accepts these addresses, so Services have endpoints. The veth pair's own /30s come
  from the range's last /24, which no node uses.

Several local clusters on one machine each take a different block of ``nodes_per_block`` node
indices (``--address-block``), so their pods never share an address.

The allocator hands addresses out round-robin per node, like the host-local IPAM plugin, so a
freed address is the last one to be reused: a client still talking to a pod that just went away
is far less likely to reach its successor. The caller releases an address only once the old
pod's processes are gone. Pure: no I/O; persistence is ``allocations``' job.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Final

FIRST_POD_HOST: Final = 2
LAST_POD_HOST: Final = 254
POD_ADDRESSES_PER_NODE: Final = LAST_POD_HOST - FIRST_POD_HOST + 1


@dataclass(frozen=True)
class AddressPlan:
    """Where node subnets come from: node index ``i`` owns the /24 at ``first + 256 * i``."""

    name: str
    first: ipaddress.IPv4Address
    max_nodes: int
    nodes_per_block: int

    @property
    def blocks(self) -> int:
        return self.max_nodes // self.nodes_per_block

    def subnet(self, index: int) -> str:
        """``a.b.c`` of node ``index``'s /24."""
        if not 0 <= index < self.max_nodes:
            raise ValueError(f"node index {index} out of range 0..{self.max_nodes - 1}")
        return str(self.first + 256 * index).rsplit(".", 1)[0]

    def node_ip(self, index: int) -> str:
        return f"{self.subnet(index)}.1"

    def pod_ip(self, index: int, host: int) -> str:
        if not FIRST_POD_HOST <= host <= LAST_POD_HOST:
            raise ValueError(f"pod host number {host} out of range {FIRST_POD_HOST}..{LAST_POD_HOST}")
        return f"{self.subnet(index)}.{host}"

    def block_network(self, block: int) -> ipaddress.IPv4Network:
        """Every address of the nodes of ``block`` (and their pods)."""
        if not 0 <= block < self.blocks:
            raise ValueError(f"address block {block} out of range 0..{self.blocks - 1}")
        prefix = 24 - (self.nodes_per_block - 1).bit_length()  # nodes_per_block is a power of 2
        return ipaddress.IPv4Network((self.first + 256 * self.nodes_per_block * block, prefix))


# 127.64.0.0 up to 127.254.255.0: room for 191 * 256 nodes, far more than one process serves.
LOOPBACK: Final = AddressPlan("loopback", ipaddress.IPv4Address("127.64.0.0"), (255 - 64) * 256, 256)
# 7 blocks of 64 nodes (a /18 each): 198.18.0.0 up to 198.19.191.255. 198.19.255.0/24 holds the
# veth pairs' /30s (one per block, see :func:`veth_addresses`).
NETNS: Final = AddressPlan("netns", ipaddress.IPv4Address("198.18.0.0"), 7 * 64, 64)
PLANS: Final = {plan.name: plan for plan in (LOOPBACK, NETNS)}
_VETH_SUBNET: Final = ipaddress.IPv4Network("198.19.255.0/24")


def veth_addresses(block: int) -> tuple[str, str]:
    """The host's and the namespace's end of the veth pair of the cluster holding ``block``."""
    NETNS.block_network(block)  # range check
    base = _VETH_SUBNET.network_address + 4 * block
    return str(base + 1), str(base + 2)


def all_veth_host_addresses() -> tuple[str, ...]:
    """Where any local cluster's API server may listen (the serving certificate names them all)."""
    return tuple(veth_addresses(b)[0] for b in range(NETNS.blocks))


class NoAddressError(RuntimeError):
    """Every pod address of the node is in use."""


def node_index(name: str, prefix: str) -> int:
    """The 0-based index of ``<prefix><k>`` (k >= 1); raises ValueError for any other name."""
    suffix = name[len(prefix) :] if name.startswith(prefix) else ""
    most = LOOPBACK.max_nodes  # the larger plan; a plan checks its own range on use
    if not suffix.isdigit() or suffix.startswith("0") or not 1 <= int(suffix) <= most:
        raise ValueError(f"node name {name!r} is not {prefix}<n> with 1 <= n <= {most}")
    return int(suffix) - 1


def node_name(prefix: str, index: int) -> str:
    return f"{prefix}{index + 1}"


@dataclass
class _NodePool:
    index: int
    # host number -> owning pod UID
    used: dict[int, str] = field(default_factory=dict)
    # The host number handed out last; the next search starts after it.
    last: int = FIRST_POD_HOST - 1


class IpAllocator:
    """Pod IPs per node, owned by pod UID. An allocation for a UID is idempotent."""

    def __init__(self, plan: AddressPlan = LOOPBACK) -> None:
        self.plan = plan
        self._pools: dict[str, _NodePool] = {}
        self._owners: dict[str, tuple[str, int]] = {}  # uid -> (node, host number)

    def add_node(self, node: str, index: int) -> None:
        self._pools.setdefault(node, _NodePool(index))

    def allocate(self, uid: str, node: str) -> str:
        pool = self._pools[node]
        owned = self._owners.get(uid)
        if owned is not None:
            if owned[0] != node:
                raise ValueError(f"pod {uid} already has an address on node {owned[0]}")
            return self.plan.pod_ip(pool.index, owned[1])
        for step in range(1, POD_ADDRESSES_PER_NODE + 1):
            host = FIRST_POD_HOST + (pool.last - FIRST_POD_HOST + step) % POD_ADDRESSES_PER_NODE
            if host not in pool.used:
                pool.used[host] = uid
                pool.last = host
                self._owners[uid] = (node, host)
                return self.plan.pod_ip(pool.index, host)
        raise NoAddressError(f"node {node} has no free pod address ({POD_ADDRESSES_PER_NODE} in use)")

    def restore(self, uid: str, node: str, ip: str) -> bool:
        """Re-take an address recorded before a restart; False if it is not this node's or is taken."""
        pool = self._pools.get(node)
        if pool is None:
            return False
        prefix = self.plan.subnet(pool.index) + "."
        if not ip.startswith(prefix) or not ip[len(prefix) :].isdigit():
            return False
        host = int(ip[len(prefix) :])
        if not FIRST_POD_HOST <= host <= LAST_POD_HOST or pool.used.get(host, uid) != uid:
            return False
        if uid in self._owners and self._owners[uid] != (node, host):
            return False
        pool.used[host] = uid
        pool.last = max(pool.last, host)
        self._owners[uid] = (node, host)
        return True

    def release(self, uid: str) -> None:
        owned = self._owners.pop(uid, None)
        if owned is not None:
            node, host = owned
            pool = self._pools.get(node)
            if pool is not None and pool.used.get(host) == uid:
                del pool.used[host]

    def release_node(self, node: str) -> None:
        """Forget every address of a node (the machine died)."""
        pool = self._pools.get(node)
        if pool is None:
            return
        for uid in list(pool.used.values()):
            self._owners.pop(uid, None)
        pool.used.clear()

    def ip_of(self, uid: str) -> str | None:
        owned = self._owners.get(uid)
        if owned is None:
            return None
        return self.plan.pod_ip(self._pools[owned[0]].index, owned[1])

    def in_use(self, node: str) -> int:
        pool = self._pools.get(node)
        return len(pool.used) if pool else 0
