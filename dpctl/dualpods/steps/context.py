"""What every reconcile step reads and acts through, passed as one :class:`Context`.

The steps read only the informer caches (through :class:`Cache`), remember only what
:class:`~dpctl.dualpods.state.Memory` holds, and act only through the
:class:`~dpctl.dualpods.ports.Ports`, so tests drive them with plain dicts and fakes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from dpctl import log
from dpctl.dualpods import gpumap
from dpctl.dualpods.latency import Stamps, Step
from dpctl.dualpods.podview import RawObj
from dpctl.dualpods.ports import Ports
from dpctl.dualpods.state import Memory

# How often to look again while something we cannot watch settles: a GPU still held by a
# departing server, or sleeper-limit victims still terminating.
SETTLE_POLL_S = 0.5


class Cache(Protocol):
    """The informers' view, as the reconciler needs it."""

    def pod_by_uid(self, uid: str) -> RawObj | None: ...
    def pod(self, name: str) -> RawObj | None: ...
    def providers_bound_to(self, requester_uid: str) -> Sequence[RawObj]:
        """The runners and launchers bound to that requester (one, unless a race made more)."""
        ...

    def runners_with_nominal(self, nominal: str) -> Sequence[RawObj]: ...
    def runners_on_gpu(self, node: str, index: int) -> Sequence[RawObj]: ...
    def node(self, name: str) -> RawObj | None: ...
    def gpu_map(self) -> gpumap.GpuMap | None: ...
    def requesters_on_node(self, node: str) -> Sequence[RawObj]: ...
    # The launcher path's.
    def launcher_path_on(self) -> bool: ...
    def launchers_with_config_hash(self, config_hash: str) -> Sequence[RawObj]: ...
    def launchers_on_node(self, node: str) -> Sequence[RawObj]: ...
    def launchers(self) -> Sequence[RawObj]: ...
    def inference_server_config(self, name: str) -> RawObj | None: ...
    def launcher_config(self, name: str) -> RawObj | None: ...


@dataclass(frozen=True)
class Settings:
    sleeper_limit: int = 2
    # The memory guard (upstream's --debug-accelerator-memory): before /wake_up, each of the
    # runner's GPUs must have at most this many bytes in use. None: no guard.
    wake_memory_budget: int | None = None
    # A launcher instance that does not answer /is_sleeping this long after it was created is
    # deleted, with a status error (upstream waits forever, its #444).
    instance_start_timeout_s: float = 900.0


@dataclass
class Context:
    cache: Cache
    ports: Ports
    settings: Settings
    # When the events that enable each step arrived (the controller's handlers mark them).
    stamps: Stamps = field(default_factory=Stamps)
    memory: Memory = field(default_factory=Memory)
    log: log.KV = field(default_factory=lambda: log.get("dualpods"))
    # One launcher choice at a time per Node (launcher contract §4: a Node's items serially):
    # concurrent choices all took the same warm launcher, and all but one lost the bind.
    node_locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def node_lock(self, node: str) -> asyncio.Lock:
        return self.node_locks.setdefault(node, asyncio.Lock())

    def sending(self, step: Step, uid: str) -> None:
        """About to send ``step``'s call: report how long after its enabling event (once)."""
        elapsed = self.stamps.take(step, uid)
        if elapsed is not None:
            self.ports.report.added_latency(step, elapsed)
