"""A small synchronous JSON-over-HTTP(S) client for bringing the local cluster up and checking it.

Owns the handful of calls the local cluster makes itself (health endpoints, etcd's gRPC gateway,
a few API objects): stdlib only, a timeout on every request, one connection per request. Tests and
the controller use ``kubernetes_asyncio``; this is deliberately not a general Kubernetes client.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

DEFAULT_TIMEOUT = 10.0


class HTTPError(Exception):
    """A non-2xx answer where the caller asked for success."""

    def __init__(self, method: str, url: str, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        message = body.get("message", body) if isinstance(body, dict) else body
        super().__init__(f"{method} {url}: HTTP {status}: {message}")


@dataclass(frozen=True)
class Response:
    status: int
    body: Any  # parsed JSON when the answer was JSON, else the text

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def request(
    url: str,
    method: str = "GET",
    body: Any = None,
    *,
    context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    content_type: str = "application/json",
) -> Response:
    """One HTTP request; raises OSError (incl. timeouts) when no answer came, never hangs."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(host, parts.port, context=context, timeout=timeout)
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    hdrs = {"Accept": "application/json", **(headers or {})}
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs["Content-Type"] = content_type
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    text = raw.decode(errors="replace")
    parsed: Any = text
    # Some endpoints (etcd's /health) send JSON as text/plain; trust the body over the header.
    if "json" in (resp.getheader("Content-Type") or "") or text.lstrip()[:1] in ("{", "["):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = text
    return Response(resp.status, parsed)


def tls_context(
    ca_file: Path | None, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if cert_file is not None:
        ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    return ctx


class KubeHTTP:
    """Requests against one Kubernetes API server as one user (client certificate or bearer token)."""

    def __init__(
        self,
        server: str,
        context: ssl.SSLContext,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.server = server.rstrip("/")
        self.context = context
        self.token = token
        self.timeout = timeout

    @classmethod
    def with_cert(cls, server: str, ca_file: Path, cert_file: Path, key_file: Path) -> KubeHTTP:
        return cls(server, tls_context(ca_file, cert_file, key_file))

    @classmethod
    def with_token(cls, server: str, ca_file: Path, token: str) -> KubeHTTP:
        return cls(server, tls_context(ca_file), token=token)

    @classmethod
    def from_kubeconfig(cls, path: Path) -> KubeHTTP:
        """The current context of a kubeconfig that uses file paths or CA data, and a cert or a token."""
        cfg = yaml.safe_load(path.read_text())
        ctx_name = cfg["current-context"]
        context = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == context["cluster"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == context["user"])
        ctx = ssl.create_default_context(
            cafile=cluster.get("certificate-authority"),
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
            if "certificate-authority-data" in cluster
            else None,
        )
        if "client-certificate" in user:
            ctx.load_cert_chain(user["client-certificate"], user["client-key"])
        elif "client-certificate-data" in user:
            raise ValueError(f"{path}: embedded client certificates are not supported here")
        return cls(cluster["server"], ctx, token=user.get("token"))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        timeout: float | None = None,
        content_type: str = "application/json",
    ) -> Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        return request(
            self.server + path,
            method,
            body,
            context=self.context,
            headers=headers,
            timeout=self.timeout if timeout is None else timeout,
            content_type=content_type,
        )

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        timeout: float | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """Like :meth:`request` but returns the parsed body and raises :class:`HTTPError` unless 2xx."""
        resp = self.request(method, path, body, timeout=timeout, content_type=content_type)
        if not resp.ok:
            raise HTTPError(method, self.server + path, resp.status, resp.body)
        return resp.body

    def get(self, path: str, *, timeout: float | None = None) -> Any:
        return self.call("GET", path, timeout=timeout)

    def create(self, path: str, obj: dict[str, Any], *, exist_ok: bool = False) -> Any:
        """POST ``obj`` to the collection at ``path``; with ``exist_ok`` a 409 Conflict is success."""
        resp = self.request("POST", path, obj)
        if resp.ok or (exist_ok and resp.status == 409):
            return resp.body
        raise HTTPError("POST", self.server + path, resp.status, resp.body)
