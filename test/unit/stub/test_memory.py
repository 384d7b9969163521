"""GPU memory in use, as the requester stub measures it: recorded ``nvidia-smi`` output (real
format, MiB, ``[N/A]``), a fake ``nvidia-smi`` on PATH, a stand-in NVML module, the source order,
and that nothing is cached."""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from dpctl.stub.discovery import DiscoveryError
from dpctl.stub.memory import (
    MIB,
    FirstMemorySource,
    NvidiaSmiMemory,
    NvmlMemory,
    default_memory,
    parse_nvidia_smi_memory,
)

from .test_discovery import FakeNvmlError, env_with_path, fake_nvidia_smi

UUID_A = "GPU-3b8ed5d0-9a6e-0f6b-43c4-5e2c0d4a2f11"
UUID_B = "GPU-7c21f0a8-1d2e-4b3a-9c8d-0e1f2a3b4c5d"

# `nvidia-smi --query-gpu=uuid,memory.used --format=csv,noheader,nounits` on a node with two
# H100s, one running vLLM at --gpu-memory-utilization 0.9, as it prints it.
RECORDED_TWO_GPUS = f"{UUID_A}, 73163\n{UUID_B}, 1\n"
# The same on a GPU whose memory cannot be read (MIG mode, some vGPU profiles).
RECORDED_NOT_AVAILABLE = f"{UUID_A}, [N/A]\n"
RECORDED_NOT_SUPPORTED = f"{UUID_A}, [Not Supported]\n"
# Without ``nounits`` (not what the stub asks for, but what a wrapper script might print).
RECORDED_WITH_UNITS = f"{UUID_A}, 73163 MiB\n"


def test_recorded_output_gives_mib_per_uuid() -> None:
    assert parse_nvidia_smi_memory(0, RECORDED_TWO_GPUS, "") == {UUID_A: 73163, UUID_B: 1}


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        pytest.param(RECORDED_NOT_AVAILABLE, f"GPU {UUID_A} reports memory.used '\\[N/A\\]'", id="n/a"),
        pytest.param(
            RECORDED_NOT_SUPPORTED, "'\\[Not Supported\\]', not a number of MiB", id="not-supported"
        ),
        pytest.param(RECORDED_WITH_UNITS, "'73163 MiB', not a number of MiB", id="units"),
        pytest.param(f"{UUID_A}\n", "expected 'UUID, MiB used'", id="one-column"),
        pytest.param(f"{UUID_A}, 1, 2\n", "expected 'UUID, MiB used'", id="three-columns"),
        pytest.param(", 12\n", "expected 'UUID, MiB used'", id="no-uuid"),
        pytest.param("\n\n", "listed no GPUs", id="empty"),
    ],
)
def test_recorded_output_that_is_not_a_number_fails_the_answer(output: str, reason: str) -> None:
    with pytest.raises(DiscoveryError, match=reason):
        parse_nvidia_smi_memory(0, output, "")


def test_failing_nvidia_smi_says_what_it_said() -> None:
    said = (
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
        "Make sure that the latest NVIDIA driver is installed and running.\n"
    )
    with pytest.raises(DiscoveryError, match="exit code 9: NVIDIA-SMI has failed"):
        parse_nvidia_smi_memory(9, said, "")


async def test_nvidia_smi_is_asked_upstreams_query(tmp_path: Path) -> None:
    bin_dir = fake_nvidia_smi(
        tmp_path / "bin",
        f'[ "$*" = "--query-gpu=uuid,memory.used --format=csv,noheader,nounits" ] && echo "{UUID_A}, 40961"',
    )
    assert await NvidiaSmiMemory(env_with_path(bin_dir)).memory_used_mib() == {UUID_A: 40961}


async def test_nvidia_smi_is_asked_again_every_time(tmp_path: Path) -> None:
    counter = tmp_path / "calls"
    counter.write_text("")
    # Each run answers one more MiB than the last: memory changes, so no answer may be kept.
    bin_dir = fake_nvidia_smi(
        tmp_path / "bin", f'echo x >> {counter}; echo "{UUID_A}, $(wc -l < {counter} | tr -d " ")"'
    )
    memory = NvidiaSmiMemory(env_with_path(bin_dir))
    assert [await memory.memory_used_mib() for _ in range(3)] == [{UUID_A: n} for n in (1, 2, 3)]


async def test_nvidia_smi_hanging_times_out(tmp_path: Path) -> None:
    bin_dir = fake_nvidia_smi(tmp_path / "bin", "sleep 60")
    with pytest.raises(DiscoveryError, match=r"nvidia-smi: no answer within 0\.3 s"):
        await NvidiaSmiMemory(env_with_path(bin_dir), timeout_s=0.3).memory_used_mib()


# --- NVML -------------------------------------------------------------------------------------


@dataclass
class MemoryInfo:
    total: int
    free: int
    used: int


class FakeNvmlMemory(types.ModuleType):
    """Stands in for pynvml: the calls NvmlMemory makes; ``used`` is bytes per device, changeable."""

    NVMLError = FakeNvmlError

    def __init__(self, uuids: list[str | bytes], used: list[int]) -> None:
        super().__init__("pynvml")
        self.used = used
        self.calls: list[str] = []
        self.nvmlInit: Callable[[], None] = lambda: self.calls.append("init")
        self.nvmlShutdown: Callable[[], None] = lambda: self.calls.append("shutdown")
        self.nvmlDeviceGetCount: Callable[[], int] = lambda: len(uuids)
        self.nvmlDeviceGetHandleByIndex: Callable[[int], int] = lambda i: i
        self.nvmlDeviceGetUUID: Callable[[int], str | bytes] = lambda h: uuids[h]
        self.nvmlDeviceGetMemoryInfo: Callable[[int], MemoryInfo] = lambda h: MemoryInfo(
            80 * 1024 * MIB, 80 * 1024 * MIB - self.used[h], self.used[h]
        )


async def test_nvml_bytes_become_whole_mib(monkeypatch: pytest.MonkeyPatch) -> None:
    module = FakeNvmlMemory([UUID_A, UUID_B.encode()], [73163 * MIB + MIB - 1, 0])
    monkeypatch.setitem(sys.modules, "pynvml", module)
    assert await NvmlMemory().memory_used_mib() == {UUID_A: 73163, UUID_B: 0}
    assert module.calls == ["init", "shutdown"]


async def test_nvml_is_asked_again_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    module = FakeNvmlMemory([UUID_A], [0])
    monkeypatch.setitem(sys.modules, "pynvml", module)
    memory = NvmlMemory()
    assert await memory.memory_used_mib() == {UUID_A: 0}
    module.used[0] = 512 * MIB
    assert await memory.memory_used_mib() == {UUID_A: 512}


async def test_nvml_error_is_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    module = FakeNvmlMemory([UUID_A], [0])

    def broken(handle: int) -> MemoryInfo:
        raise FakeNvmlError("Not Supported")

    module.nvmlDeviceGetMemoryInfo = broken
    monkeypatch.setitem(sys.modules, "pynvml", module)
    with pytest.raises(DiscoveryError, match="NVML: Not Supported"):
        await NvmlMemory().memory_used_mib()
    assert module.calls == ["init", "shutdown"]


async def test_nvml_hanging_is_joined_not_started_again(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    module = FakeNvmlMemory([UUID_A], [MIB])

    def hanging_init() -> None:
        module.calls.append("init")
        release.wait(30)

    module.nvmlInit = hanging_init
    monkeypatch.setitem(sys.modules, "pynvml", module)
    memory = NvmlMemory(timeout_s=0.1)
    try:
        for _ in range(2):
            with pytest.raises(DiscoveryError, match=r"NVML: no answer within 0\.1 s"):
                await memory.memory_used_mib()
        assert module.calls == ["init"]  # one stuck thread, however many requests came
    finally:
        release.set()
    assert await memory.memory_used_mib() == {UUID_A: 1}


async def test_nvml_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(DiscoveryError, match="NVML: not available"):
        await NvmlMemory().memory_used_mib()


# --- the order of sources -------------------------------------------------------------------


async def test_nvidia_smi_answers_when_nvml_is_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    bin_dir = fake_nvidia_smi(tmp_path / "bin", f'echo "{UUID_A}, 7"')
    assert await default_memory(env_with_path(bin_dir)).memory_used_mib() == {UUID_A: 7}


async def test_nvml_wins_over_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvmlMemory([UUID_A], [3 * MIB]))
    bin_dir = fake_nvidia_smi(tmp_path / "bin", f'echo "{UUID_A}, 7"')
    assert await default_memory(env_with_path(bin_dir)).memory_used_mib() == {UUID_A: 3}


async def test_simulated_container_skips_nvml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # NVML would report the host's real GPUs; the simulated ones are the shim's.
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvmlMemory([UUID_A], [3 * MIB]))
    bin_dir = fake_nvidia_smi(tmp_path / "bin", f'echo "{UUID_B}, 7"')
    env = env_with_path(bin_dir, DPCTL_SIM_NODE="node-a")
    assert await default_memory(env).memory_used_mib() == {UUID_B: 7}


async def test_every_reason_is_given_when_all_sources_fail(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    memory = FirstMemorySource([NvidiaSmiMemory({"PATH": str(empty)}), NvidiaSmiMemory({"PATH": str(empty)})])
    with pytest.raises(
        DiscoveryError, match="cannot measure GPU memory: nvidia-smi: not found on PATH; nvidia-smi"
    ):
        await memory.memory_used_mib()
