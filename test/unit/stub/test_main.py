"""`dpctl requester` as a real process: it serves once its log says it started, exits 0 soon after
SIGTERM, and exits with a distinct code when a port is taken or malformed."""

from __future__ import annotations

import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from helpers import wait_for

if TYPE_CHECKING:
    from unit.conftest import DpctlProcess, SpawnDpctl

UUID_A = "GPU-11111111-2222-3333-4444-555555555555"
# Far below a pod's 30 s grace period; generous for a loaded 2-core machine.
EXIT_DEADLINE_S = 10


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def post(url: str) -> int:
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=2) as resp:
        return int(resp.status)


@pytest.fixture
def stub_env(tmp_path: Path, unused_tcp_port_factory: Callable[[], int]) -> dict[str, str]:
    empty = tmp_path / "no-nvidia-smi"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPCTL_")}
    env.update(
        PATH=f"{empty}:/usr/bin:/bin",
        DPCTL_LISTEN_HOST="127.0.0.1",
        PROBES_PORT=str(unused_tcp_port_factory()),
        SPI_PORT=str(unused_tcp_port_factory()),
        NVIDIA_VISIBLE_DEVICES=UUID_A,
    )
    return env


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def started(proc: DpctlProcess) -> bool:
    assert proc.running(), f"exited early with {proc.proc.returncode}:\n{proc.log()}"
    return "Requester stub started" in proc.log()


def test_serves_then_exits_0_on_sigterm(spawn_dpctl: SpawnDpctl, stub_env: dict[str, str]) -> None:
    proc = spawn_dpctl("requester", env=stub_env)
    wait_for(lambda: started(proc), 20, "the stub to say it started")
    probes = f"http://127.0.0.1:{stub_env['PROBES_PORT']}"
    spi = f"http://127.0.0.1:{stub_env['SPI_PORT']}"
    # Both listeners are bound by the time the log says so: no retry needed.
    assert get(f"{probes}/ready")[0] == 503
    assert get(f"{spi}/v1/dual-pod/accelerators") == (200, f'["{UUID_A}"]')
    assert post(f"{spi}/v1/become-ready") == 200
    assert get(f"{probes}/ready") == (200, "OK")
    sent = time.monotonic()
    assert proc.terminate(EXIT_DEADLINE_S) == 0
    assert time.monotonic() - sent < EXIT_DEADLINE_S
    assert "shutting down" in proc.log()


def test_sigterm_right_after_start(spawn_dpctl: SpawnDpctl, stub_env: dict[str, str]) -> None:
    proc = spawn_dpctl("requester", env=stub_env)
    wait_for(lambda: started(proc), 20, "the stub to say it started")
    assert proc.terminate(EXIT_DEADLINE_S) == 0


@pytest.mark.parametrize(("port_env", "code"), [("PROBES_PORT", 10), ("SPI_PORT", 11)])
def test_port_in_use_exits_with_distinct_code(
    spawn_dpctl: SpawnDpctl, stub_env: dict[str, str], taken_port: int, port_env: str, code: int
) -> None:
    proc = spawn_dpctl("requester", env={**stub_env, port_env: str(taken_port)})
    assert proc.wait(20) == code
    assert f"127.0.0.1:{taken_port}" in proc.log()
    assert "Requester stub started" not in proc.log()


def test_malformed_port_exits_2(spawn_dpctl: SpawnDpctl, stub_env: dict[str, str]) -> None:
    proc = spawn_dpctl("requester", env={**stub_env, "SPI_PORT": "eighty"})
    assert proc.wait(20) == 2
    assert "SPI_PORT='eighty' is not a TCP port" in proc.log()
