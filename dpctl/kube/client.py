"""A small raw-JSON client for the Kubernetes API: :class:`Kube` and its verbs.

Every call speaks plain dicts (:data:`~dpctl.kube.objects.RawObj`): the request is built by
:mod:`dpctl.kube.request`, sent by :mod:`dpctl.kube.transport`, and any status of 300 or more
becomes an :class:`~dpctl.kube.errors.ApiError` here, since the transport returns every answer
as it came (kubernetes-asyncio's raw mode does not raise on HTTP errors).

Owns: the verbs (get/list/watch/create/patch/update/delete, and any other path), paging, the
JSON encoding of bodies and decoding of the answers that are read (orjson: twice as fast as
``json`` at reading a Pod, ten times at writing one; a delete's answer is not decoded), per-call
timeouts, an optional client-side rate limit (:mod:`dpctl.kube.ratelimit`), and an optional
observer for API-call metrics. Knows nothing about dual pods.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import aiohttp
import orjson

from dpctl.kube import request
from dpctl.kube.errors import ApiError
from dpctl.kube.objects import RawObj
from dpctl.kube.ratelimit import TokenBucket
from dpctl.kube.request import DEFAULT_TIMEOUT_S, PatchType, Resource
from dpctl.kube.transport import Transport

# (verb, resource, HTTP status or 0 when none arrived, seconds)
Observer = Callable[[str, str, int, float], None]


class Kube:
    """Raw-dict verbs against one API server. Create with :meth:`connect`; close with :meth:`close`."""

    def __init__(
        self, api: Transport, observer: Observer | None = None, limiter: TokenBucket | None = None
    ) -> None:
        self._api = api
        self.observer = observer
        self.limiter = limiter

    @classmethod
    async def connect(
        cls,
        kubeconfig: str | None = None,
        context: str | None = None,
        observer: Observer | None = None,
        pool_size: int = 64,
        limiter: TokenBucket | None = None,
    ) -> Kube:
        """Load credentials: the given kubeconfig, else in-cluster, else ``$KUBECONFIG`` or the default."""
        return cls(await Transport.connect(kubeconfig, context, pool_size), observer, limiter)

    async def close(self) -> None:
        await self._api.close()

    @property
    def host(self) -> str:
        return self._api.host

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
        """One request, observed; raises ApiError for a status of 300 or more. The limiter's
        wait comes first and is not part of the observed latency (it has its own metric)."""
        if self.limiter is not None:
            await self.limiter.wait()
        started = time.monotonic()
        status = 0
        try:
            resp = await self._api.request(
                method,
                path,
                query=query,
                body=None if body is None else orjson.dumps(body),
                content_type=content_type,
                timeout=timeout
                if isinstance(timeout, aiohttp.ClientTimeout)
                else aiohttp.ClientTimeout(total=timeout),
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
            return orjson.loads(await resp.read())
        finally:
            resp.release()

    async def _discard(self, verb: str, resource: str, method: str, path: str, **kw: Any) -> None:
        """A call whose answer is not needed: read, so the connection goes back to the pool, and
        not decoded (a deleted Pod is as big as any)."""
        resp = await self._call(verb, resource, method, path, **kw)
        try:
            await resp.read()
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
        query = request.list_query(label_selector, field_selector, limit, continue_token)
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
        query = request.watch_query(
            label_selector, field_selector, resource_version, timeout_seconds, allow_bookmarks
        )
        path = res.path(namespace)
        resp = await self._call(
            "watch", res.plural, "GET", path, query=query, timeout=request.watch_timeout(timeout_seconds)
        )
        try:
            while True:
                line = await resp.content.readline()
                if not line:
                    return
                event = request.watch_event(line, path)
                if event is not None:
                    yield event
        finally:
            resp.release()

    async def follow_log(
        self, namespace: str, pod: str, container: str, *, idle_timeout_s: float
    ) -> AsyncGenerator[bytes, None]:
        """A container's log, ``follow``-ed from its start, in chunks as they come, until the
        server ends it (the container exits) or nothing arrives for ``idle_timeout_s``."""
        path = request.PODS.path(namespace, pod, "log")
        query = [("container", container), ("follow", "true")]
        timeout = aiohttp.ClientTimeout(total=None, connect=DEFAULT_TIMEOUT_S, sock_read=idle_timeout_s)
        resp = await self._call("get", "pods/log", "GET", path, query=query, timeout=timeout)
        try:
            async for chunk in resp.content.iter_any():
                yield chunk
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
        query = request.write_query(field_manager, dry_run)
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
        obj: RawObj = await self._json(
            "patch",
            res.plural,
            "PATCH",
            res.path(namespace, name, subresource),
            query=request.write_query(field_manager, dry_run, force),
            body=body,
            content_type=request.PATCH_CONTENT_TYPES[patch_type],
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
            query=request.write_query(field_manager, False),
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
    ) -> None:
        """DELETE with optional UID/resourceVersion preconditions (409 when they do not hold); no
        caller reads what the server answers, so it is not decoded."""
        options = request.delete_options(uid, resource_version, grace_period_seconds, propagation)
        await self._discard("delete", res.plural, "DELETE", res.path(namespace, name), body=options)
