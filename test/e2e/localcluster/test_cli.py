"""`dpctl local-cluster up|status|env|down` as a user runs them: one export line on stdout, an
idempotent up and down, and no process left behind, including after the supervisor is SIGKILLed."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from dpsim.localcluster.bins import ENV_BINS, Bins
from dpsim.localcluster.cluster import kubelet_available
from dpsim.localcluster.procs import proc_start_ticks, read_pid, read_pids
from helpers import wait_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[3]


@dataclass
class Cli:
    state_dir: Path
    env: dict[str, str]

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dpctl", "local-cluster", *args, "--state-dir", str(self.state_dir)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            cwd=REPO,
            check=False,
        )

    def processes(self) -> list[dict[str, object]]:
        """Every process whose command line mentions the state dir: ours, and only ours."""
        state = str(self.state_dir)
        return [
            p.info
            for p in psutil.process_iter(["pid", "name", "cmdline"])
            if any(state in a for a in p.info["cmdline"] or [])
        ]


@pytest.fixture
def cli(bins: Bins, tmp_path: Path) -> Iterator[Cli]:
    env = {**os.environ, ENV_BINS: bins.env_value(), "PYTHONPATH": str(REPO)}
    env.pop("KUBECONFIG", None)
    c = Cli(tmp_path / "cluster", env)
    try:
        yield c
    finally:
        c("down", timeout=180)  # whatever a failed assertion left running


def gone(pid: int) -> bool:
    return proc_start_ticks(pid) is None


def recorded_pids(state_dir: Path) -> dict[str, int]:
    return {r.name: r.pid for r in read_pids(state_dir / "pids")}


def nodes_args() -> list[list[str]]:
    return [["--nodes", "0"]] + ([["--nodes", "2", "--gpus", "4"]] if kubelet_available() else [])


@pytest.mark.parametrize("shape", nodes_args(), ids=lambda s: f"nodes{s[1]}")
def test_up_status_env_down(cli: Cli, shape: list[str]) -> None:
    up = cli("up", *shape)
    assert up.returncode == 0, up.stderr
    kubeconfig = cli.state_dir / "admin.kubeconfig"
    assert up.stdout == f"export KUBECONFIG={kubeconfig}\n"  # exactly one line; progress is on stderr
    pids = recorded_pids(cli.state_dir)
    assert {"supervisor", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} <= set(pids)
    assert all(proc_start_ticks(p) is not None for p in pids.values())

    status = cli("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "readyz:      HTTP 200" in status.stdout

    again = cli("up", *shape)
    assert again.returncode == 0
    assert again.stdout == up.stdout
    assert "already up" in again.stderr
    assert recorded_pids(cli.state_dir) == pids  # nothing restarted

    env = cli("env")
    assert env.returncode == 0
    assert f"export KUBECONFIG={kubeconfig}\n" in env.stdout
    shell = subprocess.run(
        ["bash", "-c", f"{env.stdout}\nkubectl get namespace default -o name && command -v helm"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.startswith("namespace/default\n")

    down = cli("down", timeout=180)
    assert down.returncode == 0, down.stderr
    for name, pid in pids.items():
        assert proc_start_ticks(pid) is None, f"{name} (pid {pid}) survived down"
    assert cli.processes() == []
    assert recorded_pids(cli.state_dir) == {}

    assert cli("down").returncode == 0  # nothing running is fine
    assert cli("status").returncode == 3
    assert cli("env").returncode == 1


def test_a_killed_supervisor_leaves_no_orphans(cli: Cli) -> None:
    assert cli("up", "--nodes", "0").returncode == 0
    pids = recorded_pids(cli.state_dir)
    supervisor = read_pid(cli.state_dir / "pids", "supervisor")
    assert supervisor is not None
    os.kill(supervisor.pid, signal.SIGKILL)  # no teardown code runs in it
    for name, pid in pids.items():
        wait_for(
            functools.partial(gone, pid),
            15,
            f"{name} (pid {pid}) to die with the supervisor",
        )
    down = cli("down")
    assert down.returncode == 0, down.stderr
    assert recorded_pids(cli.state_dir) == {}
    assert cli.processes() == []
    # And it comes back up cleanly on the same state dir.
    up = cli("up", "--nodes", "0")
    assert up.returncode == 0, up.stderr
    assert cli("down").returncode == 0
    assert cli.processes() == []
