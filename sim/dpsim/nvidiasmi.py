"""`dpctl sim-nvidia-smi`: what `nvidia-smi` prints inside a container of the local cluster.

The simulated kubelet puts a shim named ``nvidia-smi`` first on each container's PATH (written by
``write_nvidia_smi_shim``); it runs this command. The container's GPUs are those of its node
(``DPCTL_SIM_NODE``, table in ``$DPCTL_SIM_STATE``) that ``NVIDIA_VISIBLE_DEVICES`` grants: UUIDs
or node indices, ``all`` for every GPU, and nothing when it is unset, empty, ``none`` or ``void``
("No devices were found", exit 6, as the real one).

Numbering is faithful to a real container: nvidia-smi there sees only the container's GPUs and
numbers them 0..n-1 in PCI order, while the UUIDs are the node's. So ``index`` equals the node-wide
index only in a container that sees ``all`` GPUs, which is how the ``gpu-map`` script runs, and
what makes the controller's ``CUDA_VISIBLE_DEVICES`` indices right in a runner that sees ``all``.

Memory in use (``memory.used``, ``memory.free``) is what the GPU ledger says the emulated servers
hold on each GPU (the sqlite ledger of ``$DPCTL_SIM_STATE``, or the one the caller passes, as the
hollow kubelet does); it is read only when asked for.

Supported: ``-L``/``--list-gpus``; ``--query-gpu=FIELDS --format=csv[,noheader][,nounits]`` with
the fields in ``_FIELDS``; ``-i``/``--id`` to pick GPUs by (container) index or UUID; and a plain
invocation printing a small table.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final, TextIO

from dpctl.gpuenv import NVIDIA_VISIBLE_DEVICES_ENV, SIM_NODE_ENV, parse_visible_devices
from dpsim.emulator.gputable import Gpu, GpuTable, load_gpu_table
from dpsim.emulator.ledger import GpuLedger, Ledger
from dpsim.simenv import ledger_path, state_dir

DRIVER_VERSION: Final = "570.86.15"
CUDA_VERSION: Final = "12.8"

# nvidia-smi's own exit codes.
EXIT_INVALID_ARGUMENT: Final = 2
EXIT_NOT_FOUND: Final = 6
EXIT_DRIVER_NOT_LOADED: Final = 9

_NO_DEVICES: Final = "No devices were found"
_NO_DRIVER: Final = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
    " Make sure that the latest NVIDIA driver is installed and running."
)


class _Failure(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# field (and alias) -> (csv header, value of (container index, GPU, table, MiB used per UUID), unit)
_Value = Callable[[int, Gpu, GpuTable, Mapping[str, int]], str]
_FIELDS: Final[dict[str, tuple[str, _Value, str]]] = {
    "index": ("index", lambda i, g, t, u: str(i), ""),
    "uuid": ("uuid", lambda i, g, t, u: g.uuid, ""),
    "gpu_uuid": ("uuid", lambda i, g, t, u: g.uuid, ""),
    "name": ("name", lambda i, g, t, u: t.name, ""),
    "gpu_name": ("name", lambda i, g, t, u: t.name, ""),
    "pci.bus_id": ("pci.bus_id", lambda i, g, t, u: g.pci_bus_id, ""),
    "gpu_bus_id": ("pci.bus_id", lambda i, g, t, u: g.pci_bus_id, ""),
    "memory.total": ("memory.total [MiB]", lambda i, g, t, u: str(t.memory_mib), "MiB"),
    "memory.used": ("memory.used [MiB]", lambda i, g, t, u: str(u.get(g.uuid, 0)), "MiB"),
    # Never below 0, as on a real GPU, although the ledger may count more than fits (see there).
    "memory.free": (
        "memory.free [MiB]",
        lambda i, g, t, u: str(max(0, t.memory_mib - u.get(g.uuid, 0))),
        "MiB",
    ),
    "driver_version": ("driver_version", lambda i, g, t, u: DRIVER_VERSION, ""),
}
_MEMORY_FIELDS: Final = frozenset({"memory.used", "memory.free"})
_COUNT_FIELD: Final = "count"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-L", "--list-gpus", action="store_true", help="one line per GPU")
    parser.add_argument(
        "--query-gpu", metavar="FIELD[,FIELD...]", help="fields: " + ", ".join([*_FIELDS, _COUNT_FIELD])
    )
    parser.add_argument("--format", metavar="csv[,noheader][,nounits]", help="output format of --query-gpu")
    parser.add_argument("-i", "--id", metavar="ID[,ID...]", help="only these GPUs (container index or UUID)")


def run(args: argparse.Namespace) -> int:
    return report(args, os.environ, sys.stdout, sys.stderr)


def report(
    args: argparse.Namespace,
    env: Mapping[str, str],
    out: TextIO,
    err: TextIO,
    ledger: GpuLedger | None = None,
) -> int:
    """``ledger``: where memory in use is read; the state dir's sqlite ledger when None."""
    try:
        table, gpus = _container_gpus(env)
        picked = _select(gpus, args.id)
        if args.query_gpu:
            out.write(
                _query(table, picked, len(gpus), args.query_gpu, args.format, lambda: _used(env, ledger))
            )
        elif args.list_gpus:
            out.write("".join(f"GPU {i}: {table.name} (UUID: {g.uuid})\n" for i, g in picked))
        else:
            out.write(_summary(table, picked))
    except _Failure as e:
        # The real nvidia-smi prints these two on stdout.
        print(e, file=out if e.code in (EXIT_NOT_FOUND, EXIT_DRIVER_NOT_LOADED) else err)
        return e.code
    return 0


# A GPU as the container numbers it.
_Numbered = tuple[int, Gpu]


def _container_gpus(env: Mapping[str, str]) -> tuple[GpuTable, list[_Numbered]]:
    devices = parse_visible_devices(env.get(NVIDIA_VISIBLE_DEVICES_ENV))
    if not devices.all and not devices.ids:
        raise _Failure(_NO_DEVICES, EXIT_NOT_FOUND)
    state, node = state_dir(env), env.get(SIM_NODE_ENV)
    if state is None or not node:
        raise _Failure(
            f"{_NO_DRIVER}\n(not in a simulated container: no node or state dir)", EXIT_DRIVER_NOT_LOADED
        )
    try:
        table = load_gpu_table(state, node)
        return table, list(enumerate(table.visible(devices)))
    except (OSError, ValueError) as e:
        raise _Failure(f"{_NO_DRIVER}\n(simulated node {node}: {e})", EXIT_DRIVER_NOT_LOADED) from e


def _used(env: Mapping[str, str], ledger: GpuLedger | None) -> dict[str, int]:
    if ledger is None:
        state = state_dir(env)
        assert state is not None  # _container_gpus failed otherwise
        try:
            ledger = Ledger(ledger_path(state))
        except (OSError, sqlite3.Error) as e:
            raise _Failure(f"{_NO_DRIVER}\n(cannot read the GPU ledger: {e})", EXIT_DRIVER_NOT_LOADED) from e
    return ledger.memory_used_mib()


def _select(gpus: list[_Numbered], ids: str | None) -> list[_Numbered]:
    if ids is None:
        return gpus
    picked: list[_Numbered] = []
    for device_id in (i.strip() for i in ids.split(",")):
        match = [(i, g) for i, g in gpus if device_id in (str(i), g.uuid)]
        if not match:
            raise _Failure(_NO_DEVICES, EXIT_NOT_FOUND)
        picked += [m for m in match if m not in picked]
    return picked


def _query(
    table: GpuTable,
    gpus: list[_Numbered],
    count: int,
    fields_arg: str,
    format_arg: str | None,
    used: Callable[[], Mapping[str, int]],
) -> str:
    options = [o.strip() for o in (format_arg or "").split(",")]
    if not format_arg or options[0] != "csv" or not set(options[1:]) <= {"noheader", "nounits"}:
        raise _Failure(
            '"--format=csv[,noheader][,nounits]" is required with --query-gpu', EXIT_INVALID_ARGUMENT
        )
    fields = [f.strip() for f in fields_arg.split(",")]
    for field in fields:
        if field not in _FIELDS and field != _COUNT_FIELD:
            raise _Failure(f'Field "{field}" is not a valid field to query.', EXIT_INVALID_ARGUMENT)
    rows: list[list[str]] = []
    if "noheader" not in options:
        rows.append([_FIELDS[f][0] if f in _FIELDS else f for f in fields])
    units = "nounits" not in options
    usage = used() if _MEMORY_FIELDS & set(fields) else {}
    rows += [[_cell(f, i, g, table, usage, count, units=units) for f in fields] for i, g in gpus]
    return "".join(", ".join(row) + "\n" for row in rows)


def _cell(
    field: str, index: int, gpu: Gpu, table: GpuTable, used: Mapping[str, int], count: int, *, units: bool
) -> str:
    if field == _COUNT_FIELD:
        return str(count)
    _, value, unit = _FIELDS[field]
    text = value(index, gpu, table, used)
    return f"{text} {unit}" if unit and units else text


def _summary(table: GpuTable, gpus: list[_Numbered]) -> str:
    rule = "+" + "-" * 78 + "+\n"
    title = f"NVIDIA-SMI {DRIVER_VERSION} (simulated node {table.node})  CUDA Version: {CUDA_VERSION}"
    lines = [rule, f"| {title:<76} |\n", rule, f"| {'GPU  Name':<24}{'Bus-Id':<18}{'Memory-Total':<34} |\n"]
    lines += [
        f"| {i:>3}  {table.name:<19}{g.pci_bus_id:<18}{f'{table.memory_mib}MiB':<34} |\n|      {g.uuid:<71} |\n"
        for i, g in gpus
    ]
    return "".join([*lines, rule])


def write_nvidia_smi_shim(bin_dir: Path, python_executable: str) -> Path:
    """Write ``bin_dir/nvidia-smi``, which runs `dpctl sim-nvidia-smi` with its arguments.

    Written atomically: a container may be running the old shim while another starts.
    """
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / "nvidia-smi"
    script = (
        "#!/bin/sh\n"
        "# nvidia-smi of a simulated container of the dpctl local cluster.\n"
        f'exec {shlex.quote(python_executable)} -m dpctl sim-nvidia-smi "$@"\n'
    )
    with tempfile.NamedTemporaryFile("w", dir=bin_dir, prefix=".nvidia-smi.", delete=False) as f:
        f.write(script)
    # Only the kubelet's user runs simulated containers.
    os.chmod(f.name, 0o700)
    os.replace(f.name, path)
    return path
