"""GPU UUID → index: mock GPUs, the node's GPUs in discovery order, and errors a user can act on."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from dpctl.kube import RawObj
from dpctl.launcher.gpus import (
    ConfigMapGpus,
    DeviceGpus,
    GpuLookupFailed,
    MockGpus,
    UnknownGpu,
    cuda_visible_devices,
)
from dpctl.launcher.main import gpu_index

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


class Reader:
    """A gpu-map ConfigMap read: the answer (or the error) it gives, and how often it was asked."""

    def __init__(self, configmap: RawObj | Exception | None) -> None:
        self.configmap = configmap
        self.calls = 0

    async def __call__(self) -> RawObj | None:
        self.calls += 1
        if isinstance(self.configmap, Exception):
            raise self.configmap
        return self.configmap


async def test_mock_gpus_come_from_the_nodes_gpu_map_entry_read_once() -> None:
    read = Reader({"data": {"n1": json.dumps({UUIDS[0]: 1, UUIDS[1]: 0}), "n2": "{}"}})
    gpus = ConfigMapGpus("n1", MockGpus(2), read)
    assert await gpus.indices([UUIDS[0]]) == [1]
    assert await gpus.indices([UUIDS[1], UUIDS[0]]) == [0, 1]
    with pytest.raises(UnknownGpu):
        await gpus.indices(["GPU-0"])
    assert read.calls == 1


@pytest.mark.parametrize(
    "configmap",
    [None, {"data": {"other": "{}"}}, {"data": {"n1": "not json"}}],
    ids=["absent", "no entry", "bad entry"],
)
async def test_without_a_usable_gpu_map_entry_the_naive_mock_gpus_serve(configmap: RawObj | None) -> None:
    assert await ConfigMapGpus("n1", MockGpus(2), Reader(configmap)).indices(["GPU-1"]) == [1]


async def test_a_gpu_map_that_cannot_be_read_fails_the_request_and_is_read_again() -> None:
    gpus = ConfigMapGpus("n1", MockGpus(2), Reader(OSError("connection refused")))
    with pytest.raises(GpuLookupFailed, match="cannot read ConfigMap gpu-map: connection refused"):
        await gpus.indices(["GPU-1"])
    gpus._read = Reader({"data": {"n1": json.dumps({UUIDS[0]: 0})}})
    assert await gpus.indices([UUIDS[0]]) == [0]


def test_mock_mode_uses_the_gpu_map_only_with_node_and_namespace() -> None:
    assert isinstance(gpu_index(True, 3, {"NODE_NAME": "n1", "NAMESPACE": "ns"}), ConfigMapGpus)
    plain = gpu_index(True, 3, {"NODE_NAME": "n1"})
    assert isinstance(plain, MockGpus) and list(plain.mapping) == ["GPU-0", "GPU-1", "GPU-2"]
    assert isinstance(gpu_index(False, 3, {"NODE_NAME": "n1", "NAMESPACE": "ns"}), DeviceGpus)
