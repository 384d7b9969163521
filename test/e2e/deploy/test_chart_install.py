"""The Helm chart installed as the e2e recipe installs it, in a fresh namespace of the cluster under
test: the controller Pod becomes Running and Ready, ``kubectl logs deploy/dpctlr`` shows it
working, its ServiceAccount has exactly the rights it needs (Nodes through the ClusterRoleBinding,
no Secrets, nothing in other namespaces), and ``helm uninstall`` removes it all.

On the local cluster the simulated kubelet runs ``*/dual-pods-controller`` images as dpctl with
the chart's command line and the ServiceAccount's credentials. On another cluster, set
``$DPCTL_E2E_CONTROLLER_IMAGE`` to an image it can pull.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from e2e.deploy.chart import (
    RELEASE,
    SELECTOR,
    can_i,
    controller_pods,
    diagnostics,
    helm,
    install,
    running_and_ready,
)
from helpers import wait_for

if TYPE_CHECKING:
    from e2e.conftest import ClusterHandle  # the e2e session fixture's type

pytestmark = pytest.mark.timeout(600)


def test_chart_installs_runs_and_uninstalls(cluster: ClusterHandle, namespace: str, node_viewer: str) -> None:
    ns = namespace
    try:
        install(cluster, ns, node_viewer, "SleeperLimit=1")
        try:
            wait_for(
                lambda: [p for p in controller_pods(cluster, ns) if running_and_ready(p)],
                180,
                "the controller Pod to be Running and Ready",
            )
        except AssertionError as e:
            raise AssertionError(f"{e}\n{diagnostics(cluster, ns)}") from None

        # The recipe reads the controller's log this way.
        def synced_log() -> str:
            text = cluster.run_kubectl("logs", "-n", ns, f"deploy/{RELEASE}").stdout
            return text if "Caches synced" in text else ""

        log = wait_for(synced_log, 60, "'Caches synced' in kubectl logs deploy/dpctlr")
        assert "Cannot read Nodes" not in log, "the ClusterRoleBinding to NodeViewClusterRole did not take"
        (pod,) = controller_pods(cluster, ns)
        (container,) = pod["spec"]["containers"]
        assert "--sleeper-limit=1" in container["command"]

        # Exactly the rights it needs.
        assert can_i(cluster, ns, "list", "pods", "-n", ns)
        assert can_i(cluster, ns, "delete", "pods", "-n", ns)
        assert can_i(cluster, ns, "watch", "configmaps", "-n", ns)
        assert can_i(cluster, ns, "create", "events.events.k8s.io", "-n", ns)
        assert can_i(cluster, ns, "patch", "events", "-n", ns)
        assert can_i(cluster, ns, "list", "nodes")
        assert not can_i(cluster, ns, "get", "secrets", "-n", ns)
        assert not can_i(cluster, ns, "list", "secrets", "-n", ns)
        assert not can_i(cluster, ns, "update", "configmaps", "-n", ns)
        assert not can_i(cluster, ns, "update", "nodes")
        assert not can_i(cluster, ns, "create", "leases.coordination.k8s.io", "-n", ns)  # one replica
        for other in ("default", "kube-system"):
            assert not can_i(cluster, ns, "list", "pods", "-n", other)
        assert not can_i(cluster, ns, "list", "pods", "--all-namespaces")
    finally:
        helm(cluster, "uninstall", RELEASE, "--namespace", ns, "--wait", "--timeout", "2m", check=False)

    # Everything the chart made is gone, the cluster-scoped binding included.
    for kind in ("deployment", "serviceaccount", "role", "rolebinding", "service"):
        r = cluster.run_kubectl("get", kind, "-n", ns, "-l", SELECTOR, "-o", "name")
        assert r.stdout.strip() == "", f"left behind: {r.stdout}"
    r = cluster.run_kubectl("get", "clusterrolebinding", "-l", SELECTOR, "-o", "name")
    assert f"{ns}-{RELEASE}" not in r.stdout, r.stdout
    wait_for(lambda: not controller_pods(cluster, ns), 120, "the controller Pod to go away")
