"""Loopback addresses for simulated nodes and pods, and the pod IP allocator.

Every process of the local cluster shares the host's network, so each node and each pod gets its
own address in 127.0.0.0/8 (all of which reaches the loopback interface on Linux without any set
up), and programs bind there instead of 0.0.0.0. Node ``i`` (0-based: ``node-1`` is 0) is
``127.(64 + i // 256).(i % 256).1``; its pods get ``.2`` to ``.254`` of the same /24. Several
local clusters on one machine each take a different block of 256 node indices
(``--address-block``), so their pods never share an address.

The allocator hands addresses out round-robin per node, like the host-local IPAM plugin, so a
freed address is the last one to be reused: a client still talking to a pod that just went away
is far less likely to reach its successor. The caller releases an address only once the old
pod's processes are gone. Pure: no I/O; persistence is ``allocations``' job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

FIRST_POD_HOST: Final = 2
LAST_POD_HOST: Final = 254
POD_ADDRESSES_PER_NODE: Final = LAST_POD_HOST - FIRST_POD_HOST + 1
# 127.64.0.0 up to 127.254.255.0: room for 191 * 256 nodes, far more than one process serves.
MAX_NODES: Final = (255 - 64) * 256
NODES_PER_BLOCK: Final = 256


class NoAddressError(RuntimeError):
    """Every pod address of the node is in use."""


def node_index(name: str, prefix: str) -> int:
    """The 0-based index of ``<prefix><k>`` (k >= 1); raises ValueError for any other name."""
    suffix = name[len(prefix) :] if name.startswith(prefix) else ""
    if not suffix.isdigit() or suffix.startswith("0") or not 1 <= int(suffix) <= MAX_NODES:
        raise ValueError(f"node name {name!r} is not {prefix}<n> with 1 <= n <= {MAX_NODES}")
    return int(suffix) - 1


def node_name(prefix: str, index: int) -> str:
    return f"{prefix}{index + 1}"


def _subnet(index: int) -> str:
    if not 0 <= index < MAX_NODES:
        raise ValueError(f"node index {index} out of range 0..{MAX_NODES - 1}")
    return f"127.{64 + index // 256}.{index % 256}"


def node_ip(index: int) -> str:
    return f"{_subnet(index)}.1"


def pod_ip(index: int, host: int) -> str:
    if not FIRST_POD_HOST <= host <= LAST_POD_HOST:
        raise ValueError(f"pod host number {host} out of range {FIRST_POD_HOST}..{LAST_POD_HOST}")
    return f"{_subnet(index)}.{host}"


@dataclass
class _NodePool:
    index: int
    # host number -> owning pod UID
    used: dict[int, str] = field(default_factory=dict)
    # The host number handed out last; the next search starts after it.
    last: int = FIRST_POD_HOST - 1


class IpAllocator:
    """Pod IPs per node, owned by pod UID. An allocation for a UID is idempotent."""

    def __init__(self) -> None:
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
            return pod_ip(pool.index, owned[1])
        for step in range(1, POD_ADDRESSES_PER_NODE + 1):
            host = FIRST_POD_HOST + (pool.last - FIRST_POD_HOST + step) % POD_ADDRESSES_PER_NODE
            if host not in pool.used:
                pool.used[host] = uid
                pool.last = host
                self._owners[uid] = (node, host)
                return pod_ip(pool.index, host)
        raise NoAddressError(f"node {node} has no free pod address ({POD_ADDRESSES_PER_NODE} in use)")

    def restore(self, uid: str, node: str, ip: str) -> bool:
        """Re-take an address recorded before a restart; False if it is not this node's or is taken."""
        pool = self._pools.get(node)
        if pool is None:
            return False
        prefix = _subnet(pool.index) + "."
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
        return pod_ip(self._pools[owned[0]].index, owned[1])

    def in_use(self, node: str) -> int:
        pool = self._pools.get(node)
        return len(pool.used) if pool else 0
