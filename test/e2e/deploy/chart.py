"""The Helm chart as the e2e tests install it: where it is, the image it runs, `helm` itself, and
what the tests ask of the release it makes (its Pods, its ServiceAccount's rights)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from e2e.conftest import ClusterHandle  # the e2e session fixture's type

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "deploy" / "helm" / "dpctlr"
RELEASE = "dpctlr"
NODE_VIEWER = "dpctl-node-viewer"
SELECTOR = f"app.kubernetes.io/name=dpctlr,app.kubernetes.io/instance={RELEASE}"
IMAGE = os.environ.get("DPCTL_E2E_CONTROLLER_IMAGE") or "registry.local/dpctl/dual-pods-controller:dev"


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


def install(cluster: ClusterHandle, ns: str, node_viewer: str, *values: str) -> None:
    """``helm upgrade --install`` of the chart in ``ns`` as the recipe does, plus ``--set`` ``values``."""
    sets = [
        a for v in (f"Image={IMAGE}", f"NodeViewClusterRole={node_viewer}", *values) for a in ("--set", v)
    ]
    helm(cluster, "upgrade", "--install", RELEASE, str(CHART), "--namespace", ns, *sets)


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
