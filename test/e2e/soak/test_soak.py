"""The fault-injection soak: seeded load and faults for ``--soak-duration`` seconds, invariant 1
checked on every poll of the GPU ledger throughout, then every fault undone and the whole system
required to converge within ``--soak-converge-timeout`` (see ``invariants.py`` for what converged
means). Nothing may be lost: zero violations.

The last line printed is one JSON object (also written to ``bench/results/soak-<UTC time>.json``)::

    {"duration_s": ..., "operations": ..., "faults": ..., "converge_s": ..., "violations": ..., ...}

``make test`` runs it for 180 s as part of the e2e suite; ``make soak DURATION=1800`` for longer.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dpctl.api import LogMsg
from e2e.dualpods.conftest import ControllerProcess, dump
from e2e.recipe import Kubectl

from .driver import Driver, World
from .invariants import GpuWatch, convergence_problems, pod_uids

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RESULTS = Path(__file__).resolve().parents[3] / "bench" / "results"
# Converged means: no problem found twice in a row, this far apart, with the same Pods.
STABLE_FOR_S = 5.0
SLEEPER_LIMIT = 1


def _converge(driver: Driver, ledger: Any, timeout: float) -> tuple[float | None, list[str]]:
    """Seconds until the system stayed right for STABLE_FOR_S, or None and the last problems."""
    began = time.monotonic()
    deadline = began + timeout
    first_ok: float | None = None
    uids: frozenset[str] = frozenset()
    problems: list[str] = ["not checked yet"]
    kubectl = driver.w.kubectl
    replicas = {name: n for name, (n, _) in driver.replicasets.items()}
    while time.monotonic() < deadline:
        driver.supervise()
        try:
            problems = convergence_problems(kubectl, ledger, replicas)
            now_uids = pod_uids(kubectl) if not problems else frozenset()
        except (AssertionError, ValueError) as err:  # the API server still restarting
            problems = [f"cannot look: {err}"]
        now = time.monotonic()
        if problems:
            first_ok = None
        elif first_ok is None or now_uids != uids:
            first_ok, uids = now, now_uids
        elif now - first_ok >= STABLE_FOR_S:
            return first_ok - began, []
        time.sleep(1.0)  # polling pace of a condition with a deadline
    return None, problems


def _log_count(controller: ControllerProcess, text: str) -> int:
    return controller.count(text)


def _did(controller: ControllerProcess) -> dict[str, int]:
    """How often the controller did each thing the contract names, from its log."""
    lines = controller.log().splitlines()
    what = {
        "created": LogMsg.CREATED_RUNNER,
        "bound": LogMsg.BOUND_RUNNER,
        "woke": LogMsg.WOKE,
        "slept": LogMsg.SLEPT,
        "unbound": LogMsg.UNBOUND_RUNNER,
        "evicted": LogMsg.SLEEPER_LIMIT_DELETE,
        "deleted": "Deleted server-running Pod runner=",
        "relayed": LogMsg.RELAYED_READINESS,
    }
    return {k: sum(1 for line in lines if text in line) for k, text in what.items()}


def test_soak_with_faults(
    cluster: Any,
    kubectl: Kubectl,
    gpu_map: dict[str, dict[str, int]],
    ledger: Any,
    start_controller: Any,
    soak_settings: tuple[float, int, float],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    if cluster.local is None:
        pytest.skip("the soak restarts the API server and the nodes: it needs the local cluster")
    duration, seed, converge_timeout = soak_settings
    controller = start_controller(SLEEPER_LIMIT)
    world = World(kubectl, controller, cluster.local.control_plane, Path(cluster.state_dir), sorted(gpu_map))
    driver = Driver(world, random.Random(seed))
    watch = GpuWatch(ledger, kubectl.namespace, lambda: dict(driver.restarted))
    watch.start()
    began = time.monotonic()
    try:
        while time.monotonic() - began < duration:
            driver.step()
            time.sleep(driver.pause())  # load shaping, not synchronisation
    finally:
        driver.finish()
    faulted_s = time.monotonic() - began
    converge_s, problems = _converge(driver, ledger, converge_timeout)
    watch.stop()

    violations = list(watch.violations) + list(driver.crashes)
    violations += [f"not converged after {converge_timeout:g} s: {p}" for p in problems]
    proc = controller.proc
    if proc is None or proc.poll() is not None:
        violations.append("the controller is not running at the end")
    result: dict[str, Any] = {
        "duration_s": round(faulted_s, 1),
        "operations": sum(driver.operations.values()),
        "faults": sum(driver.faults.values()),
        "converge_s": None if converge_s is None else round(converge_s, 1),
        "violations": len(violations),
        "seed": seed,
        "operations_by_kind": dict(sorted(driver.operations.items())),
        "faults_by_kind": dict(sorted(driver.faults.items())),
        "failed_actions": sum(driver.failed.values()),
        "controller_startup_exits": driver.startup_exits,
        "excused_restart_conflicts": len(watch.excused),
        "ledger_polls": watch.polls,
        "controller_unexpected_errors": _log_count(controller, "failed unexpectedly"),
        "controller_tracebacks": _log_count(controller, "Traceback"),
        "controller_did": _did(controller),
        "excused_details": watch.excused[:5],
        "violation_details": violations[:20],
    }
    line = json.dumps(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"soak-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json").write_text(line + "\n")
    (tmp_path / "soak-history.log").write_text("\n".join(driver.history) + "\n")
    if violations:
        print("\n".join(driver.history[-80:]))
        print(dump(kubectl, controller))
        print(f"history: {tmp_path / 'soak-history.log'}; controller log: {controller.log_path}")
    with capsys.disabled():
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    assert not violations, "\n".join(violations)
