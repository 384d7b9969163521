"""GPU UUID → index: mock GPUs, the node's GPUs in discovery order, and errors a user can act on."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dpctl.launcher.gpus import DeviceGpus, GpuLookupFailed, MockGpus, UnknownGpu, cuda_visible_devices

UUIDS = ["GPU-aaaaaaaa-0000-0000-0000-000000000000", "GPU-bbbbbbbb-0000-0000-0000-000000000000"]


async def test_mock_gpus_are_named_by_their_index() -> None:
    assert await MockGpus(4).indices(["GPU-3", "GPU-0"]) == [3, 0]


async def test_an_unknown_uuid_is_named_with_the_known_ones() -> None:
    with pytest.raises(
        UnknownGpu, match=r"GPU UUID 'GPU-4' not found. Available UUIDs: \['GPU-0', 'GPU-1'\]"
    ):
        await MockGpus(2).indices(["GPU-0", "GPU-4"])


def fake_nvidia_smi(tmp_path: Path, script: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "nvidia-smi"
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    # DPCTL_SIM_NODE skips NVML, so the host's real GPUs (if any) do not answer.
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "DPCTL_SIM_NODE": "n1"}


async def test_node_gpus_are_indexed_in_nvidia_smi_order(tmp_path: Path) -> None:
    env = fake_nvidia_smi(tmp_path, "printf '%s\\n' " + " ".join(UUIDS) + "\n")
    assert await DeviceGpus(env).indices([UUIDS[1], UUIDS[0]]) == [1, 0]
    with pytest.raises(UnknownGpu):
        await DeviceGpus(env).indices(["GPU-cccccccc-0000-0000-0000-000000000000"])


async def test_a_node_whose_gpus_cannot_be_listed_fails_the_lookup_and_retries(tmp_path: Path) -> None:
    env = fake_nvidia_smi(tmp_path, "echo 'NVIDIA-SMI has failed' >&2; exit 9\n")
    gpus = DeviceGpus(env)
    with pytest.raises(GpuLookupFailed, match=r"cannot list this node's GPUs: .*exit code 9"):
        await gpus.indices(UUIDS[:1])
    (tmp_path / "bin" / "nvidia-smi").write_text("#!/bin/sh\necho " + UUIDS[0] + "\n")
    assert await gpus.indices(UUIDS[:1]) == [0]


def test_cuda_visible_devices_joins_the_indices() -> None:
    assert cuda_visible_devices([2, 0]) == "2,0"
