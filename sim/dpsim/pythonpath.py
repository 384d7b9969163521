"""``PYTHONPATH`` for the processes the simulator starts (the kubelet, its containers).

They run ``python -m dpctl ...`` from other working directories (a pod's ``home/``), so the
folders holding the ``dpctl`` and ``dpsim`` packages go first on their path, whether the two are
installed or run from a checkout. The simulator's subcommands of `dpctl` are still found through
dpctl-sim's installed entry points (``dpctl.cli``), which is why ``make dev`` installs it.
"""

from __future__ import annotations

import os
from pathlib import Path

import dpctl
import dpsim


def with_our_packages(pythonpath: str | None) -> str:
    """``pythonpath`` with the folders of dpctl and dpsim first, each folder once."""
    ours = [str(Path(p.__file__).resolve().parents[1]) for p in (dpctl, dpsim) if p.__file__]
    rest = [p for p in (pythonpath or "").split(os.pathsep) if p]
    return os.pathsep.join(dict.fromkeys([*ours, *rest]))
