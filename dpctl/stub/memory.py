"""How the requester stub measures the GPU memory in use on its container's GPUs.

Sources, in order: NVML (the optional ``nvidia-ml-py`` package; skipped in a simulated container,
as in ``discovery``) and ``nvidia-smi --query-gpu=uuid,memory.used --format=csv,noheader,nounits``,
the command upstream's stub runs. Unlike the UUIDs, memory changes, so nothing is kept: every
request measures again.

The unit is MiB, as upstream's stub answers (nvidia-smi's ``memory.used`` without units) and as
upstream's controller reads it (its budget is in MiB). Upstream's SPI comment says bytes; its code
and its only client say MiB, and a stub must agree with the controllers that call it. NVML counts
bytes, so its answer is rounded down to whole MiB, as nvidia-smi rounds.

Nothing here blocks the event loop: NVML runs in a daemon thread, ``nvidia-smi`` as an asyncio
subprocess, each with a timeout. A hung NVML call is joined by the next request instead of being
started again, so at most one thread is ever stuck.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

from dpctl.gpuenv import SIM_NODE_ENV
from dpctl.stub.discovery import (
    DEFAULT_TIMEOUT_S,
    DiscoveryError,
    in_daemon_thread,
    nvidia_smi_failure,
    nvml_text,
    per_nvml_device,
    run_nvidia_smi,
)

NVIDIA_SMI_MEMORY_COMMAND: Final = (
    "nvidia-smi",
    "--query-gpu=uuid,memory.used",
    "--format=csv,noheader,nounits",
)
MIB: Final = 1 << 20


class MemorySource(Protocol):
    async def memory_used_mib(self) -> dict[str, int]:
        """GPU UUID -> MiB in use, for every GPU of the container; raises DiscoveryError."""
        ...


class NvmlMemory:
    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._call: asyncio.Future[dict[str, int]] | None = None

    async def memory_used_mib(self) -> dict[str, int]:
        try:
            # Imported here: the package is optional and absent from most stub images.
            pynvml = importlib.import_module("pynvml")
        except ImportError:
            raise DiscoveryError("NVML: not available (Python package nvidia-ml-py not installed)") from None
        # A finished call is never reused (memory changes); a running one is joined.
        if self._call is None or self._call.done():
            self._call = in_daemon_thread("nvml-memory", lambda: _nvml_memory(pynvml))
        try:
            return await asyncio.wait_for(asyncio.shield(self._call), self.timeout_s)
        except TimeoutError:
            raise DiscoveryError(f"NVML: no answer within {self.timeout_s:g} s") from None


def _nvml_memory(pynvml: Any) -> dict[str, int]:
    def used(handle: Any) -> tuple[str, int]:
        return nvml_text(pynvml.nvmlDeviceGetUUID(handle)), int(
            pynvml.nvmlDeviceGetMemoryInfo(handle).used // MIB
        )

    return dict(per_nvml_device(pynvml, used))


class NvidiaSmiMemory:
    def __init__(self, env: Mapping[str, str] = os.environ, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.env = env
        self.timeout_s = timeout_s

    async def memory_used_mib(self) -> dict[str, int]:
        returncode, out, err = await run_nvidia_smi(NVIDIA_SMI_MEMORY_COMMAND, self.env, self.timeout_s)
        return parse_nvidia_smi_memory(returncode, out, err)


def parse_nvidia_smi_memory(returncode: int | None, out: str, err: str) -> dict[str, int]:
    """The answer of ``NVIDIA_SMI_MEMORY_COMMAND``; DiscoveryError naming the first bad line.

    A GPU that cannot report (``[N/A]``, ``[Not Supported]``) fails the whole answer, as in
    upstream's stub: a guard that skipped it would wake a server onto memory nobody measured.
    """
    if returncode != 0:
        raise nvidia_smi_failure(returncode, out, err)
    used: dict[str, int] = {}
    for line in (raw.strip() for raw in out.splitlines()):
        if not line:
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2 or not parts[0]:
            raise DiscoveryError(f"nvidia-smi: got line {line!r}, expected 'UUID, MiB used'")
        uuid, mib = parts
        if not mib.isdigit():
            raise DiscoveryError(f"nvidia-smi: GPU {uuid} reports memory.used {mib!r}, not a number of MiB")
        used[uuid] = int(mib)
    if not used:
        raise DiscoveryError("nvidia-smi: listed no GPUs")
    return used


class FirstMemorySource:
    """Asks each source in turn; the first answer wins, and nothing is kept for the next request."""

    def __init__(self, sources: Sequence[MemorySource]) -> None:
        self._sources = sources

    async def memory_used_mib(self) -> dict[str, int]:
        reasons: list[str] = []
        for source in self._sources:
            try:
                return await source.memory_used_mib()
            except DiscoveryError as e:
                reasons.append(str(e))
        raise DiscoveryError("cannot measure GPU memory: " + "; ".join(reasons))


def default_memory(env: Mapping[str, str] = os.environ) -> FirstMemorySource:
    sources: list[MemorySource] = []
    if not env.get(SIM_NODE_ENV):
        sources.append(NvmlMemory())
    sources.append(NvidiaSmiMemory(env))
    return FirstMemorySource(sources)
