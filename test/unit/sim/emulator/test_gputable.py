"""The GPU table of a simulated node: deterministic UUIDs, JSON round trip in the state dir, and
what a container with a given NVIDIA_VISIBLE_DEVICES sees."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dpctl.gpuenv import parse_visible_devices
from dpsim.emulator.gputable import GpuTable, UnknownDeviceError, load_gpu_table, save_gpu_table
from dpsim.simenv import gpu_table_path

UUID_SHAPE = re.compile(r"^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def test_uuids_are_stable_and_distinct() -> None:
    table = GpuTable.generate("node-a", 4)
    assert table == GpuTable.generate("node-a", 4)
    assert len(set(table.uuids) | set(GpuTable.generate("node-b", 4).uuids)) == 8
    assert all(UUID_SHAPE.match(u) for u in table.uuids)
    assert [g.index for g in table.gpus] == [0, 1, 2, 3]
    # Pinned: changing the derivation would change every simulated cluster's gpu-map.
    assert table.gpus[0].uuid == "GPU-e365b229-fff6-572c-9b50-d984bdebd726"


def test_product_is_spelled_as_the_node_label() -> None:
    table = GpuTable.generate("n", 1)
    assert (table.name, table.product) == ("NVIDIA L40S", "NVIDIA-L40S")
    assert GpuTable.generate("n", 1, name="NVIDIA A100-SXM4-80GB").product == "NVIDIA-A100-SXM4-80GB"


def test_pci_order_follows_index() -> None:
    bus_ids = [g.pci_bus_id for g in GpuTable.generate("n", 3).gpus]
    assert bus_ids == sorted(bus_ids) == ["00000000:01:00.0", "00000000:02:00.0", "00000000:03:00.0"]


def test_save_and_load(tmp_path: Path) -> None:
    table = GpuTable.generate("node-a", 2, memory_mib=81920)
    path = save_gpu_table(tmp_path, table)
    assert path == gpu_table_path(tmp_path, "node-a") == tmp_path / "gpus" / "node-a.json"
    assert load_gpu_table(tmp_path, "node-a") == table
    assert json.loads(path.read_text())["product"] == "NVIDIA-L40S"
    # Written atomically through a temporary file that is gone afterwards.
    save_gpu_table(tmp_path, table)
    assert [p.name for p in path.parent.iterdir()] == ["node-a.json"]


def test_load_unknown_node(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_gpu_table(tmp_path, "nowhere")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("gpus"), "malformed"),
        (lambda d: d.update(memoryMiB="lots"), "malformed"),
        (lambda d: d["gpus"][0].update(index=True), "malformed"),
        (lambda d: d["gpus"].reverse(), "indices"),
        (lambda d: d["gpus"][1].update(uuid=d["gpus"][0]["uuid"]), "distinct"),
        (lambda d: d["gpus"][1].update(uuid="nope"), "distinct"),
        (lambda d: d.update(node="other"), "names node other"),
    ],
)
def test_load_rejects_a_bad_file(tmp_path: Path, mutate: object, message: str) -> None:
    path = save_gpu_table(tmp_path, GpuTable.generate("node-a", 2))
    doc = json.loads(path.read_text())
    mutate(doc)  # type: ignore[operator]
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=message):
        load_gpu_table(tmp_path, "node-a")


def test_load_rejects_non_json(tmp_path: Path) -> None:
    path = gpu_table_path(tmp_path, "node-a")
    path.parent.mkdir(parents=True)
    path.write_text("{")
    with pytest.raises(ValueError, match="malformed"):
        load_gpu_table(tmp_path, "node-a")


def test_visible_devices() -> None:
    table = GpuTable.generate("node-a", 4)
    g = table.gpus
    assert table.visible(parse_visible_devices("all")) == g
    assert table.visible(parse_visible_devices(f"{g[3].uuid},{g[1].uuid}")) == (g[1], g[3])
    assert table.visible(parse_visible_devices("2,0")) == (g[0], g[2])
    for nothing in (None, "", "none", "void"):
        assert table.visible(parse_visible_devices(nothing)) == ()
    with pytest.raises(UnknownDeviceError, match="unknown device id: 7"):
        table.visible(parse_visible_devices("0,7"))
    with pytest.raises(UnknownDeviceError, match="GPU-nope"):
        table.visible(parse_visible_devices("GPU-nope"))
