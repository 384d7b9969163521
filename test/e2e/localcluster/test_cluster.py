"""The session ``cluster`` fixture as other e2e tests see it: KUBECONFIG and PATH point at it, the
setup e2e relies on is there, the nodes are Ready with GPUs, and ``namespace`` is ready for pods."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from dpsim.localcluster.cluster import GPU_RESOURCE, NODE_VIEWER_CLUSTER_ROLE
from e2e.conftest import ClusterHandle
from helpers import wait_for

pytestmark = pytest.mark.e2e


def test_kubeconfig_and_tools_are_set_up(cluster: ClusterHandle) -> None:
    assert Path(os.environ["KUBECONFIG"]) == cluster.kubeconfig
    assert shutil.which("kubectl") == cluster.kubectl
    if cluster.helm:
        assert shutil.which("helm") == cluster.helm
    assert cluster.run_kubectl("get", "--raw", "/readyz").stdout == "ok"


def test_node_viewer_cluster_role_exists(cluster: ClusterHandle) -> None:
    role = json.loads(
        cluster.run_kubectl("get", "clusterrole", NODE_VIEWER_CLUSTER_ROLE, "-o", "json").stdout
    )
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}]


def test_nodes_are_ready_with_gpus(cluster: ClusterHandle) -> None:
    if cluster.local is None or not cluster.local.with_kubelet:
        pytest.skip("no simulated nodes in this session")
    nodes = json.loads(cluster.run_kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert len(nodes) == cluster.local.nodes
    for node in nodes:
        assert node["status"]["allocatable"][GPU_RESOURCE] == str(cluster.local.gpus)
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True"


def test_namespace_fixture_is_ready_for_pods(cluster: ClusterHandle, namespace: str) -> None:
    sa = cluster.run_kubectl("get", "serviceaccount", "default", "-n", namespace, "-o", "name")
    assert sa.stdout.strip() == "serviceaccount/default"


def test_apiserver_reaches_the_kubelet(cluster: ClusterHandle, namespace: str) -> None:
    """`kubectl logs` goes apiserver -> kubelet over TLS: our kubelet client certificate, and the
    kubelet's serving certificate checked against our CA (--kubelet-certificate-authority)."""
    if cluster.local is None or not cluster.local.with_kubelet:
        pytest.skip("no simulated nodes in this session")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "echo"},
        "spec": {
            "containers": [
                {"name": "c", "image": "busybox", "command": ["sh", "-c", "echo hello-logs; exec sleep 600"]}
            ],
            "terminationGracePeriodSeconds": 1,
        },
    }
    cluster.run_kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pod))
    logs = wait_for(
        lambda: cluster.run_kubectl("logs", "-n", namespace, "echo", check=False).stdout,
        60,
        "logs of pod echo",
    )
    assert logs.strip() == "hello-logs"
