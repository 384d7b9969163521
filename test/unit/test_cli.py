"""The `dpctl` command line: built-in subcommands, and those other distributions add by entry point."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from dpctl import cli
from dpctl.cli import ENTRY_POINT_GROUP, Command


def _entry_point(name: str, value: str) -> EntryPoint:
    return EntryPoint(name, value, ENTRY_POINT_GROUP)


ADDED = Command("dpsim.nvidiasmi", "added")


def test_the_simulator_adds_its_subcommands_in_a_dev_install() -> None:
    added = cli.added_subcommands()
    assert sorted(added) == ["local-cluster", "sim-kubelet", "sim-nvidia-smi", "vllm-emulator"]
    assert added["sim-kubelet"].module == "dpsim.kubelet.main"


def test_a_builtin_name_is_never_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    eps = [
        _entry_point("controller", f"{__name__}:ADDED"),
        _entry_point("extra", f"{__name__}:ADDED"),
    ]
    monkeypatch.setattr(cli, "entry_points", lambda group: eps if group == ENTRY_POINT_GROUP else [])
    assert cli.added_subcommands() == {"extra": ADDED}


def test_an_entry_point_that_is_not_a_command_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    eps = [_entry_point("odd", f"{__name__}:_entry_point")]
    monkeypatch.setattr(cli, "entry_points", lambda group: eps)
    with pytest.raises(TypeError, match="odd"):
        cli.added_subcommands()


def test_a_builtin_subcommand_does_not_read_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    def unexpected(group: str) -> list[EntryPoint]:
        raise AssertionError("entry points were read")

    monkeypatch.setattr(cli, "entry_points", unexpected)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["status", "--help"])
    assert exit_.value.code == 0
