"""GPU discovery of the requester stub: each source alone (NVML faked by replacing the pynvml
module, nvidia-smi by fake executables on PATH), the fallback order, and retry after failure."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path

import pytest

from dpctl.stub.discovery import (
    DiscoveryError,
    FirstSuccess,
    NvidiaSmiDiscovery,
    NvmlDiscovery,
    VisibleDevicesDiscovery,
    default_discovery,
)
from helpers import async_wait_for

UUID_A = "GPU-11111111-2222-3333-4444-555555555555"
UUID_B = "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


class FakeNvmlError(Exception):
    pass


class FakePynvml(types.ModuleType):
    """Stands in for the pynvml module: the calls NvmlDiscovery makes, and a record of them.
    Each function is an attribute, so that a test can replace one."""

    NVMLError = FakeNvmlError

    def __init__(self, uuids: list[str | bytes], init_error: str | None) -> None:
        super().__init__("pynvml")
        self.calls: list[str] = []

        def init() -> None:
            self.calls.append("init")
            if init_error:
                raise FakeNvmlError(init_error)

        self.nvmlInit: Callable[[], None] = init
        self.nvmlShutdown: Callable[[], None] = lambda: self.calls.append("shutdown")
        self.nvmlDeviceGetCount: Callable[[], int] = lambda: len(uuids)
        self.nvmlDeviceGetHandleByIndex: Callable[[int], int] = lambda i: i
        self.nvmlDeviceGetUUID: Callable[[int], str | bytes] = lambda h: uuids[h]


def fake_pynvml(uuids: list[str | bytes], *, init_error: str | None = None) -> FakePynvml:
    return FakePynvml(uuids, init_error)


def fake_nvidia_smi(bin_dir: Path, body: str) -> Path:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / "nvidia-smi"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return bin_dir


def env_with_path(bin_dir: Path, **extra: str) -> dict[str, str]:
    # /bin and /usr/bin for the fake's own commands, after it so a real nvidia-smi never wins.
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", **extra}


# --- NVML -------------------------------------------------------------------------------------


async def test_nvml_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    with pytest.raises(DiscoveryError, match="NVML: not available"):
        await NvmlDiscovery().discover()


async def test_nvml_lists_uuids_and_shuts_down(monkeypatch: pytest.MonkeyPatch) -> None:
    module = fake_pynvml([UUID_A, UUID_B.encode()])
    monkeypatch.setitem(sys.modules, "pynvml", module)
    assert await NvmlDiscovery().discover() == [UUID_A, UUID_B]
    assert module.calls == ["init", "shutdown"]


async def test_nvml_init_failure_is_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([], init_error="Driver Not Loaded"))
    with pytest.raises(DiscoveryError, match="NVML: cannot initialise: Driver Not Loaded"):
        await NvmlDiscovery().discover()


async def test_nvml_without_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([]))
    with pytest.raises(DiscoveryError, match="NVML: found no GPUs"):
        await NvmlDiscovery().discover()


async def test_nvml_hanging_times_out_without_piling_up_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    module = fake_pynvml([UUID_A])
    first_init = module.nvmlInit

    def hanging_init() -> None:
        first_init()
        release.wait(30)

    module.nvmlInit = hanging_init
    monkeypatch.setitem(sys.modules, "pynvml", module)
    nvml = NvmlDiscovery(timeout_s=0.1)
    try:
        for _ in range(2):
            with pytest.raises(DiscoveryError, match=r"NVML: no answer within 0\.1 s"):
                await nvml.discover()
        # One call, in a daemon thread, so it cannot keep the process from exiting.
        assert module.calls == ["init"]
        assert [t.daemon for t in threading.enumerate() if t.name == "nvml"] == [True]
    finally:
        release.set()
    # The late answer of the hung call is used.
    assert await nvml.discover() == [UUID_A]
    assert module.calls == ["init", "shutdown"]


# --- nvidia-smi -------------------------------------------------------------------------------


async def test_nvidia_smi_lists_uuids(tmp_path: Path) -> None:
    bin_dir = fake_nvidia_smi(tmp_path / "bin", f'echo "{UUID_A}"; echo "{UUID_B}"')
    assert await NvidiaSmiDiscovery(env_with_path(bin_dir)).discover() == [UUID_A, UUID_B]


async def test_nvidia_smi_is_asked_for_uuids(tmp_path: Path) -> None:
    bin_dir = fake_nvidia_smi(
        tmp_path / "bin", f'[ "$*" = "--query-gpu=uuid --format=csv,noheader" ] && echo {UUID_A}'
    )
    assert await NvidiaSmiDiscovery(env_with_path(bin_dir)).discover() == [UUID_A]


async def test_nvidia_smi_absent(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DiscoveryError, match="nvidia-smi: not found on PATH"):
        await NvidiaSmiDiscovery({"PATH": str(empty)}).discover()


async def test_nvidia_smi_failing(tmp_path: Path) -> None:
    bin_dir = fake_nvidia_smi(tmp_path / "bin", "echo 'No devices were found'; exit 6")
    with pytest.raises(DiscoveryError, match="exit code 6: No devices were found"):
        await NvidiaSmiDiscovery(env_with_path(bin_dir)).discover()


@pytest.mark.parametrize(
    ("output", "reason"), [("", "listed no GPUs"), ("garbage", "unexpected output 'garbage'")]
)
async def test_nvidia_smi_odd_output(tmp_path: Path, output: str, reason: str) -> None:
    bin_dir = fake_nvidia_smi(tmp_path / "bin", f"echo '{output}'")
    with pytest.raises(DiscoveryError, match=reason):
        await NvidiaSmiDiscovery(env_with_path(bin_dir)).discover()


async def test_nvidia_smi_hanging_is_killed_with_its_children(tmp_path: Path) -> None:
    bin_dir = fake_nvidia_smi(tmp_path / "bin", "sleep 60 & sleep 60")
    started = time.monotonic()
    with pytest.raises(DiscoveryError, match=r"no answer within 0\.3 s"):
        await NvidiaSmiDiscovery(env_with_path(bin_dir), timeout_s=0.3).discover()
    # The background child held the output pipe; it was killed too, or we would still wait.
    assert time.monotonic() - started < 5


async def test_nvidia_smi_does_not_block_the_event_loop(tmp_path: Path) -> None:
    bin_dir = fake_nvidia_smi(tmp_path / "bin", f"sleep 0.5; echo {UUID_A}")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    try:
        assert await NvidiaSmiDiscovery(env_with_path(bin_dir)).discover() == [UUID_A]
    finally:
        task.cancel()
    assert ticks > 10


# --- NVIDIA_VISIBLE_DEVICES -------------------------------------------------------------------


async def test_visible_devices_with_uuids() -> None:
    env = {"NVIDIA_VISIBLE_DEVICES": f"{UUID_A}, {UUID_B}"}
    assert await VisibleDevicesDiscovery(env).discover() == [UUID_A, UUID_B]


@pytest.mark.parametrize("value", ["all", "none", "void", "", "0,1", f"{UUID_A},1"])
async def test_visible_devices_without_uuids(value: str) -> None:
    with pytest.raises(DiscoveryError, match="lists no GPU UUIDs"):
        await VisibleDevicesDiscovery({"NVIDIA_VISIBLE_DEVICES": value}).discover()


async def test_visible_devices_unset() -> None:
    with pytest.raises(DiscoveryError, match="NVIDIA_VISIBLE_DEVICES: not set"):
        await VisibleDevicesDiscovery({}).discover()


# --- the chain --------------------------------------------------------------------------------


class Scripted:
    """A source that answers from a script: a list of UUIDs, or a reason to fail."""

    def __init__(self, *answers: list[str] | str) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def discover(self) -> list[str]:
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, str):
            raise DiscoveryError(answer)
        return answer


async def test_first_success_falls_back_in_order_and_stops_at_success() -> None:
    first, second, third = Scripted("first failed"), Scripted([UUID_A]), Scripted([UUID_B])
    chain = FirstSuccess([("a", first), ("b", second), ("c", third)])
    assert await chain.discover() == [UUID_A]
    assert (first.calls, second.calls, third.calls) == (1, 1, 0)


async def test_failure_lists_every_reason_and_is_retried() -> None:
    first, second = Scripted("NVML: gone"), Scripted("nvidia-smi: flaky", [UUID_A])
    chain = FirstSuccess([("a", first), ("b", second)])
    with pytest.raises(DiscoveryError, match="no GPUs found: NVML: gone; nvidia-smi: flaky"):
        await chain.discover()
    assert await chain.discover() == [UUID_A]
    assert second.calls == 2


async def test_success_is_kept() -> None:
    source = Scripted([UUID_A], "would fail now")
    chain = FirstSuccess([("a", source)])
    assert await chain.discover() == [UUID_A]
    assert await chain.discover() == [UUID_A]
    assert source.calls == 1


async def test_concurrent_callers_share_one_attempt() -> None:
    gate = asyncio.Event()
    calls = 0

    class Slow:
        async def discover(self) -> list[str]:
            nonlocal calls
            calls += 1
            await gate.wait()
            raise DiscoveryError("slow and failing")

    chain = FirstSuccess([("slow", Slow())])
    waiters = [asyncio.create_task(chain.discover()) for _ in range(5)]
    # The attempt task starts after every waiter has joined it (they were scheduled first).
    await async_wait_for(lambda: calls == 1, 5, "the shared attempt to start")
    gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, DiscoveryError) for r in results)
    assert calls == 1


async def test_default_order_nvml_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([UUID_A]))
    bin_dir = fake_nvidia_smi(tmp_path / "bin", f"echo {UUID_B}")
    assert await default_discovery(env_with_path(bin_dir)).discover() == [UUID_A]


async def test_default_skips_nvml_in_a_simulated_container(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # NVML would see the host's real GPUs; the simulated ones come from the nvidia-smi shim.
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([UUID_A]))
    bin_dir = fake_nvidia_smi(tmp_path / "bin", f"echo {UUID_B}")
    env = env_with_path(bin_dir, DPCTL_SIM_NODE="node-a")
    assert await default_discovery(env).discover() == [UUID_B]


async def test_default_falls_back_to_visible_devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {"PATH": str(empty), "NVIDIA_VISIBLE_DEVICES": UUID_B}
    assert await default_discovery(env).discover() == [UUID_B]
