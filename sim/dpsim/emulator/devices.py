"""Which simulated GPUs an emulated vLLM runs on, and its seat in the GPU occupancy ledger.

The GPUs are resolved as CUDA resolves them. The container sees the GPUs that
``NVIDIA_VISIBLE_DEVICES`` grants (UUIDs, node indices, or ``all``), numbered 0..n-1 in PCI order.
``CUDA_VISIBLE_DEVICES`` then picks among those by that number or by UUID (prefix); CUDA stops at
the first entry that names no GPU and ignores the rest. No GPU at all is fatal, as it is for vLLM.
The controller sets ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so its indices mean nvidia-smi's; without it
CUDA orders by speed, which for identical simulated GPUs we take to be PCI order, with a warning.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field

from dpctl.gpuenv import NVIDIA_VISIBLE_DEVICES_ENV, SIM_NODE_ENV, is_gpu_uuid, parse_visible_devices
from dpsim.emulator.gputable import Gpu, GpuTable, UnknownDeviceError, load_gpu_table
from dpsim.emulator.ledger import Footprint, GpuLedger, Holder, Ledger, Violation
from dpsim.simenv import (
    CUDA_DEVICE_ORDER_ENV,
    CUDA_VISIBLE_DEVICES_ENV,
    PCI_BUS_ID_ORDER,
    STATE_DIR_ENV,
    ledger_path,
    state_dir,
)


class DeviceError(RuntimeError):
    """The emulated server cannot run on its GPUs; the message reads like the real failure."""


@dataclass(frozen=True)
class CudaDevices:
    gpus: tuple[Gpu, ...]
    warnings: tuple[str, ...]


def resolve_cuda_devices(table: GpuTable, env: Mapping[str, str]) -> CudaDevices:
    try:
        container = table.visible(parse_visible_devices(env.get(NVIDIA_VISIBLE_DEVICES_ENV)))
    except UnknownDeviceError as e:
        raise DeviceError(f"{NVIDIA_VISIBLE_DEVICES_ENV}: {e}") from e
    value = env.get(CUDA_VISIBLE_DEVICES_ENV)
    warnings: list[str] = []
    chosen = container
    if value is not None:
        if env.get(CUDA_DEVICE_ORDER_ENV) != PCI_BUS_ID_ORDER:
            warnings.append(
                f"{CUDA_DEVICE_ORDER_ENV} is not {PCI_BUS_ID_ORDER}, so CUDA numbers GPUs fastest first;"
                " the simulated GPUs are identical, so that is PCI order here"
            )
        chosen, stopped_at = _select(container, value)
        if stopped_at is not None:
            warnings.append(
                f"{CUDA_VISIBLE_DEVICES_ENV}={value!r}: entry {stopped_at!r} names no GPU of this"
                f" container (it has {len(container)}), so CUDA ignores it and every entry after it"
            )
    if not chosen:
        raise DeviceError("RuntimeError: No CUDA GPUs are available")
    return CudaDevices(chosen, tuple(warnings))


def _select(container: tuple[Gpu, ...], value: str) -> tuple[tuple[Gpu, ...], str | None]:
    """The GPUs ``value`` picks, and the entry CUDA stopped at (None if it read them all)."""
    chosen: list[Gpu] = []
    for entry in (e.strip() for e in value.split(",")):
        gpu = _match(container, entry)
        if gpu is None or gpu in chosen:
            return tuple(chosen), entry
        chosen.append(gpu)
    return tuple(chosen), None


def _match(container: tuple[Gpu, ...], entry: str) -> Gpu | None:
    if entry.isdigit():
        return container[int(entry)] if int(entry) < len(container) else None
    matches = [g for g in container if is_gpu_uuid(entry) and g.uuid.startswith(entry)]
    return matches[0] if len(matches) == 1 else None


def cuda_oom_message(violations: list[Violation]) -> str:
    """What torch says when a GPU is full, naming who fills it (for the reader of the runner's log)."""
    holders = "; ".join(f"{v.gpu} is held awake by {v.holder}" for v in violations)
    return (
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB."
        f" Another inference server is awake on this GPU: {holders}"
    )


@dataclass(frozen=True)
class GpuSeat:
    """An emulated server's place on its simulated GPUs; every change is reported to the ledger,
    with the memory it uses on each GPU (``footprint``) and how long memory it gives up stays in
    use (``release_delay_s``).

    The ledger may block briefly (a sqlite lock), so calls run in a worker thread.
    """

    ledger: GpuLedger
    holder: Holder
    gpus: tuple[str, ...]
    refuse_conflict: bool
    footprint: Footprint = field(default_factory=Footprint)
    release_delay_s: float = 0.0

    async def start(self) -> list[Violation]:
        return await asyncio.to_thread(
            self.ledger.start,
            self.holder,
            self.gpus,
            refuse_conflict=self.refuse_conflict,
            mib=self.footprint.awake_mib,
        )

    async def wake(self) -> list[Violation]:
        return await asyncio.to_thread(
            self.ledger.wake, self.holder, refuse_conflict=self.refuse_conflict, mib=self.footprint.awake_mib
        )

    async def sleep(self) -> None:
        await asyncio.to_thread(
            self.ledger.sleep,
            self.holder,
            mib=self.footprint.asleep_mib,
            release_delay_s=self.release_delay_s,
        )

    async def exit(self) -> None:
        await asyncio.to_thread(self.ledger.exit, self.holder, release_delay_s=self.release_delay_s)


@dataclass(frozen=True)
class Placement:
    seat: GpuSeat
    warnings: tuple[str, ...]


def placement_from_env(
    env: Mapping[str, str],
    *,
    refuse_conflict: bool,
    gpu_memory_utilization: float,
    release_delay_s: float,
) -> Placement | None:
    """The seat of a server run by the simulated kubelet; None outside the local cluster.

    Raises DeviceError when the simulated node or its GPUs cannot be used.
    """
    state = state_dir(env)
    if state is None:
        return None
    node = env.get(SIM_NODE_ENV)
    if not node:
        raise DeviceError(f"{STATE_DIR_ENV} is set but {SIM_NODE_ENV} is not: cannot tell which node's GPUs")
    try:
        table = load_gpu_table(state, node)
    except (OSError, ValueError) as e:
        raise DeviceError(f"cannot read the GPU table of node {node}: {e}") from e
    devices = resolve_cuda_devices(table, env)
    try:
        ledger = Ledger(ledger_path(state))
    except (OSError, sqlite3.Error) as e:
        raise DeviceError(f"cannot open the GPU ledger {ledger_path(state)}: {e}") from e
    seat = GpuSeat(
        ledger=ledger,
        holder=Holder.from_env(env),
        gpus=tuple(g.uuid for g in devices.gpus),
        refuse_conflict=refuse_conflict,
        footprint=Footprint.of(table.memory_mib, gpu_memory_utilization),
        release_delay_s=release_delay_s,
    )
    return Placement(seat, devices.warnings)
