"""The simulator's subcommands of `dpctl`, as ``sim/pyproject.toml``'s entry points name them.

One :class:`dpctl.cli.Command` per entry point (group ``dpctl.subcommands``), named as the
subcommand. Loading this module imports nothing heavy: `dpctl --help` reads it to list them.
"""

from __future__ import annotations

from typing import Final

from dpctl.cli import Command

LOCAL_CLUSTER: Final = Command("dpsim.localcluster.main", "bring the embedded local cluster up or down")
SIM_KUBELET: Final = Command("dpsim.kubelet.main", "the simulated kubelet of the local cluster")
SIM_NVIDIA_SMI: Final = Command("dpsim.nvidiasmi", "nvidia-smi as seen in a simulated container")
VLLM_EMULATOR: Final = Command("dpsim.emulator.main", "stand in for `vllm serve` where no GPU exists")
