"""A small raw-JSON client for the Kubernetes API, on kubernetes-asyncio's connection handling.

kubernetes-asyncio gives us kubeconfig and in-cluster loading, TLS, credential plugins and token
refresh; its generated model classes are slow and lossy for a controller that copies objects
around, so every call here goes through ``ApiClient.call_api(..., _preload_content=False)`` and
speaks plain dicts. That mode does not raise on HTTP errors (kubernetes-asyncio 36.1), so this
module checks every status itself and turns failures into :class:`ApiError`.

Owns: resource paths, verbs (get/list/watch/create/patch/update/delete), preconditions, dry-run,
field managers, per-call timeouts, and an optional observer for API-call metrics. Knows nothing
about dual pods.

kubernetes-asyncio's session trusts the environment, which makes aiohttp look up proxy variables
(in a thread) and parse ``~/.netrc`` on *every* request; :meth:`Kube.connect` decides the proxy
once instead (the kubeconfig's ``proxy-url``, else ``HTTPS_PROXY``/``NO_PROXY`` as they are at
start) and turns the per-request lookups off.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from kubernetes_asyncio import client, config

RawObj = dict[str, Any]

PatchType = Literal["strategic", "merge", "json", "apply"]
_PATCH_CONTENT_TYPES: Mapping[PatchType, str] = {
    "strategic": "application/strategic-merge-patch+json",
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "apply": "application/apply-patch+yaml",
}

# Short enough that a wedged API server cannot stall a worker for long; long enough for a slow
# admission chain. Watches use their own, longer read timeout.
DEFAULT_TIMEOUT_S = 30.0

# (verb, resource, HTTP status or 0 when none arrived, seconds)
Observer = Callable[[str, str, int, float], None]


@dataclass(frozen=True)
class Resource:
    """Where a kind of object lives in the REST API."""

    group_version: str
    plural: str
    namespaced: bool

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        root = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        parts = [root]
        if self.namespaced:
            if namespace is None:
                if name is not None:
                    raise ValueError(f"{self.plural} is namespaced: a namespace is needed to address {name}")
            else:
                parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name is not None:
            parts.append(name)
            if subresource is not None:
                parts.append(subresource)
        return "/".join(parts)


PODS = Resource("v1", "pods", namespaced=True)
CONFIGMAPS = Resource("v1", "configmaps", namespaced=True)
NODES = Resource("v1", "nodes", namespaced=False)
NAMESPACES = Resource("v1", "namespaces", namespaced=False)
SERVICEACCOUNTS = Resource("v1", "serviceaccounts", namespaced=True)
SECRETS = Resource("v1", "secrets", namespaced=True)
EVENTS = Resource("events.k8s.io/v1", "events", namespaced=True)
CORE_EVENTS = Resource("v1", "events", namespaced=True)
LEASES = Resource("coordination.k8s.io/v1", "leases", namespaced=True)
REPLICASETS = Resource("apps/v1", "replicasets", namespaced=True)
DEPLOYMENTS = Resource("apps/v1", "deployments", namespaced=True)


class ApiError(Exception):
    """A failed API call, with the server's Status reason and message when it sent one."""

    def __init__(self, status: int, reason: str, message: str, verb: str = "", path: str = "") -> None:
        super().__init__(f"{verb} {path}: {status} {reason}: {message}".strip())
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """A write lost a race: resourceVersion or UID precondition, or the name already exists."""
        return self.status == 409

    @property
    def gone(self) -> bool:
        """The requested resourceVersion is too old (watch or list): relist."""
        return self.status == 410

    @property
    def already_exists(self) -> bool:
        return self.status == 409 and self.reason == "AlreadyExists"

    @property
    def invalid(self) -> bool:
        return self.status == 422

    @property
    def forbidden(self) -> bool:
        return self.status == 403

    @property
    def refused(self) -> bool:
        """The API server (422 Invalid) or an admission policy or RBAC (403 Forbidden) will not take
        the request as written: sending it again cannot help, only a change to what is sent."""
        return self.status in (403, 422)

    @property
    def detail(self) -> str:
        """The server's message without its leading ``<kind> "<name>" is invalid:`` (or
        ``... is forbidden:``), for a sentence that names the object itself."""
        for marker in (" is invalid: ", " is forbidden: "):
            head, found, tail = self.message.partition(marker)
            if found and '"' in head:
                return tail
        return self.message

    @classmethod
    def from_body(cls, status: int, body: bytes, verb: str, path: str) -> ApiError:
        reason, message = "", body.decode("utf-8", "replace")[:2000]
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            reason = str(doc.get("reason", ""))
            message = str(doc.get("message", message))
        return cls(status, reason, message, verb, path)


def is_transient(error: BaseException) -> bool:
    """Whether a failed API call may succeed if sent again unchanged, after a backoff: the one
    definition every caller uses. Transient: no answer (connection refused or reset, timeout),
    the server restarting or overloaded (5xx, 429), and a race with another writer or with the
    cache's view (409 Conflict, 404 Not Found: the next event shows what changed). Everything
    else (400, 401, 403, 422, ...) needs a change to the request or to the cluster."""
    if isinstance(error, ApiError):
        return error.status in (404, 409, 429) or error.status >= 500
    return isinstance(error, aiohttp.ClientError | OSError | TimeoutError)


class Kube:
    """Raw-dict verbs against one API server. Create with :meth:`connect`; close with :meth:`close`."""

    def __init__(self, api: client.ApiClient, observer: Observer | None = None) -> None:
        self._api = api
        self.observer = observer

    @classmethod
    async def connect(
        cls,
        kubeconfig: str | None = None,
        context: str | None = None,
        observer: Observer | None = None,
        pool_size: int = 64,
    ) -> Kube:
        """Load credentials: the given kubeconfig, else in-cluster, else ``$KUBECONFIG`` or the default."""
        cfg = client.Configuration()
        if (
            kubeconfig is None
            and "KUBERNETES_SERVICE_HOST" in os.environ
            and not os.environ.get("KUBECONFIG")
        ):
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        else:
            await config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
        cfg.connection_pool_maxsize = pool_size
        api = client.ApiClient(configuration=cfg)
        api.user_agent = "dpctl"
        _environment_read_once(api.rest_client, str(cfg.host))
        return cls(api, observer)

    async def close(self) -> None:
        await self._api.close()

    @property
    def host(self) -> str:
        return str(self._api.configuration.host)

    async def _call(
        self,
        verb: str,
        resource: str,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | aiohttp.ClientTimeout = DEFAULT_TIMEOUT_S,
    ) -> aiohttp.ClientResponse:
        """One request on kubernetes-asyncio's session, TLS and credentials, without its generic
        request building (which walks and copies every body): the body is plain JSON already."""
        api = self._api
        headers = {**api.default_headers, "Accept": "application/json", "Content-Type": content_type}
        params = list(query)
        started = time.monotonic()
        status = 0
        try:
            # Credentials as call_api applies them (an exec plugin's token is refreshed here).
            await api.update_params_for_auth(headers, params, ["BearerToken"])
            url = str(api.configuration.host) + path
            if params:
                url += "?" + urllib.parse.urlencode(params)
            rest = api.rest_client
            extra: dict[str, Any] = {}
            if rest.proxy:
                extra["proxy"] = rest.proxy
            if rest.proxy_headers:
                extra["proxy_headers"] = rest.proxy_headers
            if rest.server_hostname:
                extra["server_hostname"] = rest.server_hostname
            resp: aiohttp.ClientResponse = await rest.pool_manager.request(
                method,
                url,
                headers=headers,
                data=None if body is None else json.dumps(body),
                timeout=timeout
                if isinstance(timeout, aiohttp.ClientTimeout)
                else aiohttp.ClientTimeout(total=timeout),
                **extra,
            )
            status = resp.status
            if status >= 300:
                try:
                    raise ApiError.from_body(status, await resp.read(), method, path)
                finally:
                    resp.release()
            return resp
        finally:
            if self.observer is not None:
                self.observer(verb, resource, status, time.monotonic() - started)

    async def _json(self, verb: str, resource: str, method: str, path: str, **kw: Any) -> Any:
        resp = await self._call(verb, resource, method, path, **kw)
        try:
            return json.loads(await resp.read())
        finally:
            resp.release()

    async def request_json(
        self, method: str, path: str, body: Any = None, timeout: float = DEFAULT_TIMEOUT_S
    ) -> Any:
        """Any other call (e.g. ``/version``, TokenRequest); the path is used as the metrics resource."""
        return await self._json(method.lower(), path, method, path, body=body, timeout=timeout)

    async def get(
        self, res: Resource, name: str, namespace: str | None = None, subresource: str | None = None
    ) -> RawObj:
        obj: RawObj = await self._json("get", res.plural, "GET", res.path(namespace, name, subresource))
        return obj

    async def list_page(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
        timeout: float = 60.0,
    ) -> RawObj:
        """One page of a list; ``metadata.resourceVersion`` is where a watch starts."""
        query = _selectors(label_selector, field_selector)
        if limit is not None:
            query.append(("limit", str(limit)))
        if continue_token:
            query.append(("continue", continue_token))
        obj: RawObj = await self._json(
            "list", res.plural, "GET", res.path(namespace), query=query, timeout=timeout
        )
        return obj

    async def list_all(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
        transform: Callable[[RawObj], RawObj] | None = None,
    ) -> tuple[list[RawObj], str]:
        """Every item, paging through continue tokens; returns the items and the list's resourceVersion.

        ``transform``, when given, is applied to each item as its page arrives, so only what it
        keeps of a large list is ever held at once (one page is, whole).
        """
        items: list[RawObj] = []
        token: str | None = None
        while True:
            page = await self.list_page(
                res,
                namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                limit=page_size,
                continue_token=token,
            )
            page_items = page.get("items") or []
            items.extend(page_items if transform is None else (transform(item) for item in page_items))
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                return items, str(meta.get("resourceVersion", ""))

    async def watch(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        resource_version: str = "",
        timeout_seconds: int = 300,
        label_selector: str | None = None,
        field_selector: str | None = None,
        allow_bookmarks: bool = True,
    ) -> AsyncIterator[RawObj]:
        """Watch events as dicts ``{"type", "object"}`` until the server ends the stream.

        An ``ERROR`` event (e.g. 410 Gone when ``resource_version`` is compacted away) is raised
        as :class:`ApiError`, so callers handle expiry in one place. Lines that are not JSON
        objects are skipped.
        """
        query = _selectors(label_selector, field_selector)
        query += [("watch", "true"), ("timeoutSeconds", str(timeout_seconds))]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        if allow_bookmarks:
            query.append(("allowWatchBookmarks", "true"))
        # The server ends the stream after timeout_seconds; the read timeout only catches a dead peer.
        timeout = aiohttp.ClientTimeout(total=None, connect=DEFAULT_TIMEOUT_S, sock_read=timeout_seconds + 30)
        path = res.path(namespace)
        resp = await self._call("watch", res.plural, "GET", path, query=query, timeout=timeout)
        try:
            while True:
                line = await resp.content.readline()
                if not line:
                    return
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    raise ApiError(
                        int(status.get("code", 500)),
                        str(status.get("reason", "")),
                        str(status.get("message", "")),
                        "WATCH",
                        path,
                    )
                yield event
        finally:
            resp.release()

    async def create(
        self,
        res: Resource,
        body: Mapping[str, Any],
        namespace: str | None = None,
        *,
        field_manager: str | None = None,
        dry_run: bool = False,
        subresource_of: str | None = None,
        subresource: str | None = None,
    ) -> RawObj:
        """POST an object (or, with ``subresource_of``/``subresource``, e.g. a TokenRequest)."""
        query = _write_query(field_manager, dry_run)
        path = res.path(namespace, subresource_of, subresource)
        obj: RawObj = await self._json("create", res.plural, "POST", path, query=query, body=dict(body))
        return obj

    async def patch(
        self,
        res: Resource,
        name: str,
        body: Any,
        namespace: str | None = None,
        *,
        patch_type: PatchType = "strategic",
        field_manager: str | None = None,
        subresource: str | None = None,
        dry_run: bool = False,
        force: bool = False,
    ) -> RawObj:
        query = _write_query(field_manager, dry_run)
        if force:
            query.append(("force", "true"))
        obj: RawObj = await self._json(
            "patch",
            res.plural,
            "PATCH",
            res.path(namespace, name, subresource),
            query=query,
            body=body,
            content_type=_PATCH_CONTENT_TYPES[patch_type],
        )
        return obj

    async def update(
        self,
        res: Resource,
        body: Mapping[str, Any],
        namespace: str | None = None,
        *,
        field_manager: str | None = None,
        subresource: str | None = None,
    ) -> RawObj:
        """PUT; the body's ``metadata.resourceVersion`` makes it an optimistic-concurrency write."""
        name = str(body["metadata"]["name"])
        obj: RawObj = await self._json(
            "update",
            res.plural,
            "PUT",
            res.path(namespace, name, subresource),
            query=_write_query(field_manager, False),
            body=dict(body),
        )
        return obj

    async def delete(
        self,
        res: Resource,
        name: str,
        namespace: str | None = None,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
        grace_period_seconds: int | None = None,
        propagation: str | None = None,
    ) -> RawObj:
        """DELETE with optional UID/resourceVersion preconditions (409 when they do not hold)."""
        options: RawObj = {"apiVersion": "v1", "kind": "DeleteOptions"}
        preconditions = {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v}
        if preconditions:
            options["preconditions"] = preconditions
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        if propagation is not None:
            options["propagationPolicy"] = propagation
        obj: RawObj = await self._json(
            "delete", res.plural, "DELETE", res.path(namespace, name), body=options
        )
        return obj


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


def _selectors(label_selector: str | None, field_selector: str | None) -> list[tuple[str, str]]:
    query: list[tuple[str, str]] = []
    if label_selector:
        query.append(("labelSelector", label_selector))
    if field_selector:
        query.append(("fieldSelector", field_selector))
    return query


def _write_query(field_manager: str | None, dry_run: bool) -> list[tuple[str, str]]:
    query: list[tuple[str, str]] = []
    if field_manager:
        query.append(("fieldManager", field_manager))
    if dry_run:
        query.append(("dryRun", "All"))
    return query
