"""The one `dpctl` command line: a table of subcommands, each living in its own module.

A subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``. Modules are
imported only when their subcommand runs, so `dpctl requester` never pays for the controller's
imports and a broken optional dependency cannot break unrelated subcommands.

Other installed distributions add subcommands through the entry-point group
:data:`ENTRY_POINT_GROUP`: each entry point is named as its subcommand and loads to a
:class:`Command`. That is how the simulator (``dpctl-sim``, in ``sim/``) adds `local-cluster`,
`sim-kubelet`, `sim-nvidia-smi` and `vllm-emulator` in a dev install, while the wheel and the
images, which lack it, simply do not list them. A built-in name is never replaced. Entry points
are read only when the command line names no built-in subcommand (help, or an added one), so
`dpctl requester` in every simulated container does not scan the installed distributions.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Final, NamedTuple, Protocol, cast

from dpctl import __version__


class Subcommand(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...
    def run(self, args: argparse.Namespace) -> int: ...


class Command(NamedTuple):
    """Where a subcommand lives and its line in ``dpctl --help``."""

    module: str
    help: str


ENTRY_POINT_GROUP: Final = "dpctl.subcommands"

SUBCOMMANDS: Final[dict[str, Command]] = {
    "controller": Command("dpctl.dualpods.main", "run the dual-pods controller"),
    "requester": Command("dpctl.stub.main", "run the requester stub (the server-requesting Pod's container)"),
    "render-runner": Command("dpctl.podbuild.render_cmd", "print the runner Pod the controller would create"),
    "status": Command("dpctl.status.cmd", "show GPUs, requesters, runners and sleepers of a namespace"),
    "launcher": Command(
        "dpctl.launcher.main", "run the launcher: start, list and stop vLLM instances over HTTP"
    ),
    "launcher-notifier": Command(
        "dpctl.launcher.notifier", "run the launcher Pod's sidecar that publishes instance changes on the Pod"
    ),
}


def added_subcommands() -> dict[str, Command]:
    """The subcommands other installed distributions add (see the module docstring)."""
    added: dict[str, Command] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in SUBCOMMANDS:
            continue
        command = ep.load()
        if not isinstance(command, Command):
            raise TypeError(
                f"entry point {ep.name} = {ep.value} ({ENTRY_POINT_GROUP}) is not a dpctl.cli.Command"
            )
        added[ep.name] = command
    return added


def _load(command: Command) -> Subcommand:
    return cast(Subcommand, importlib.import_module(command.module))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = argparse.ArgumentParser(prog="dpctl", description=__doc__.splitlines()[0] if __doc__ else None)
    top.add_argument("--version", action="version", version=f"dpctl {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Only the chosen subcommand's module is imported; the others just get their help line.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    table = SUBCOMMANDS if chosen in SUBCOMMANDS else {**SUBCOMMANDS, **added_subcommands()}
    for name, command in table.items():
        parser = sub.add_parser(name, help=command.help)
        if name == chosen:
            _load(command).add_arguments(parser)
    args = top.parse_args(argv)
    return _load(table[args.command]).run(args)
