"""How the requester stub finds the UUIDs of the GPUs its container was given.

Sources, in order: NVML (the optional ``nvidia-ml-py`` package), ``nvidia-smi``, and
``NVIDIA_VISIBLE_DEVICES`` when it lists UUIDs (a container without the NVIDIA tools still has the
variable the device plugin set). The first source that names at least one GPU wins and its answer
is kept: a container's GPUs never change. A failure is never kept, so a transient ``nvidia-smi``
hiccup costs one retry by the controller instead of a stub that fails forever (upstream's mistake).

Nothing here blocks the event loop: NVML runs in a daemon thread, ``nvidia-smi`` as an asyncio
subprocess, each with a timeout.

In a simulated container (``DPCTL_SIM_NODE`` set) NVML is skipped: it would report the host's
real GPUs, while the container's simulated ones come from the ``nvidia-smi`` shim on its PATH.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from typing import Any, Final, Protocol, TypeVar

from dpctl.gpuenv import NVIDIA_VISIBLE_DEVICES_ENV, SIM_NODE_ENV, is_gpu_uuid, parse_visible_devices

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S: Final = 5.0
NVIDIA_SMI_COMMAND: Final = ("nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader")
_T = TypeVar("_T")


class DiscoveryError(Exception):
    """A query of the container's GPUs (which ones, or their memory) failed; the message says why,
    in words a user can act on."""


class GpuDiscovery(Protocol):
    async def discover(self) -> list[str]:
        """The GPU UUIDs, at least one; raises DiscoveryError."""
        ...


class NvmlDiscovery:
    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        # At most one NVML call at a time: a retry after a timeout joins the hung call, and
        # its answer counts even if it came after every caller stopped waiting.
        self._call: asyncio.Future[list[str]] | None = None

    async def discover(self) -> list[str]:
        try:
            # Imported here: the package is optional and absent from most stub images.
            pynvml = importlib.import_module("pynvml")
        except ImportError:
            raise DiscoveryError("NVML: not available (Python package nvidia-ml-py not installed)") from None
        if self._call is None or failed(self._call):
            self._call = in_daemon_thread("nvml", lambda: _nvml_uuids(pynvml))
        try:
            return await asyncio.wait_for(asyncio.shield(self._call), self.timeout_s)
        except TimeoutError:
            raise DiscoveryError(f"NVML: no answer within {self.timeout_s:g} s") from None


def in_daemon_thread(name: str, call: Callable[[], _T]) -> asyncio.Future[_T]:
    """Like asyncio.to_thread, but a call that never returns cannot hold up the process's exit.

    asyncio.run waits for the default executor's threads at exit, so a hung NVML call there
    would turn SIGTERM into a hang.
    """
    outcome: concurrent.futures.Future[_T] = concurrent.futures.Future()

    def body() -> None:
        try:
            outcome.set_result(call())
        except BaseException as e:
            outcome.set_exception(e)

    threading.Thread(target=body, name=name, daemon=True).start()
    future = asyncio.wrap_future(outcome)
    mark_retrieved(future)
    return future


def failed(future: asyncio.Future[Any]) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)


def mark_retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a failure as seen even if every waiter went away (they get it from await), so that
    asyncio does not report it as never retrieved."""
    future.add_done_callback(lambda f: f.cancelled() or f.exception())


def _nvml_uuids(pynvml: Any) -> list[str]:
    return per_nvml_device(pynvml, lambda handle: nvml_text(pynvml.nvmlDeviceGetUUID(handle)))


def per_nvml_device(pynvml: Any, read: Callable[[Any], _T]) -> list[_T]:
    """``read(handle)`` of every GPU NVML sees, in one NVML session; DiscoveryError on an NVML
    failure or when there is no GPU. Blocking: run it in a daemon thread."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        raise DiscoveryError(f"NVML: cannot initialise: {e}") from None
    try:
        found = [read(pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(pynvml.nvmlDeviceGetCount())]
    except pynvml.NVMLError as e:
        raise DiscoveryError(f"NVML: {e}") from None
    finally:
        with suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()
    if not found:
        raise DiscoveryError("NVML: found no GPUs")
    return found


def nvml_text(value: str | bytes) -> str:
    # Older nvidia-ml-py releases return bytes.
    return value.decode() if isinstance(value, bytes) else value


class NvidiaSmiDiscovery:
    def __init__(self, env: Mapping[str, str] = os.environ, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.env = env
        self.timeout_s = timeout_s

    async def discover(self) -> list[str]:
        returncode, out, err = await run_nvidia_smi(NVIDIA_SMI_COMMAND, self.env, self.timeout_s)
        return _parse_nvidia_smi(returncode, out, err)


async def run_nvidia_smi(
    command: Sequence[str], env: Mapping[str, str], timeout_s: float
) -> tuple[int | None, str, str]:
    """Run ``nvidia-smi`` without blocking the loop: its exit code, stdout and stderr.

    Raises DiscoveryError when it cannot be run or does not finish within ``timeout_s``.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
            # Its own process group, so a timeout kills any children it spawned too.
            start_new_session=True,
        )
    except FileNotFoundError:
        raise DiscoveryError("nvidia-smi: not found on PATH") from None
    except OSError as e:
        raise DiscoveryError(f"nvidia-smi: cannot run it: {e}") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise DiscoveryError(f"nvidia-smi: no answer within {timeout_s:g} s") from None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def nvidia_smi_failure(returncode: int | None, out: str, err: str) -> DiscoveryError:
    """The error for an ``nvidia-smi`` that exited non-zero, with the first line it said."""
    said = next((line.strip() for line in (err + "\n" + out).splitlines() if line.strip()), "")
    detail = f": {said}" if said else ""
    return DiscoveryError(f"nvidia-smi: failed with exit code {returncode}{detail}")


def _parse_nvidia_smi(returncode: int | None, out: str, err: str) -> list[str]:
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    if returncode != 0:
        raise nvidia_smi_failure(returncode, out, err)
    if not lines:
        raise DiscoveryError("nvidia-smi: listed no GPUs")
    odd = [line for line in lines if not is_gpu_uuid(line)]
    if odd:
        raise DiscoveryError(f"nvidia-smi: unexpected output {odd[0]!r}, expected GPU UUIDs")
    return lines


class VisibleDevicesDiscovery:
    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        self.env = env

    async def discover(self) -> list[str]:
        value = self.env.get(NVIDIA_VISIBLE_DEVICES_ENV)
        if value is None:
            raise DiscoveryError(f"{NVIDIA_VISIBLE_DEVICES_ENV}: not set")
        uuids = parse_visible_devices(value).uuids
        if uuids is None:
            raise DiscoveryError(f"{NVIDIA_VISIBLE_DEVICES_ENV}={value!r} lists no GPU UUIDs")
        return list(uuids)


class FirstSuccess:
    """Asks each source in turn; keeps the first success, never a failure.

    Concurrent callers share one attempt, so a slow source is not run once per waiting request.
    """

    def __init__(self, sources: Sequence[tuple[str, GpuDiscovery]]) -> None:
        self._sources = sources
        self._found: list[str] | None = None
        self._attempt: asyncio.Task[list[str]] | None = None

    async def discover(self) -> list[str]:
        if self._found is None:
            if self._attempt is None or self._attempt.done():
                self._attempt = asyncio.create_task(self._try_all())
                mark_retrieved(self._attempt)
            # Shielded: a caller that goes away must not cancel the attempt others wait for.
            self._found = await asyncio.shield(self._attempt)
        return list(self._found)

    async def _try_all(self) -> list[str]:
        reasons: list[str] = []
        for name, source in self._sources:
            try:
                uuids = await source.discover()
            except DiscoveryError as e:
                reasons.append(str(e))
                continue
            log.info("Discovered GPUs %s via %s", uuids, name)
            return uuids
        reason = "no GPUs found: " + "; ".join(reasons)
        log.warning("GPU discovery failed, will retry on the next request: %s", reason)
        raise DiscoveryError(reason)


def device_sources(env: Mapping[str, str] = os.environ) -> list[tuple[str, GpuDiscovery]]:
    """The sources that list GPUs in index order (NVML's enumeration, nvidia-smi's rows)."""
    sources: list[tuple[str, GpuDiscovery]] = []
    if not env.get(SIM_NODE_ENV):
        sources.append(("NVML", NvmlDiscovery()))
    sources.append(("nvidia-smi", NvidiaSmiDiscovery(env)))
    return sources


def default_discovery(env: Mapping[str, str] = os.environ) -> FirstSuccess:
    return FirstSuccess([*device_sources(env), (NVIDIA_VISIBLE_DEVICES_ENV, VisibleDevicesDiscovery(env))])
