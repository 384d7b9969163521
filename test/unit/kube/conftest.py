"""Shared by the kube unit tests: a kubeconfig for an address nothing listens on (or a local
test server), and an environment without proxy variables or in-cluster markers."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import write_kubeconfig


def kubeconfig(tmp_path: Path, server: str = "https://10.1.2.3:6443", proxy: str | None = None) -> Path:
    cluster: dict[str, object] = {"server": server, "insecure-skip-tls-verify": True}
    if proxy:
        cluster["proxy-url"] = proxy
    return write_kubeconfig(tmp_path / "kubeconfig", cluster, {"token": "t"})


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
