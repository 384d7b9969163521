"""Security of the installed controller: it runs in-cluster with the chart's ServiceAccount and does
its job (a requester gets served), it is denied what it does not need, its Pod runs non-root, and
no credential reaches a log.

- Rights, asked with ``kubectl auth can-i --as=system:serviceaccount:<ns>:dpctlr``: Secrets no;
  Pods in another namespace no; deleting Nodes no; creating Pods in its namespace yes; reading
  Nodes yes with ``NodeViewClusterRole`` and no without it (the chart then binds nothing
  cluster-wide).
- Logs: neither the ServiceAccount token the kubelet gave the controller's Pod nor the words
  ``Bearer `` appear in the controller's log (at the chart's verbosity 5), in the requester's
  and runner's logs, or in the simulated kubelet's log.
- Non-root: the Containerfile's ``USER`` lines are checked in test/e2e/deploy/test_wheel_install.py;
  here, the running Pod's security context (what the kubelet is told to enforce).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dpctl import api
from dpctl.dualpods import podview
from dpsim.emulator.gputable import load_gpu_table
from dpsim.kubelet.podrecord import pod_dir_name
from dpsim.kubelet.tokens import service_account_dir
from e2e.deploy.chart import (
    CHART,
    IMAGE,
    NODE_VIEWER,
    RELEASE,
    can_i,
    controller_pods,
    diagnostics,
    helm,
    running_and_ready,
)
from e2e.recipe import Kubectl, ServerPatch, bound_runner_of, is_ready, mkrs, requesters_of
from helpers import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

TIMEOUT = 180


def _install(cluster: Any, ns: str, node_view_role: str) -> None:
    helm(
        cluster,
        "upgrade",
        "--install",
        RELEASE,
        str(CHART),
        "-n",
        ns,
        "--set",
        f"Image={IMAGE}",
        "--set",
        f"NodeViewClusterRole={node_view_role}",
        "--wait",
        "--timeout",
        "3m",
    )


def _served(kubectl: Kubectl, rs: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    pods = kubectl.pods()
    for req in requesters_of(pods, rs):
        runner = bound_runner_of(pods, req)
        if runner is not None and is_ready(req) and is_ready(runner):
            return dict(req), dict(runner)
    return None


def test_controller_in_cluster_has_exactly_the_rights_it_needs(
    cluster: Any, namespace: str, node_viewer: str
) -> None:
    if cluster.state_dir is None:
        pytest.skip("reads the kubelet's copy of the token and its log: needs the local cluster")
    ns = namespace
    kubectl = Kubectl(cluster.kubectl, str(cluster.kubeconfig), ns)
    state_dir = Path(cluster.state_dir)
    try:
        _install(cluster, ns, node_viewer)
        try:
            wait_for(
                lambda: [p for p in controller_pods(cluster, ns) if running_and_ready(p)],
                TIMEOUT,
                "the controller Pod Running and Ready",
            )
        except AssertionError as e:
            raise AssertionError(f"{e}\n{diagnostics(cluster, ns)}") from None
        (controller,) = controller_pods(cluster, ns)

        # It does its job with these rights: a requester is served.
        nodes = [n["metadata"]["name"] for n in kubectl.get_json("nodes")["items"]]
        data = {n: json.dumps({g.uuid: g.index for g in load_gpu_table(state_dir, n).gpus}) for n in nodes}
        kubectl.apply(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": api.GPU_MAP_NAME}, "data": data}
        )
        kubectl.apply(mkrs("secure", ServerPatch(startup_delay_s=1.0)))
        req, runner = wait_for(
            lambda: _served(kubectl, "secure"), TIMEOUT, "a requester served by the chart's controller"
        )

        # Denied what it does not need; allowed what it does.
        assert not can_i(cluster, ns, "get", "secrets", "-n", ns)
        assert not can_i(cluster, ns, "list", "pods", "-n", "kube-system")
        assert not can_i(cluster, ns, "list", "pods", "-n", "default")
        assert not can_i(cluster, ns, "delete", "nodes")
        assert not can_i(cluster, ns, "create", "serviceaccounts/token", "-n", ns)
        assert can_i(cluster, ns, "create", "pods", "-n", ns)
        assert can_i(cluster, ns, "get", "nodes")

        # Non-root, no privilege escalation, as the Pod is told to run.
        pod_sc = controller["spec"].get("securityContext") or {}
        (container,) = controller["spec"]["containers"]
        sc = container.get("securityContext") or {}
        assert sc.get("runAsNonRoot") is True or pod_sc.get("runAsNonRoot") is True
        assert (sc.get("runAsUser") or pod_sc.get("runAsUser")) not in (None, 0)
        assert sc.get("allowPrivilegeEscalation") is False
        assert sc.get("capabilities", {}).get("drop") == ["ALL"]

        # No token in any log.
        token_file = (
            service_account_dir(
                state_dir / "pods" / pod_dir_name(ns, podview.name(controller), podview.uid(controller))
            )
            / "token"
        )
        token = token_file.read_text().strip()
        assert len(token) > 100, f"{token_file} holds no token"
        logs = {
            "controller": cluster.run_kubectl("logs", "-n", ns, podview.name(controller)).stdout,
            "requester": kubectl.run("logs", podview.name(req)),
            "runner": kubectl.run("logs", podview.name(runner)),
            "sim-kubelet": (state_dir / "logs" / "sim-kubelet.log").read_text(errors="replace"),
        }
        assert "Caches synced" in logs["controller"], "the controller log is not the one expected"
        for where, text in logs.items():
            assert token not in text, f"the controller's ServiceAccount token is in the {where} log"
            assert token.split(".")[2] not in text, f"the token's signature is in the {where} log"
            assert "Bearer " not in text, f"'Bearer ' is in the {where} log"

        # Without NodeViewClusterRole the chart binds nothing cluster-wide: no Nodes.
        _install(cluster, ns, "")
        wait_for(lambda: not can_i(cluster, ns, "get", "nodes"), 60, "no right to read Nodes")
        assert not can_i(cluster, ns, "list", "nodes")
        assert can_i(cluster, ns, "create", "pods", "-n", ns)
    finally:
        kubectl.run("delete", "rs", "secure", "--wait=false", check=False)
        helm(cluster, "uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "2m", check=False)
        for pod in kubectl.pods():
            if podview.finalizers(pod):
                kubectl.run(
                    "patch",
                    "pod",
                    podview.name(pod),
                    "--type=merge",
                    "-p",
                    '{"metadata":{"finalizers":null}}',
                    check=False,
                )


def test_node_viewer_is_the_recipes(cluster: Any, node_viewer: str) -> None:
    """The ClusterRole the chart binds grants reading Nodes and nothing else."""
    role = json.loads(cluster.run_kubectl("get", "clusterrole", node_viewer, "-o", "json").stdout)
    assert node_viewer == NODE_VIEWER
    for rule in role["rules"]:
        assert set(rule.get("resources") or []) <= {"nodes"}, rule
        assert set(rule.get("verbs") or []) <= {"get", "list", "watch"}, rule
