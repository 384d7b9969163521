"""Fixtures of the launcher path's acceptance tests (launcher contract §7), on the local cluster.

* ``lx_controller`` (package): one namespace for the whole package, the CRDs (as the chart
  installs them, Established before the controller starts: it looks for them at start), the
  launchers' ServiceAccount with its notifier's rights, and the controller installed by the
  chart exactly as the recipe suite installs it (``Dpctlr``), shared by every test here.
* ``launcher_invariants`` (autouse): the :class:`~.monitor.Monitor` of invariants I1–I5 and I7
  (§8), started before the test and checked after it: no violation, ever, while it ran, and the
  test's Pods gone the normal way afterwards (I7).
* ``lx``: the test's :class:`~.harness.Lx`; afterwards every requester, launcher, ISC and LC of the
  test is deleted while the controller runs, so the next test starts from an empty namespace.

A failing test's report has the Pods, their annotations, the controller log's tail, the
monitor's violations and the step timings.

The tests, by module: ``test_serve`` A1–A5, ``test_instances`` A6–A8, ``test_cold`` A9,
``test_failures`` A10–A11, ``test_restart`` A12 (and R17 after a restart), ``test_isc_edit`` A13.
About 3 minutes on a 2-core machine; the contract's deadlines scale with
``$DPCTL_E2E_TIMEOUT_SCALE``.

Needs the simulated kubelet (the GPU ledger, the simulated launcher image): skipped, saying so,
only on a foreign cluster.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dpctl import api
from dpctl.fma.v1alpha1 import KINDS
from dpsim.emulator.ledger import Ledger
from dpsim.simenv import ledger_path
from e2e.conftest import ClusterHandle
from e2e.deploy.chart import CHART
from e2e.dualpods.conftest import dump, release_finalizers
from e2e.recipe import Kubectl
from e2e.recipe_suite.conftest import Dpctlr, skip_unless_local
from helpers import wait_for

from . import objects
from .harness import Lx
from .monitor import IscKeys, Monitor, annots, deleting, is_launcher, labels, meta, name


@pytest.fixture(scope="package")
def lx_controller(cluster: ClusterHandle, node_viewer: str) -> Iterator[Dpctlr]:
    skip_unless_local(cluster, "the launcher path's tests (GPU ledger, simulated launcher image)")
    cluster.run_kubectl("apply", "--server-side", "-f", str(CHART / "crds"))
    for kind in KINDS:
        cluster.run_kubectl("wait", "--for=condition=Established", f"crd/{kind.crd_name}", "--timeout=60s")
    namespace = cluster.create_namespace("lx")
    kc = Kubectl(cluster.kubectl, str(cluster.kubeconfig), namespace)
    for obj in objects.launcher_rbac(namespace):
        kc.apply(obj)
    controller = Dpctlr(cluster, kc)
    try:
        controller.install()
        yield controller
    finally:
        try:
            kc.run("delete", "replicasets", "-l", objects.RS_LABEL, "--wait=false", check=False)
            kc.run("delete", "pods", "-l", "!app.kubernetes.io/instance", "--wait=false", check=False)
            if controller.installed:
                controller.uninstall()
        finally:
            release_finalizers(kc)
            cluster.run_kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture
def launcher_invariants(
    request: pytest.FixtureRequest, cluster: ClusterHandle, lx_controller: Dpctlr
) -> Iterator[tuple[Monitor, IscKeys, dict[str, int]]]:
    kc = lx_controller.kubectl
    keys = IscKeys()
    max_instances: dict[str, int] = {}
    assert cluster.state_dir is not None
    mon = Monitor(
        [cluster.kubectl, "--kubeconfig", str(cluster.kubeconfig)],
        kc.namespace,
        Ledger(ledger_path(Path(cluster.state_dir))),
        max_instances.get,
        keys,
    )
    mon.start()
    wait_for(mon.synced, 60, "the invariants monitor watching and polling")
    request.node.lx_monitor = mon
    yield mon, keys, max_instances
    mon.stop()
    call = getattr(request.node, "report_call", None)
    if call is not None and call.passed:
        assert not mon.violations, "launcher-path invariants violated while the test ran:\n" + mon.report()


@pytest.fixture(autouse=True)
def _invariants(launcher_invariants: tuple[Monitor, IscKeys, dict[str, int]]) -> None:
    """Every test here runs under the monitor."""


@pytest.fixture
def lx(
    request: pytest.FixtureRequest,
    cluster: ClusterHandle,
    lx_controller: Dpctlr,
    launcher_invariants: tuple[Monitor, IscKeys, dict[str, int]],
) -> Iterator[Lx]:
    mon, keys, max_instances = launcher_invariants
    kc = lx_controller.kubectl
    nodes = sorted(n["metadata"]["name"] for n in kc.get_json("nodes")["items"])
    harness = Lx(kc, lx_controller, mon, keys, nodes[0], max_instances)
    request.node.lx = harness
    yield harness
    print("timings:\n" + "\n".join(harness.timings))
    harness.cleanup()


def launcher_history(mon: Monitor) -> list[str]:
    """Each observed update of each launcher, one line each: the evidence for I2/I3/A3 failures."""
    lines = []
    for u in mon.updates():
        if not is_launcher(u.pod):
            continue
        lab, ann = labels(u.pod), annots(u.pod)
        stamp = time.strftime("%H:%M:%S", time.gmtime(u.at)) + f".{int(u.at % 1 * 1000):03d}Z"
        lines.append(
            f"{stamp} {u.type} {name(u.pod)} requester={ann.get(api.REQUESTER_ANNOTATION)!r} "
            f"sleeping={lab.get(api.SLEEPING_LABEL)!r} isc-labels={[k for k in lab if k in mon.keys.labels]} "
            f"isc-annotations={[k for k in ann if k in mon.keys.annotations]} "
            f"finalizers={meta(u.pod).get('finalizers')} deleting={deleting(u.pod)}"
        )
    return lines


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    if report.failed:
        parts = []
        harness: Lx | None = getattr(item, "lx", None)
        mon: Monitor | None = getattr(item, "lx_monitor", None)
        if harness is not None:
            try:
                parts.append(dump(harness.kc, harness.dpctlr, tail=120))
                parts.append("--- dual-pods labels and annotations ---")
                for p in harness.kc.pods():
                    keep = {
                        k: v
                        for k, v in {
                            **(p["metadata"].get("labels") or {}),
                            **(p["metadata"].get("annotations") or {}),
                        }.items()
                        if k.startswith(("dual-pods.llm-d.ai/", "e2e-test.fma.llm-d.ai/"))
                    }
                    parts.append(f"{p['metadata']['name']}: {json.dumps(keep)}")
                parts.append("--- launchers' instances ---")
                for p in harness.launchers():
                    name = p["metadata"]["name"]
                    parts.append(f"{name}: {json.dumps(harness.listing(name))}")
            except Exception as e:  # a diagnostic must never hide the failure it explains
                parts.append(f"(diagnostics failed: {e})")
            parts.append("--- timings ---\n" + "\n".join(harness.timings))
        if mon is not None:
            parts.append(
                "--- launcher updates (watch time; bound to; sleeping; ISC labels; ISC annotations) ---"
            )
            parts.extend(launcher_history(mon))
        if mon is not None:
            parts.append("--- invariant violations so far ---\n" + (mon.report() or "(none)"))
        report.sections.append(("launcher-path diagnostics", "\n".join(parts)))
    return report
