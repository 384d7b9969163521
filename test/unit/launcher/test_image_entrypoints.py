"""The launcher image's /app scripts (upstream's command lines) run dpctl's launcher and notifier."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parents[3] / "deploy" / "launcher-image"


def run_app(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("POD_NAME", "NAMESPACE")}
    return subprocess.run(
        [sys.executable, str(APP / script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_launcher_py_takes_upstreams_flags() -> None:
    result = run_app("launcher.py", "--help")
    assert result.returncode == 0, result.stderr
    for flag in ("--host", "--port", "--log-level", "--mock-gpus", "--mock-gpu-count"):
        assert flag in result.stdout


def test_launcher_pod_notifier_py_is_the_notifier() -> None:
    result = run_app("launcher_pod_notifier.py")
    assert result.returncode == 2
    assert "missing required environment variable POD_NAME and NAMESPACE" in result.stderr
