"""How the emulator picks its simulated GPUs, as CUDA would: CUDA_VISIBLE_DEVICES over the
container's GPUs, and the simulated-container set-up it needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpsim.emulator.devices import DeviceError, placement_from_env, resolve_cuda_devices
from dpsim.emulator.gputable import GpuTable, save_gpu_table
from dpsim.emulator.ledger import ASLEEP_RESIDUE_MIB, Footprint, Holder

TABLE = GpuTable.generate("node-a", 4)
G = TABLE.gpus
PCI = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def uuids(env: dict[str, str]) -> list[str]:
    return [g.uuid for g in resolve_cuda_devices(TABLE, env).gpus]


def test_without_cuda_visible_devices_all_container_gpus() -> None:
    assert uuids({"NVIDIA_VISIBLE_DEVICES": "all"}) == list(TABLE.uuids)
    assert uuids({"NVIDIA_VISIBLE_DEVICES": G[2].uuid}) == [G[2].uuid]


def test_indices_in_the_order_given() -> None:
    assert uuids({"NVIDIA_VISIBLE_DEVICES": "all", "CUDA_VISIBLE_DEVICES": "2,0", **PCI}) == [
        G[2].uuid,
        G[0].uuid,
    ]


def test_indices_count_the_container_gpus_only() -> None:
    env = {"NVIDIA_VISIBLE_DEVICES": f"{G[1].uuid},{G[3].uuid}", "CUDA_VISIBLE_DEVICES": "1", **PCI}
    assert uuids(env) == [G[3].uuid]


def test_uuid_and_unique_prefix() -> None:
    env = {"NVIDIA_VISIBLE_DEVICES": "all", "CUDA_VISIBLE_DEVICES": f"{G[3].uuid},{G[1].uuid[:12]}", **PCI}
    assert uuids(env) == [G[3].uuid, G[1].uuid]


def test_cuda_stops_at_the_first_bad_entry() -> None:
    env = {"NVIDIA_VISIBLE_DEVICES": "all", "CUDA_VISIBLE_DEVICES": "0,9,1", **PCI}
    devices = resolve_cuda_devices(TABLE, env)
    assert [g.uuid for g in devices.gpus] == [G[0].uuid]
    assert devices.warnings == (
        "CUDA_VISIBLE_DEVICES='0,9,1': entry '9' names no GPU of this container (it has 4),"
        " so CUDA ignores it and every entry after it",
    )
    assert uuids({"NVIDIA_VISIBLE_DEVICES": "all", "CUDA_VISIBLE_DEVICES": "1,1,2", **PCI}) == [G[1].uuid]


def test_order_other_than_pci_is_warned_about() -> None:
    devices = resolve_cuda_devices(TABLE, {"NVIDIA_VISIBLE_DEVICES": "all", "CUDA_VISIBLE_DEVICES": "0"})
    assert "CUDA_DEVICE_ORDER is not PCI_BUS_ID" in devices.warnings[0]


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"NVIDIA_VISIBLE_DEVICES": "void", "CUDA_VISIBLE_DEVICES": "0"},
        {"NVIDIA_VISIBLE_DEVICES": "all", "CUDA_VISIBLE_DEVICES": "7"},
        {"NVIDIA_VISIBLE_DEVICES": "all", "CUDA_VISIBLE_DEVICES": ""},
        {"NVIDIA_VISIBLE_DEVICES": "all", "CUDA_VISIBLE_DEVICES": "-1"},
    ],
)
def test_no_gpu_is_fatal(env: dict[str, str]) -> None:
    with pytest.raises(DeviceError, match="No CUDA GPUs are available"):
        resolve_cuda_devices(TABLE, env)


def test_container_given_a_gpu_the_node_lacks() -> None:
    with pytest.raises(DeviceError, match="unknown device id: GPU-elsewhere"):
        resolve_cuda_devices(TABLE, {"NVIDIA_VISIBLE_DEVICES": "GPU-elsewhere"})


# --- the seat of a server run by the simulated kubelet ----------------------------------------


def test_no_state_dir_no_placement() -> None:
    assert (
        placement_from_env(
            {"NVIDIA_VISIBLE_DEVICES": "all"},
            refuse_conflict=False,
            gpu_memory_utilization=0.9,
            release_delay_s=0,
        )
        is None
    )


def test_placement(tmp_path: Path) -> None:
    save_gpu_table(tmp_path, TABLE)
    env = {
        "DPCTL_SIM_STATE": str(tmp_path),
        "DPCTL_SIM_NODE": "node-a",
        "DPCTL_SIM_POD": "ns/runner",
        "DPCTL_SIM_POD_UID": "uid-r",
        "NVIDIA_VISIBLE_DEVICES": "all",
        "CUDA_VISIBLE_DEVICES": "3",
        **PCI,
    }
    placement = placement_from_env(env, refuse_conflict=True, gpu_memory_utilization=0.5, release_delay_s=3)
    assert placement is not None
    assert placement.warnings == ()
    seat = placement.seat
    assert (seat.gpus, seat.refuse_conflict) == ((G[3].uuid,), True)
    assert seat.footprint == Footprint(awake_mib=TABLE.memory_mib // 2, asleep_mib=ASLEEP_RESIDUE_MIB)
    assert seat.release_delay_s == 3
    assert (seat.holder.pod, seat.holder.pod_uid) == ("ns/runner", "uid-r")
    assert isinstance(seat.holder, Holder)
    assert (tmp_path / "gpu-ledger.sqlite").exists()


@pytest.mark.parametrize(
    ("node", "message"),
    [("", "DPCTL_SIM_NODE is not"), ("node-x", "cannot read the GPU table of node node-x")],
)
def test_placement_needs_a_registered_node(tmp_path: Path, node: str, message: str) -> None:
    save_gpu_table(tmp_path, TABLE)
    env = {"DPCTL_SIM_STATE": str(tmp_path), "DPCTL_SIM_NODE": node, "NVIDIA_VISIBLE_DEVICES": "all"}
    with pytest.raises(DeviceError, match=message):
        placement_from_env(env, refuse_conflict=False, gpu_memory_utilization=0.9, release_delay_s=0)
