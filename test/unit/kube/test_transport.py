"""The transport: the proxy is decided once at connect, requests do not consult the environment,
and which credentials connect loads (in-cluster or a kubeconfig). Against a real API server:
test/e2e/kube/test_transport_contract.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpctl.kube import Kube, env_proxy
from dpctl.kube.transport import Transport, in_cluster, kubeconfig_contexts
from dpsim.localcluster.pki import new_ca

from .conftest import kubeconfig


async def test_requests_do_not_look_at_the_environment(tmp_path: Path) -> None:
    kube = await Kube.connect(str(kubeconfig(tmp_path)))
    try:
        session = kube._api.rest_client.pool_manager
        assert not session.trust_env and not session.closed
        assert kube._api.rest_client.proxy is None
    finally:
        await kube.close()
    assert session.closed


async def test_the_environment_proxy_is_taken_once_at_connect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    kube = await Kube.connect(str(kubeconfig(tmp_path)))
    try:
        assert kube._api.rest_client.proxy == "http://proxy.example:3128"
    finally:
        await kube.close()


async def test_a_kubeconfig_proxy_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    kube = await Kube.connect(str(kubeconfig(tmp_path, proxy="http://mine.example:8080")))
    try:
        assert kube._api.rest_client.proxy == "http://mine.example:8080"
    finally:
        await kube.close()


def test_no_proxy_exempts_a_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "10.1.2.3,.cluster.local")
    assert env_proxy("https://10.1.2.3:6443") is None
    assert env_proxy("https://api.cluster.local:6443") is None
    assert env_proxy("https://api.example.com") == "http://proxy.example:3128"
    assert env_proxy("http://plain.example") is None  # only HTTPS_PROXY is set


def test_in_cluster_only_in_a_pod_without_a_kubeconfig(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    assert not in_cluster(None)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert in_cluster(None)
    assert not in_cluster("/some/kubeconfig")
    monkeypatch.setenv("KUBECONFIG", "/pod/kubeconfig")
    assert not in_cluster(None)
    monkeypatch.setenv("KUBECONFIG", "")
    assert in_cluster(None)


def test_kubeconfig_contexts_are_read_as_connect_reads_them(tmp_path: Path) -> None:
    contexts, current = kubeconfig_contexts(str(kubeconfig(tmp_path)))
    assert contexts == [{"name": "x", "context": {"cluster": "c", "user": "u"}}]
    assert current == contexts[0]
    with pytest.raises(Exception, match="current-context"):  # statuscmd falls back to "default"
        kubeconfig_contexts(str(tmp_path / "missing"))


async def test_in_cluster_connect_reads_the_mounted_service_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "token").write_text("pod-token")
    (tmp_path / "ca.crt").write_bytes(new_ca().cert_pem())  # any CA: nothing is sent
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    transport = await Transport.connect(service_account=tmp_path)
    try:
        assert transport.host == "https://10.0.0.1:443"
        assert transport.rest_client.proxy is None
    finally:
        await transport.close()
