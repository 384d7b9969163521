"""Options and fixtures of the fault-injection soak.

``--soak-duration`` (seconds of load and faults, default 180: the length ``make test`` runs;
``make soak DURATION=...`` passes its own), ``--soak-seed`` (the driver's random seed; default a
fixed one: the driver's draws repeat, though what they land on depends on the cluster's timing) and
``--soak-converge-timeout`` (how long the system may take to settle once the faults stop).

The options are registered here, so they exist when pytest is pointed at this directory (as
``make soak`` does); when the whole e2e tree runs (``make test``) this file is read after the
command line was parsed and the defaults apply. The test's pytest-timeout is derived from them.

The dual-pods fixtures (``kubectl``, ``gpu_map``, ``ledger``, ``start_controller``) are shared
with ``test/e2e/dualpods``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.dualpods.conftest import gpu_map, kubectl, ledger, start_controller

__all__ = ["gpu_map", "kubectl", "ledger", "start_controller"]

DEFAULT_DURATION_S = 180.0
DEFAULT_SEED = 20260807
DEFAULT_CONVERGE_TIMEOUT_S = 120.0
# Cluster start, controller start, the final checks and the teardown, beyond load and settling.
OVERHEAD_S = 420.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("soak", "dpctl fault-injection soak")
    group.addoption(
        "--soak-duration",
        type=float,
        default=DEFAULT_DURATION_S,
        help=f"seconds of load and faults (default {DEFAULT_DURATION_S:g})",
    )
    group.addoption("--soak-seed", type=int, default=DEFAULT_SEED, help="random seed of the soak driver")
    group.addoption(
        "--soak-converge-timeout",
        type=float,
        default=DEFAULT_CONVERGE_TIMEOUT_S,
        help=f"seconds to settle after the faults stop (default {DEFAULT_CONVERGE_TIMEOUT_S:g})",
    )


def option(config: pytest.Config, name: str, default: float) -> float:
    """An option's value, or its default where the option was registered too late to parse."""
    value = config.getoption(name, default=None)
    return float(default if value is None else value)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    budget = (
        option(config, "soak_duration", DEFAULT_DURATION_S)
        + option(config, "soak_converge_timeout", DEFAULT_CONVERGE_TIMEOUT_S)
        + OVERHEAD_S
    )
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.timeout(int(budget)))


@pytest.fixture
def soak_settings(request: pytest.FixtureRequest) -> tuple[float, int, float]:
    """(duration in seconds, seed, converge timeout in seconds)."""
    config = request.config
    return (
        option(config, "soak_duration", DEFAULT_DURATION_S),
        int(option(config, "soak_seed", DEFAULT_SEED)),
        option(config, "soak_converge_timeout", DEFAULT_CONVERGE_TIMEOUT_S),
    )
