"""`dpctl sim-kubelet` and `dpctl sim-kubelet ctl` command lines: usage errors are clear and fast."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpctl.cli import main


def test_serving_needs_its_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim-kubelet", "--nodes", "2"]) == 2
    assert "missing --kubeconfig, --state-dir, --gpus" in capsys.readouterr().err


def test_ca_cert_and_key_go_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "--kubeconfig",
        "k",
        "--state-dir",
        str(tmp_path),
        "--nodes",
        "1",
        "--gpus",
        "1",
        "--ca-cert",
        "c",
    ]
    assert main(["sim-kubelet", *args]) == 2
    assert "--ca-cert and --ca-key go together" in capsys.readouterr().err


def test_ctl_without_a_running_kubelet_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim-kubelet", "ctl", "--state-dir", str(tmp_path), "node", "node-1", "--not-ready"]) == 1
    assert "is sim-kubelet running?" in capsys.readouterr().err


def test_ctl_needs_exactly_one_action(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["sim-kubelet", "ctl", "--state-dir", str(tmp_path), "node", "node-1", "--ready", "--remove"])
    with pytest.raises(SystemExit):
        main(["sim-kubelet", "ctl", "--state-dir", str(tmp_path), "node", "node-1"])
