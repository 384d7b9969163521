"""The one `dpctl` command line: a table of subcommands, each living in its own module.

A subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``. Modules are
imported only when their subcommand runs, so `dpctl requester` never pays for the controller's
imports and a broken optional dependency cannot break unrelated subcommands.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Protocol, cast

from dpctl import __version__


class Subcommand(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...
    def run(self, args: argparse.Namespace) -> int: ...


# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "controller": ("dpctl.dualpods.main", "run the dual-pods controller"),
    "requester": ("dpctl.stub.main", "run the requester stub (the server-requesting Pod's container)"),
    "vllm-emulator": ("dpctl.emulator.main", "stand in for `vllm serve` where no GPU exists"),
    "render-runner": ("dpctl.podbuild.render_cmd", "print the runner Pod the controller would create"),
    "status": ("dpctl.status.cmd", "show GPUs, requesters, runners and sleepers of a namespace"),
    "local-cluster": ("dpctl.localcluster.main", "bring the embedded local cluster up or down"),
    "sim-kubelet": ("dpctl.localcluster.kubelet.main", "the simulated kubelet of the local cluster"),
    "sim-nvidia-smi": ("dpctl.localcluster.nvidiasmi", "nvidia-smi as seen in a simulated container"),
}


def _load(name: str) -> Subcommand:
    module, _ = SUBCOMMANDS[name]
    return cast(Subcommand, importlib.import_module(module))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = argparse.ArgumentParser(prog="dpctl", description=__doc__.splitlines()[0] if __doc__ else None)
    top.add_argument("--version", action="version", version=f"dpctl {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Only the chosen subcommand's module is imported; the others just get their help line.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (_, help_) in SUBCOMMANDS.items():
        parser = sub.add_parser(name, help=help_)
        if name == chosen:
            _load(name).add_arguments(parser)
    args = top.parse_args(argv)
    return _load(args.command).run(args)
