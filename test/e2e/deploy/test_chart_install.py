"""The Helm chart installed as the e2e recipe installs it, in a fresh namespace of the cluster under
test: the controller Pod becomes Running and Ready, ``kubectl logs deploy/dpctlr`` shows it
working, its ServiceAccount has exactly the rights it needs (Nodes through the ClusterRoleBinding,
no Secrets, nothing in other namespaces), and ``helm uninstall`` removes it all.

On the local cluster the simulated kubelet runs ``*/dual-pods-controller`` images as dpctl with
the chart's command line and the ServiceAccount's credentials. On another cluster, set
``$DPCTL_E2E_CONTROLLER_IMAGE`` to an image it can pull.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from helpers import wait_for

if TYPE_CHECKING:
    from e2e.conftest import ClusterHandle  # the e2e session fixture's type

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "deploy" / "helm" / "dpctlr"
RELEASE = "dpctlr"
NODE_VIEWER = "dpctl-node-viewer"
IMAGE = os.environ.get("DPCTL_E2E_CONTROLLER_IMAGE") or "registry.local/dpctl/dual-pods-controller:dev"
SELECTOR = f"app.kubernetes.io/name=dpctlr,app.kubernetes.io/instance={RELEASE}"

pytestmark = pytest.mark.timeout(600)


def helm(cluster: ClusterHandle, *args: str, check: bool = True, timeout: float = 240) -> str:
    cmd = [cluster.helm] if cluster.helm else [str(REPO / "hack" / "helm.sh")]
    result = subprocess.run(
        [*cmd, "--kubeconfig", str(cluster.kubeconfig), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture
def node_viewer(cluster: ClusterHandle) -> Iterator[str]:
    """The recipe's NodeViewClusterRole (the local cluster has it; elsewhere made for the test)."""
    made = False
    if cluster.run_kubectl("get", "clusterrole", NODE_VIEWER, check=False).returncode != 0:
        cluster.run_kubectl("create", "clusterrole", NODE_VIEWER, "--verb=get,list,watch", "--resource=nodes")
        made = True
    yield NODE_VIEWER
    if made:
        cluster.run_kubectl("delete", "clusterrole", NODE_VIEWER, "--ignore-not-found", check=False)


def controller_pods(cluster: ClusterHandle, ns: str) -> list[dict[str, Any]]:
    out = cluster.run_kubectl("get", "pods", "-n", ns, "-l", SELECTOR, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def running_and_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status", {})
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
    return status.get("phase") == "Running" and ready


def diagnostics(cluster: ClusterHandle, ns: str) -> str:
    parts = []
    for args in (
        ["get", "pods", "-n", ns, "-o", "wide"],
        ["describe", "pods", "-n", ns, "-l", SELECTOR],
        ["logs", "-n", ns, f"deploy/{RELEASE}", "--tail=50"],
    ):
        r = cluster.run_kubectl(*args, check=False)
        parts.append(f"$ kubectl {' '.join(args)}\n{r.stdout}{r.stderr}")
    return "\n".join(parts)


def can_i(cluster: ClusterHandle, ns: str, *args: str) -> bool:
    r = cluster.run_kubectl("auth", "can-i", *args, f"--as=system:serviceaccount:{ns}:{RELEASE}", check=False)
    answer = r.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl auth can-i {' '.join(args)}: {r.stdout}{r.stderr}"
    return answer == "yes"


def test_chart_installs_runs_and_uninstalls(cluster: ClusterHandle, namespace: str, node_viewer: str) -> None:
    ns = namespace
    try:
        helm(
            cluster,
            "upgrade",
            "--install",
            RELEASE,
            str(CHART),
            "--namespace",
            ns,
            "--set",
            f"Image={IMAGE}",
            "--set",
            f"NodeViewClusterRole={node_viewer}",
            "--set",
            "SleeperLimit=1",
        )
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
