"""Where an informer's objects come from: a list call and a watch call, behind a protocol.

Owns :class:`ListerWatcher` (the seam tests script) and :func:`kube_lister`, which binds it to
one resource, namespace and selector of :class:`dpctl.kube.Kube`. Does not own retries,
relists or the cache (``informer.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Protocol

from dpctl.kube import Kube, RawObj, Resource


class ListerWatcher(Protocol):
    async def list(self) -> tuple[list[RawObj], str]:
        """Every object, and the resourceVersion the list is consistent at."""
        ...

    def watch(self, resource_version: str, timeout_seconds: int) -> AsyncIterator[RawObj]:
        """Events ``{"type", "object"}`` after ``resource_version``, until the server ends the stream.

        Bookmarks must be asked for. A watch ``ERROR`` is raised (``ApiError``, ``.gone`` for
        410). If the iterator is an async generator, the informer closes it when it stops early.
        """
        ...


class KubeListerWatcher:
    def __init__(
        self,
        kube: Kube,
        resource: Resource,
        namespace: str | None,
        label_selector: str | None,
        field_selector: str | None,
        transform: Callable[[RawObj], RawObj] | None = None,
    ) -> None:
        self._kube = kube
        self._resource = resource
        self._namespace = namespace
        self._label_selector = label_selector
        self._field_selector = field_selector
        self._transform = transform

    async def list(self) -> tuple[list[RawObj], str]:
        return await self._kube.list_all(
            self._resource,
            self._namespace,
            label_selector=self._label_selector,
            field_selector=self._field_selector,
            transform=self._transform,
        )

    def watch(self, resource_version: str, timeout_seconds: int) -> AsyncIterator[RawObj]:
        return self._kube.watch(
            self._resource,
            self._namespace,
            resource_version=resource_version,
            timeout_seconds=timeout_seconds,
            label_selector=self._label_selector,
            field_selector=self._field_selector,
            allow_bookmarks=True,
        )


def kube_lister(
    kube: Kube,
    resource: Resource,
    namespace: str | None = None,
    label_selector: str | None = None,
    field_selector: str | None = None,
    transform: Callable[[RawObj], RawObj] | None = None,
) -> ListerWatcher:
    """List and watch ``resource`` (in ``namespace``, or all/cluster-scoped when ``None``).

    ``transform`` is applied to listed items page by page, so a large list is never held whole;
    give the informer the same one (it must then be idempotent) for the watched objects.
    """
    return KubeListerWatcher(kube, resource, namespace, label_selector, field_selector, transform)
