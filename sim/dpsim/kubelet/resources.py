"""What the pods of the simulated kubelet's nodes hold: GPUs and IPs, and their record on disk.

Owns the GPU allocator (``devices``), the IP allocator (``ips``) and ``allocations.json``
(``allocations``), kept in step: an admitted pod's allocation is recorded, a released one
dropped, and the file written at most once per :data:`ALLOC_SAVE_INTERVAL_S`. Re-taking what a
previous kubelet's pods held (the allocator half of ``recovery``) is here too; which pods and
what their records become is ``recovery``'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from dpctl.log import KV
from dpsim.kubelet.allocations import AllocationFile, PodAllocation
from dpsim.kubelet.devices import GpuAllocator, InsufficientGpusError
from dpsim.kubelet.ips import LOOPBACK, AddressPlan, IpAllocator
from dpsim.kubelet.recovery import Claim, Retaken

# At most one write of allocations.json per interval; a change inside it is written at its end.
ALLOC_SAVE_INTERVAL_S: Final = 1.0


class PodResources:
    def __init__(self, alloc_path: Path, log: KV, plan: AddressPlan = LOOPBACK) -> None:
        self.gpus = GpuAllocator()
        self.ips = IpAllocator(plan)
        self._log = log
        self._file = AllocationFile(alloc_path)
        self._allocs: dict[str, PodAllocation] = {}
        self._saved_at = -ALLOC_SAVE_INTERVAL_S
        self._save_later: asyncio.TimerHandle | None = None

    def add_node(self, name: str, uuids: Iterable[str], index: int) -> None:
        self.gpus.add_node(name, tuple(uuids))
        self.ips.add_node(name, index)

    def recorded(self, uid: str) -> PodAllocation | None:
        return self._allocs.get(uid)

    def record(self, uid: str, alloc: PodAllocation) -> None:
        self._allocs[uid] = alloc
        self._save()

    def release(self, uid: str) -> None:
        """Free the pod's GPUs and IP; only once its processes are gone."""
        self.gpus.release(uid)
        self.ips.release(uid)
        if self._allocs.pop(uid, None) is not None:
            self._save()

    def release_node(self, node: str, uids: Iterable[str]) -> None:
        """The node's machine died: everything its pods (``uids``) held is free."""
        for uid in uids:
            self._allocs.pop(uid, None)
        self.gpus.release_node(node)
        self.ips.release_node(node)
        self._save()

    # -- after a restart ----------------------------------------------------------------------

    def load_recorded(self) -> dict[str, PodAllocation]:
        """What allocations.json says; nothing when it cannot be read (the API still has the IPs)."""
        try:
            return self._file.load()
        except (OSError, ValueError) as e:
            self._log.warning("Cannot read allocations; relying on pod IPs in the API", error=str(e))
            return {}

    def restore(self, claims: Iterable[Claim]) -> None:
        """Before any sync: re-take what the live pods of a previous kubelet held, so that a new
        pod can never be given it. Allocations of pods that are gone are dropped."""
        for c in claims:
            if c.ip and not self.ips.restore(c.uid, c.node, c.ip):
                self._log.error("Pod IP recorded twice; keeping the first", pod=c.ref, ip=c.ip)
            if c.alloc and c.alloc.gpus and not self.gpus.restore(c.uid, c.node, c.alloc.gpus):
                self._log.error("GPUs recorded twice; keeping the first", pod=c.ref, gpus=c.alloc.gpus)
            if c.alloc:
                self._allocs[c.uid] = c.alloc
        self._save()

    def retake(
        self, uid: str, node: str, host_ip: str, ip: str | None, gpus: tuple[str, ...], wanted: int
    ) -> Retaken:
        """Take back a recovered pod's IP and recorded GPUs, or allocate the GPUs it asks for
        when none were recorded; says what could not be had (see ``recovery.recover``)."""
        ip_conflict = bool(ip) and ip != host_ip and not self.ips.restore(uid, node, str(ip))
        gpu_conflict = bool(gpus) and not self.gpus.restore(uid, node, gpus)
        if gpus or not wanted:
            return Retaken(ip_conflict, gpu_conflict)
        try:
            return Retaken(ip_conflict, gpu_conflict, fresh_gpus=self.gpus.allocate(uid, node, wanted))
        except InsufficientGpusError as e:
            return Retaken(ip_conflict, gpu_conflict, shortfall=str(e))

    # -- allocations.json ---------------------------------------------------------------------

    def _save(self) -> None:
        """Write allocations.json now, or, within ALLOC_SAVE_INTERVAL_S of the last write, once
        at the end of that interval: each write is the whole file, so a burst of thousands of
        admissions must not write it thousands of times. A lone change is written at once."""
        if self._save_later is not None:
            return  # a write is already due, and will include this change
        loop = asyncio.get_running_loop()
        wait = self._saved_at + ALLOC_SAVE_INTERVAL_S - loop.time()
        if wait > 0:
            self._save_later = loop.call_later(wait, self.flush)
            return
        self.flush()

    def flush(self) -> None:
        """Write allocations.json now (a deferred write is done here too)."""
        if self._save_later is not None:
            self._save_later.cancel()
            self._save_later = None
        self._saved_at = asyncio.get_running_loop().time()
        try:
            self._file.save(self._allocs)
        except OSError as e:
            self._log.error("Cannot save allocations", path=str(self._file.path), error=str(e))
