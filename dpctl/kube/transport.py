"""The connection to one API server: the only module that uses kubernetes-asyncio's client.

kubernetes-asyncio gives us kubeconfig and in-cluster loading, TLS (CA, client certificates,
``tls-server-name``), bearer tokens and the in-cluster token's refresh; its generated model
classes are slow and lossy for a controller that copies objects around, so :class:`Transport`
uses only its connection handling: credentials as ``ApiClient.call_api`` applies them
(``update_params_for_auth``), then one request on its aiohttp session (its pool manager), with
the body already JSON and nothing decoded. That reaches into internals pinned to one version
(kubernetes-asyncio 36.1); the contract test in test/e2e/kube/ holds this seam against a real
API server, so an upgrade that moves them fails there rather than in every call.

(Elsewhere only :mod:`dpctl.podbuild.validate` imports kubernetes-asyncio, to read its generated
models as a schema of the Pod; it sends nothing.)

Owns: credential loading (the given kubeconfig, else in-cluster, else ``$KUBECONFIG`` or the
default), the HTTP session and its pool, the User-Agent, and the proxy. kubernetes-asyncio's
session trusts the environment, which makes aiohttp look up proxy variables (in a thread) and
parse ``~/.netrc`` on *every* request; :meth:`Transport.connect` decides the proxy once instead
(the kubeconfig's ``proxy-url``, else ``HTTPS_PROXY``/``NO_PROXY`` as they are at connect) and
turns the per-request lookups off. Does not own what is sent (:mod:`dpctl.kube.request`) nor
what an answer means (:mod:`dpctl.kube.errors`): a response comes back whatever its status.
"""

from __future__ import annotations

import os
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config

# Where a Pod's ServiceAccount token, CA and namespace are mounted (the kube-api-access volume).
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def in_cluster(kubeconfig: str | None) -> bool:
    """Whether :meth:`Transport.connect` uses the Pod's ServiceAccount: no kubeconfig named, in a
    Pod, and no ``$KUBECONFIG`` (the simulated kubelet sets one for its Pods, which cannot see
    the mounted ServiceAccount files)."""
    return kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ and not os.environ.get("KUBECONFIG")


def kubeconfig_contexts(kubeconfig: str | None) -> tuple[list[Any], Any | None]:
    """The kubeconfig's contexts (``{"name", "context"}`` dicts) and the current one, read as the
    transport reads them; raises when the file is missing or malformed."""
    contexts, current = config.list_kube_config_contexts(kubeconfig)
    return list(contexts), current


class Transport:
    """Requests to one API server with its credentials. Create with :meth:`connect`."""

    def __init__(self, api: client.ApiClient) -> None:
        self._api = api

    @classmethod
    async def connect(
        cls,
        kubeconfig: str | None = None,
        context: str | None = None,
        pool_size: int = 64,
        *,
        service_account: Path = SERVICE_ACCOUNT_DIR,
    ) -> Transport:
        """Load credentials: the given kubeconfig, else in-cluster (the token and CA in
        ``service_account``), else ``$KUBECONFIG`` or the default kubeconfig. ``pool_size``: the
        most connections open at once (0: no limit, for long-lived streams)."""
        cfg = client.Configuration()
        if in_cluster(kubeconfig):
            # kubernetes-asyncio re-reads the token file (at most once a minute) before a request,
            # so the kubelet's rotation of a projected token is followed.
            config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=cfg,
                token_filename=str(service_account / "token"),
                cert_filename=str(service_account / "ca.crt"),
            )
        else:
            await config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
        cfg.connection_pool_maxsize = pool_size
        api = client.ApiClient(configuration=cfg)
        api.user_agent = "dpctl"
        _environment_read_once(api.rest_client, str(cfg.host))
        return cls(api)

    async def close(self) -> None:
        await self._api.close()

    @property
    def host(self) -> str:
        return str(self._api.configuration.host)

    @property
    def rest_client(self) -> Any:
        """kubernetes-asyncio's REST client: its aiohttp session, and the proxy and TLS server
        name decided at connect."""
        return self._api.rest_client

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]],
        body: bytes | None,
        content_type: str,
        timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        """Send one request; the caller reads and releases the response, whatever its status."""
        api = self._api
        headers = {**api.default_headers, "Accept": "application/json", "Content-Type": content_type}
        params = list(query)
        # Credentials as call_api applies them: the in-cluster token is refreshed here. A
        # kubeconfig's token (or exec plugin's) is the one read at connect: kubernetes-asyncio
        # 36.1 installs no refresh for those.
        await api.update_params_for_auth(headers, params, ["BearerToken"])
        url = self.host + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        rest = self.rest_client
        extra: dict[str, Any] = {}
        if rest.proxy:
            extra["proxy"] = rest.proxy
        if rest.proxy_headers:
            extra["proxy_headers"] = rest.proxy_headers
        if rest.server_hostname:
            extra["server_hostname"] = rest.server_hostname
        resp: aiohttp.ClientResponse = await rest.pool_manager.request(
            method, url, headers=headers, data=body, timeout=timeout, **extra
        )
        return resp


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``*_PROXY``, minus ``NO_PROXY``), if any."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    if not proxies or (parts.hostname and urllib.request.proxy_bypass(parts.hostname)):
        return None
    return proxies.get(parts.scheme) or None


def _environment_read_once(rest: Any, host: str) -> None:
    """Swap the REST client's session for one that does not consult the environment per request."""
    if rest.proxy is None:
        rest.proxy = env_proxy(host)
    old: aiohttp.ClientSession = rest.pool_manager
    connector = old.connector
    old.detach()  # the connector (TLS context, pool) carries over; the old session is closed
    # The read buffer kubernetes-asyncio sets: one watch event can carry a large object.
    rest.pool_manager = aiohttp.ClientSession(connector=connector, trust_env=False, read_bufsize=2**21)
