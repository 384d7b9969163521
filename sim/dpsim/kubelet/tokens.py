"""API access for pods: ServiceAccount tokens (TokenRequest) and a per-pod kubeconfig.

A real kubelet mounts the ``kube-api-access-*`` projected volume at
``/var/run/secrets/kubernetes.io/serviceaccount``: ``token``, ``ca.crt`` and ``namespace``. The
simulated kubelet writes the same three files into the pod's ``serviceaccount/`` directory, which
a real container (``podman``) gets mounted there; a host process cannot see that path, so it gets
a kubeconfig beside them (server and CA from the kubelet's own kubeconfig, ``tokenFile`` pointing
at the token, the pod's namespace as the context's) and ``KUBECONFIG``. The files are 0644, the
projected volume's ``defaultMode``, so a container's non-root user can read them.

Tokens are bound to the pod (they stop working when it is deleted) and requested for 3607 s,
the projected volume's default: for exactly that lifetime the API server extends a pod-bound
token to a year (``--service-account-extend-token-expiration``, on by default), as it does for a
real kubelet, so a client that reads the file once keeps working. The file is still refreshed at
80% of the nominal lifetime, as the kubelet does.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from dpctl.kube import SERVICEACCOUNTS, Kube

DEFAULT_EXPIRATION_S: Final = 3607
# The projected volume's defaultMode (420) that the ServiceAccount admission plugin sets.
PROJECTED_MODE: Final = 0o644
SERVICE_ACCOUNT_SUBDIR: Final = "serviceaccount"
REFRESH_FRACTION: Final = 0.8


@dataclass(frozen=True)
class ClusterAccess:
    """Where the API server is and how to trust it, from the kubelet's kubeconfig."""

    server: str
    ca_pem: bytes | None
    insecure: bool = False

    @classmethod
    def from_kubeconfig(cls, path: Path) -> ClusterAccess:
        doc: Mapping[str, Any] = yaml.safe_load(path.read_text()) or {}
        contexts = {c["name"]: c.get("context") or {} for c in doc.get("contexts") or []}
        context = contexts.get(doc.get("current-context", ""), {})
        clusters = {c["name"]: c.get("cluster") or {} for c in doc.get("clusters") or []}
        cluster = clusters.get(context.get("cluster", ""), next(iter(clusters.values()), {}))
        ca: bytes | None = None
        if cluster.get("certificate-authority-data"):
            ca = base64.b64decode(cluster["certificate-authority-data"])
        elif cluster.get("certificate-authority"):
            ca_path = Path(cluster["certificate-authority"])
            ca = (ca_path if ca_path.is_absolute() else path.parent / ca_path).read_bytes()
        return cls(str(cluster.get("server", "")), ca, bool(cluster.get("insecure-skip-tls-verify")))


def wants_token(spec: Mapping[str, Any]) -> tuple[bool, int, str | None]:
    """Whether the pod gets API credentials, for how long, and for which audience.

    The projected ``serviceAccountToken`` volume the ServiceAccount admission plugin adds says so;
    without admission, ``automountServiceAccountToken`` (default true) decides.
    """
    for volume in spec.get("volumes") or []:
        for source in (volume.get("projected") or {}).get("sources") or []:
            sat = source.get("serviceAccountToken")
            if sat:
                return True, int(sat.get("expirationSeconds") or DEFAULT_EXPIRATION_S), sat.get("audience")
    return spec.get("automountServiceAccountToken") is not False, DEFAULT_EXPIRATION_S, None


def service_account_dir(pod_dir: Path) -> Path:
    """Where a pod's ``token``, ``ca.crt`` and ``namespace`` are (what the projected volume holds)."""
    return pod_dir / SERVICE_ACCOUNT_SUBDIR


def kubeconfig_text(
    server: str, ca_path: Path | None, insecure: bool, token_path: Path, namespace: str
) -> str:
    cluster: dict[str, Any] = {"server": server}
    if ca_path is not None:
        cluster["certificate-authority"] = str(ca_path)
    if insecure:
        cluster["insecure-skip-tls-verify"] = True
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": "serviceaccount", "user": {"tokenFile": str(token_path)}}],
        "contexts": [
            {
                "name": "serviceaccount",
                "context": {"cluster": "local", "user": "serviceaccount", "namespace": namespace},
            }
        ],
        "current-context": "serviceaccount",
    }
    return yaml.safe_dump(doc, sort_keys=False)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@dataclass
class _Issued:
    pod: tuple[str, str, str, str]  # namespace, name, uid, service account
    token_path: Path
    expiration_s: int
    audience: str | None
    refresh_at: dt.datetime


class TokenManager:
    """Requests, writes and refreshes the token and kubeconfig of every pod that gets one."""

    def __init__(self, kube: Kube, access: ClusterAccess) -> None:
        self._kube = kube
        self._access = access
        self._issued: dict[str, _Issued] = {}

    async def ensure(self, pod: Mapping[str, Any], pod_dir: Path) -> Path | None:
        """The pod's kubeconfig path, requesting a token the first time; None when it gets none.
        Raises ApiError (e.g. the ServiceAccount does not exist yet): the caller retries."""
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        wanted, expiration, audience = wants_token(spec)
        if not wanted:
            return None
        uid = str(meta.get("uid"))
        kubeconfig = pod_dir / "kubeconfig"
        if uid in self._issued and kubeconfig.exists():
            return kubeconfig
        sa = str(spec.get("serviceAccountName") or "default")
        sa_dir = service_account_dir(pod_dir)
        sa_dir.mkdir(parents=True, exist_ok=True)
        issued = _Issued(
            (str(meta.get("namespace")), str(meta.get("name")), uid, sa),
            sa_dir / "token",
            expiration,
            audience,
            dt.datetime.now(dt.UTC),
        )
        await self._request(issued)
        ca_path: Path | None = None
        if self._access.ca_pem is not None:
            ca_path = sa_dir / "ca.crt"
            _write(ca_path, self._access.ca_pem, PROJECTED_MODE)
        _write(sa_dir / "namespace", issued.pod[0].encode(), PROJECTED_MODE)
        text = kubeconfig_text(
            self._access.server, ca_path, self._access.insecure, issued.token_path, issued.pod[0]
        )
        _write(kubeconfig, text.encode(), 0o600)
        self._issued[uid] = issued
        return kubeconfig

    async def _request(self, issued: _Issued) -> None:
        namespace, name, uid, sa = issued.pod
        spec: dict[str, Any] = {
            "expirationSeconds": issued.expiration_s,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid},
        }
        if issued.audience:
            spec["audiences"] = [issued.audience]
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        result = await self._kube.create(
            SERVICEACCOUNTS, body, namespace, subresource_of=sa, subresource="token"
        )
        token = str((result.get("status") or {}).get("token") or "")
        if not token:
            raise RuntimeError(f"TokenRequest for {namespace}/{sa} returned no token")
        _write(issued.token_path, token.encode(), PROJECTED_MODE)
        issued.refresh_at = dt.datetime.now(dt.UTC) + dt.timedelta(
            seconds=issued.expiration_s * REFRESH_FRACTION
        )

    async def refresh_due(self) -> list[str]:
        """Refresh every token past its refresh time; returns the UIDs that failed (retried later)."""
        now = dt.datetime.now(dt.UTC)
        failed: list[str] = []
        for uid, issued in list(self._issued.items()):
            if issued.refresh_at <= now:
                try:
                    await self._request(issued)
                except Exception:  # one pod's failure must not stop the others
                    failed.append(uid)
        return failed

    def forget(self, uid: str) -> None:
        self._issued.pop(uid, None)
