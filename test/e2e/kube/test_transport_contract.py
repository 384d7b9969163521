"""Contract of the transport seam (dpctl/kube/transport.py) against a real API server.

The transport reaches into kubernetes-asyncio's internals (its REST client's session, proxy and
TLS server name, ``update_params_for_auth``, the in-cluster token refresh hook), pinned to one
version. These tests hold every piece of that seam the controller relies on, through a
:class:`~dpctl.kube.Kube`, so that a library upgrade that moves one fails here, by name, rather
than as an opaque failure of every call:

- a client certificate (the admin kubeconfig) authenticates as the certificate's subject;
- a bearer token in a kubeconfig (a ServiceAccount's, from the TokenRequest API) authenticates
  as that ServiceAccount, RBAC applies to it, a watch streams with it, and a bad token is 401;
- in-cluster credentials: the token file is re-read while connected (the kubelet rotates a
  projected token in place), and a call after the change is made with the new token;
- ``tls-server-name`` is the name the server's certificate is checked against;
- proxies: a kubeconfig ``proxy-url`` and ``HTTPS_PROXY`` tunnel through a CONNECT proxy,
  ``NO_PROXY`` bypasses it, and the environment is read once, at connect.

Who a call was made as is the API server's own answer (a SelfSubjectReview). The proxy is a
small CONNECT proxy run by the test, which records each tunnel it opens.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from dpctl.kube import CONFIGMAPS, PODS, ApiError, Kube, is_transient
from dpctl.kube.transport import Transport
from e2e.conftest import ClusterHandle
from helpers import async_wait_for, write_kubeconfig

pytestmark = pytest.mark.e2e

# Every wait on the network in this file ends by then.
IO_TIMEOUT_S = 30.0
# kubernetes-asyncio re-reads the in-cluster token file once its copy is a minute old.
TOKEN_REFRESH_DEADLINE_S = 120.0
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")


@dataclass(frozen=True)
class Admin:
    """The cluster's admin kubeconfig, read into the sections a derived kubeconfig reuses."""

    path: Path
    cluster: dict[str, Any]  # with file paths made absolute
    user: dict[str, Any]

    @property
    def server(self) -> str:
        return str(self.cluster["server"])

    @property
    def host_port(self) -> tuple[str, int]:
        parts = urllib.parse.urlsplit(self.server)
        return parts.hostname or "", parts.port or 443

    def ca_pem(self) -> bytes | None:
        if self.cluster.get("certificate-authority-data"):
            return base64.b64decode(self.cluster["certificate-authority-data"])
        if self.cluster.get("certificate-authority"):
            return Path(self.cluster["certificate-authority"]).read_bytes()
        return None

    def client_certificate(self) -> x509.Certificate | None:
        if self.user.get("client-certificate-data"):
            return x509.load_pem_x509_certificate(base64.b64decode(self.user["client-certificate-data"]))
        if self.user.get("client-certificate"):
            return x509.load_pem_x509_certificate(Path(self.user["client-certificate"]).read_bytes())
        return None

    def derived(
        self, path: Path, cluster: dict[str, Any] | None = None, user: dict[str, Any] | None = None
    ) -> str:
        """A kubeconfig at ``path``: this cluster with ``cluster``'s keys added, and ``user`` in
        place of the admin's credentials when given."""
        write_kubeconfig(path, {**self.cluster, **(cluster or {})}, self.user if user is None else user)
        return str(path)


@pytest.fixture(scope="module")
def admin(cluster: ClusterHandle) -> Admin:
    doc = yaml.safe_load(cluster.kubeconfig.read_text())
    current = next(c["context"] for c in doc["contexts"] if c["name"] == doc["current-context"])
    section = next(c["cluster"] for c in doc["clusters"] if c["name"] == current["cluster"])
    user = next(u["user"] for u in doc["users"] if u["name"] == current["user"])
    base = cluster.kubeconfig.parent

    def absolute(entry: dict[str, Any], *keys: str) -> dict[str, Any]:
        return {k: str(base / v) if k in keys else v for k, v in entry.items()}

    return Admin(
        cluster.kubeconfig,
        absolute(section, "certificate-authority"),
        absolute(user, "client-certificate", "client-key", "tokenFile"),
    )


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy from the machine's environment, and not in a Pod: each test sets what it tests."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


@contextlib.asynccontextmanager
async def connected(transport: Transport | str) -> AsyncIterator[Kube]:
    """A Kube over ``transport``, or over a fresh one from the kubeconfig at that path; closed after."""
    kube = Kube(transport) if isinstance(transport, Transport) else await Kube.connect(transport)
    try:
        yield kube
    finally:
        await kube.close()


async def whoami(kube: Kube) -> str:
    """The user the API server authenticated this call as."""
    review = await kube.request_json(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        timeout=IO_TIMEOUT_S,
    )
    return str(review["status"]["userInfo"]["username"])


def service_account(
    cluster: ClusterHandle, namespace: str, name: str, *, read_configmaps: bool = False
) -> str:
    """Create a ServiceAccount (allowed to read ConfigMaps in ``namespace`` when asked); its username."""
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}
    ]
    if read_configmaps:
        objects += [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": name},
                "rules": [
                    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
            },
        ]
    cluster.run_kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps({"kind": "List", "apiVersion": "v1", "items": objects}),
    )
    return f"system:serviceaccount:{namespace}:{name}"


def token_for(cluster: ClusterHandle, namespace: str, name: str) -> str:
    """A 10-minute token for the ServiceAccount, from the TokenRequest API (``kubectl create token``)."""
    return cluster.run_kubectl("create", "token", name, "-n", namespace, "--duration", "10m").stdout.strip()


class ConnectProxy:
    """An HTTP proxy on loopback that serves only CONNECT, tunnels to any target, and records each
    tunnel's target (``host:port``)."""

    def __init__(self) -> None:
        self.tunnels: list[str] = []
        self._server: asyncio.Server | None = None
        self._streams: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> ConnectProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for stream in self._streams:
            stream.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._streams.add(writer)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT_S)
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            if method != "CONNECT":
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            host, _, port = target.rpartition(":")
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(host, int(port)), IO_TIMEOUT_S
            )
            self._streams.add(up_writer)
            self.tunnels.append(target)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            pass  # a client that went away or spoke nonsense: the tunnel just ends
        finally:
            writer.close()
            self._tasks.discard(task)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    # No read timeout: an idle kept-alive tunnel is normal; the proxy's exit closes every stream.
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
    except OSError:
        sink.close()


# -- authentication --------------------------------------------------------------------------


async def test_a_client_certificate_authenticates_as_its_subject(admin: Admin) -> None:
    cert = admin.client_certificate()
    if cert is None:
        pytest.skip("the cluster's kubeconfig does not authenticate with a client certificate")
    subject = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    async with connected(str(admin.path)) as kube:
        assert await whoami(kube) == subject
        version = await kube.request_json("GET", "/version", timeout=IO_TIMEOUT_S)
        assert str(version["gitVersion"]).startswith("v")


async def test_a_bearer_token_authenticates_as_its_service_account(
    cluster: ClusterHandle, admin: Admin, namespace: str, tmp_path: Path
) -> None:
    username = service_account(cluster, namespace, "reader", read_configmaps=True)
    token = token_for(cluster, namespace, "reader")
    kubeconfig = admin.derived(tmp_path / "token.kubeconfig", user={"token": token})
    async with connected(kubeconfig) as kube:
        assert await whoami(kube) == username
        _, rv = await kube.list_all(CONFIGMAPS, namespace)
        assert rv, "a list answers with its resourceVersion"

        # A watch streams through the same credentials: an object created after it opened arrives.
        async def first_added() -> str:
            async for event in kube.watch(CONFIGMAPS, namespace, resource_version=rv, timeout_seconds=30):
                if event["type"] == "ADDED":
                    return str(event["object"]["metadata"]["name"])
            return ""

        watching = asyncio.create_task(first_added())
        try:
            await asyncio.to_thread(cluster.run_kubectl, "create", "configmap", "seen", "-n", namespace)
            assert await asyncio.wait_for(watching, IO_TIMEOUT_S) == "seen"
        finally:
            watching.cancel()

        # RBAC applies to this identity, not to whoever else the client might have been.
        with pytest.raises(ApiError) as denied:
            await kube.list_page(PODS, namespace, limit=1)
        assert denied.value.forbidden and not is_transient(denied.value)

    bad = admin.derived(tmp_path / "bad.kubeconfig", user={"token": "not-a-token"})
    async with connected(bad) as kube:
        with pytest.raises(ApiError) as refused:
            await whoami(kube)
        assert refused.value.status == 401 and not is_transient(refused.value)


async def test_the_in_cluster_token_is_reread_while_connected(
    cluster: ClusterHandle, admin: Admin, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = admin.ca_pem()
    if ca is None:
        pytest.skip("the cluster's kubeconfig names no CA to trust, as a Pod's ServiceAccount volume would")
    first = service_account(cluster, namespace, "first")
    second = service_account(cluster, namespace, "second")
    # A Pod's ServiceAccount volume, and the environment the kubelet gives the Pod.
    mounted = tmp_path / "serviceaccount"
    mounted.mkdir()
    (mounted / "ca.crt").write_bytes(ca)
    (mounted / "token").write_text(token_for(cluster, namespace, "first"))
    host, port = admin.host_port
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(port))
    monkeypatch.delenv("KUBECONFIG", raising=False)

    async with connected(await Transport.connect(service_account=mounted)) as kube:
        assert await whoami(kube) == first
        # The kubelet rotates the token as it does: the new file is moved into place.
        fresh = mounted / "token.new"
        fresh.write_text(await asyncio.to_thread(token_for, cluster, namespace, "second"))
        fresh.replace(mounted / "token")

        async def as_second() -> bool:
            return await whoami(kube) == second

        await async_wait_for(
            as_second,
            TOKEN_REFRESH_DEADLINE_S,
            f"a call made with the rotated token (as {second})",
            max_interval=2.0,
        )


# -- TLS -------------------------------------------------------------------------------------


async def test_tls_server_name_is_what_the_certificate_is_checked_against(
    admin: Admin, tmp_path: Path
) -> None:
    if admin.ca_pem() is None:
        pytest.skip("the cluster's kubeconfig does not verify the server's certificate")
    # Every API server's certificate names the in-cluster Service; none names .invalid.
    good = admin.derived(tmp_path / "good.kubeconfig", {"tls-server-name": "kubernetes.default.svc"})
    async with connected(good) as kube:
        await whoami(kube)
    wrong = admin.derived(tmp_path / "wrong.kubeconfig", {"tls-server-name": "not-the-apiserver.invalid"})
    async with connected(wrong) as kube:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await whoami(kube)


# -- proxies ---------------------------------------------------------------------------------


def api_target(admin: Admin) -> str:
    host, port = admin.host_port
    return f"{host}:{port}"


async def test_a_kubeconfig_proxy_url_tunnels_every_call(admin: Admin, tmp_path: Path) -> None:
    async with ConnectProxy() as proxy:
        kubeconfig = admin.derived(tmp_path / "proxied.kubeconfig", {"proxy-url": proxy.url})
        async with connected(kubeconfig) as kube:
            await whoami(kube)
            await kube.list_page(CONFIGMAPS, "default", limit=1)
        assert proxy.tunnels and set(proxy.tunnels) == {api_target(admin)}


async def test_https_proxy_tunnels_and_no_proxy_bypasses(
    admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, _ = admin.host_port
    async with ConnectProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        async with connected(str(admin.path)) as kube:
            await whoami(kube)
        assert proxy.tunnels and set(proxy.tunnels) == {api_target(admin)}

        proxy.tunnels.clear()
        monkeypatch.setenv("NO_PROXY", host)
        async with connected(str(admin.path)) as kube:
            await whoami(kube)
        assert proxy.tunnels == [], "NO_PROXY names the API server: no tunnel"


async def test_the_proxy_environment_is_read_once_at_connect(
    admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with ConnectProxy() as proxy:
        async with connected(str(admin.path)) as direct:
            monkeypatch.setenv("HTTPS_PROXY", proxy.url)
            await whoami(direct)
        assert proxy.tunnels == [], "a proxy set after connect is not used"

        async with connected(str(admin.path)) as proxied:
            monkeypatch.delenv("HTTPS_PROXY")
            await whoami(proxied)
        assert set(proxy.tunnels) == {api_target(admin)}, "a proxy unset after connect is still used"
