"""Fixtures every unit test may use: ``helpers`` (test/helpers.py) importable, and real dpctl processes.

``spawn_dpctl(*args, env=...)`` runs ``.venv/bin/dpctl ARGS`` as a separate process with its
output captured in a file, and kills whatever is still running at teardown.

Property tests (hypothesis) run without its timing checks: a shared, loaded CI machine made input
generation "too slow" once, which says nothing about the code. Speed lives in ``make bench``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# test/helpers.py is shared by every test tree; `test` itself is not importable (stdlib shadows it).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DPCTL = Path(sys.executable).with_name("dpctl")

settings.register_profile("dpctl", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("dpctl")


@dataclass
class DpctlProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float) -> int:
        """SIGTERM, then the exit code; fails the test if it does not exit within ``timeout``."""
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"dpctl {self.proc.args!r} still running after {timeout}s; log:\n{self.log()}")

    def running(self) -> bool:
        return self.proc.poll() is None


SpawnDpctl = Callable[..., DpctlProcess]


@pytest.fixture
def spawn_dpctl(tmp_path: Path) -> Iterator[SpawnDpctl]:
    spawned: list[DpctlProcess] = []

    def spawn(*args: str, env: Mapping[str, str] | None = None) -> DpctlProcess:
        log_path = tmp_path / f"dpctl-{len(spawned)}.log"
        with log_path.open("wb") as out:
            proc = subprocess.Popen(
                [str(DPCTL), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(os.environ if env is None else env),
            )
        spawned.append(DpctlProcess(proc, log_path))
        return spawned[-1]

    yield spawn
    for p in spawned:
        if p.running():
            p.proc.kill()
        p.proc.wait()
