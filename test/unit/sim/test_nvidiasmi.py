"""`dpctl sim-nvidia-smi`, the nvidia-smi of a simulated container: its output forms, the GPUs a
container sees (renumbered from 0 as in a real container), its failures, and the shim on PATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dpctl import cli
from dpctl.stub.discovery import NvidiaSmiDiscovery
from dpctl.stub.memory import NvidiaSmiMemory
from dpsim.emulator.gputable import GpuTable, save_gpu_table
from dpsim.emulator.ledger import Holder, Ledger
from dpsim.nvidiasmi import write_nvidia_smi_shim
from dpsim.simenv import ledger_path

TABLE = GpuTable.generate("node-a", 4)
G = TABLE.gpus


@pytest.fixture
def state(tmp_path: Path) -> Path:
    save_gpu_table(tmp_path, TABLE)
    return tmp_path


@pytest.fixture
def container(state: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A simulated container on node-a that sees every GPU; tests narrow it."""
    monkeypatch.setenv("DPCTL_SIM_STATE", str(state))
    monkeypatch.setenv("DPCTL_SIM_NODE", "node-a")
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "all")
    return monkeypatch


def smi(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli.main(["sim-nvidia-smi", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_query_index_uuid(container: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = smi(capsys, "--query-gpu=index,uuid", "--format=csv,noheader")
    assert code == 0
    assert out == "".join(f"{g.index}, {g.uuid}\n" for g in G)


def test_query_uuid_only(container: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert smi(capsys, "--query-gpu=uuid", "--format=csv,noheader") == (
        0,
        "".join(f"{u}\n" for u in TABLE.uuids),
    )


def test_query_with_header_and_name(
    container: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = smi(capsys, "--query-gpu", "index,uuid,name", "--format", "csv")
    lines = out.splitlines()
    assert (code, lines[0], lines[1]) == (0, "index, uuid, name", f"0, {G[0].uuid}, NVIDIA L40S")
    assert len(lines) == 5


def test_units(container: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _, out = smi(capsys, "--query-gpu=memory.total,count", "--format=csv", "-i", "0")
    assert out == "memory.total [MiB], count\n46068 MiB, 4\n"
    _, out = smi(capsys, "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", "0")
    assert out == "46068\n"


def test_list(container: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = smi(capsys, "-L")
    assert code == 0
    assert out.splitlines() == [f"GPU {g.index}: NVIDIA L40S (UUID: {g.uuid})" for g in G]


def test_plain_table(container: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = smi(capsys)
    assert code == 0
    assert "NVIDIA-SMI" in out
    assert all(g.uuid in out and g.pci_bus_id in out for g in G)


def test_a_subset_is_renumbered_from_0(
    container: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    container.setenv("NVIDIA_VISIBLE_DEVICES", f"{G[3].uuid},{G[1].uuid}")
    _, out = smi(capsys, "--query-gpu=index,uuid", "--format=csv,noheader")
    assert out == f"0, {G[1].uuid}\n1, {G[3].uuid}\n"
    _, out = smi(capsys, "--query-gpu=index,uuid", "--format=csv,noheader", "--id=1")
    assert out == f"1, {G[3].uuid}\n"


def test_node_indices_in_visible_devices(
    container: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    container.setenv("NVIDIA_VISIBLE_DEVICES", "2")
    assert smi(capsys, "--query-gpu=uuid", "--format=csv,noheader") == (0, f"{G[2].uuid}\n")


@pytest.mark.parametrize("value", [None, "", "none", "void"])
def test_no_devices(
    container: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str | None
) -> None:
    if value is None:
        container.delenv("NVIDIA_VISIBLE_DEVICES")
    else:
        container.setenv("NVIDIA_VISIBLE_DEVICES", value)
    assert smi(capsys, "--query-gpu=uuid", "--format=csv,noheader") == (6, "No devices were found\n")


def test_unknown_id_selected(container: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert smi(capsys, "-L", "-i", "9") == (6, "No devices were found\n")


def test_outside_a_simulated_container(
    container: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    container.delenv("DPCTL_SIM_NODE")
    code, out = smi(capsys, "-L")
    assert code == 9
    assert "couldn't communicate with the NVIDIA driver" in out


def test_unregistered_node(container: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    container.setenv("DPCTL_SIM_NODE", "node-z")
    code, out = smi(capsys, "-L")
    assert code == 9
    assert "node-z" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--query-gpu=fan.speed", "--format=csv"], 'Field "fan.speed" is not a valid field to query.'),
        (["--query-gpu=uuid"], "--format=csv"),
        (["--query-gpu=uuid", "--format=xml"], "--format=csv"),
    ],
)
def test_bad_queries(
    container: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out = smi(capsys, *args)
    assert code == 2
    assert message in out


# --- the shim on a container's PATH -----------------------------------------------------------


def test_shim_runs_sim_nvidia_smi(state: Path, tmp_path: Path) -> None:
    shim = write_nvidia_smi_shim(tmp_path / "bin", sys.executable)
    assert shim == tmp_path / "bin" / "nvidia-smi"
    assert os.access(shim, os.X_OK)
    env = {
        "PATH": f"{shim.parent}:/usr/bin:/bin",
        "DPCTL_SIM_STATE": str(state),
        "DPCTL_SIM_NODE": "node-a",
        "NVIDIA_VISIBLE_DEVICES": "all",
    }
    result = subprocess.run(
        ["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, "".join(f"{g.index}, {g.uuid}\n" for g in G))
    # Rewriting it (another container starting) is atomic and leaves no temporary file.
    write_nvidia_smi_shim(tmp_path / "bin", sys.executable)
    assert [p.name for p in shim.parent.iterdir()] == ["nvidia-smi"]


async def test_stub_discovers_a_containers_gpus_through_the_shim(state: Path, tmp_path: Path) -> None:
    shim = write_nvidia_smi_shim(tmp_path / "bin", sys.executable)
    env = {
        "PATH": f"{shim.parent}:/usr/bin:/bin",
        "DPCTL_SIM_STATE": str(state),
        "DPCTL_SIM_NODE": "node-a",
        "NVIDIA_VISIBLE_DEVICES": f"{G[2].uuid},{G[0].uuid}",
    }
    assert await NvidiaSmiDiscovery(env, timeout_s=30).discover() == [G[0].uuid, G[2].uuid]


def test_memory_used_follows_the_gpu_ledger(
    container: pytest.MonkeyPatch, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = Ledger(ledger_path(state))
    runner = Holder("ns/runner", "uid-r", os.getpid())
    query = ("--query-gpu=uuid,memory.used", "--format=csv,noheader,nounits")
    assert smi(capsys, *query) == (0, "".join(f"{g.uuid}, 0\n" for g in G))
    ledger.start(runner, [G[1].uuid], refuse_conflict=False, mib=41461)
    code, out = smi(capsys, *query)
    assert (code, out.splitlines()[:2]) == (0, [f"{G[0].uuid}, 0", f"{G[1].uuid}, 41461"])
    ledger.sleep(runner, mib=512)
    assert smi(capsys, "--query-gpu=memory.used,memory.free", "--format=csv", "-i", "1") == (
        0,
        f"memory.used [MiB], memory.free [MiB]\n512 MiB, {TABLE.memory_mib - 512} MiB\n",
    )


async def test_the_stub_reads_memory_through_the_shim(state: Path, tmp_path: Path) -> None:
    write_nvidia_smi_shim(tmp_path / "bin", sys.executable)
    env = {
        "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin",
        "DPCTL_SIM_STATE": str(state),
        "DPCTL_SIM_NODE": "node-a",
        "NVIDIA_VISIBLE_DEVICES": G[2].uuid,
    }
    Ledger(ledger_path(state)).start(
        Holder("ns/r", "uid-r", os.getpid()), [G[2].uuid], refuse_conflict=False, mib=7
    )
    assert await NvidiaSmiMemory(env, timeout_s=30).memory_used_mib() == {G[2].uuid: 7}
