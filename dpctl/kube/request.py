"""What an API call sends, and how a watch stream's lines read: pure functions, no I/O.

Owns resource paths (:class:`Resource` and the constants for the kinds dpctl uses), the
query parameters of each verb (label and field selectors, paging, watch resumption and
bookmarks, field manager, dry run, force), ``DeleteOptions`` with UID/resourceVersion
preconditions, the content type of each patch type, per-call timeouts, and decoding one line
of a watch stream into an event. :class:`~dpctl.kube.Kube` puts these together and sends them
through the transport; everything here can be tested without a server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import aiohttp
import orjson

from dpctl.kube.errors import ApiError
from dpctl.kube.objects import RawObj

PatchType = Literal["strategic", "merge", "json", "apply"]
PATCH_CONTENT_TYPES: Mapping[PatchType, str] = {
    "strategic": "application/strategic-merge-patch+json",
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "apply": "application/apply-patch+yaml",
}

# Short enough that a wedged API server cannot stall a worker for long; long enough for a slow
# admission chain. Watches use their own, longer read timeout (watch_timeout).
DEFAULT_TIMEOUT_S = 30.0

Query = list[tuple[str, str]]


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
CORE_EVENTS = Resource("v1", "events", namespaced=True)
LEASES = Resource("coordination.k8s.io/v1", "leases", namespaced=True)
REPLICASETS = Resource("apps/v1", "replicasets", namespaced=True)


def selectors(label_selector: str | None, field_selector: str | None) -> Query:
    query: Query = []
    if label_selector:
        query.append(("labelSelector", label_selector))
    if field_selector:
        query.append(("fieldSelector", field_selector))
    return query


def list_query(
    label_selector: str | None, field_selector: str | None, limit: int | None, continue_token: str | None
) -> Query:
    """One page of a list: at most ``limit`` items, after the page ``continue_token`` ended."""
    query = selectors(label_selector, field_selector)
    if limit is not None:
        query.append(("limit", str(limit)))
    if continue_token:
        query.append(("continue", continue_token))
    return query


def watch_query(
    label_selector: str | None,
    field_selector: str | None,
    resource_version: str,
    timeout_seconds: int,
    allow_bookmarks: bool,
) -> Query:
    """A watch that the server ends after ``timeout_seconds``, from ``resource_version`` when set."""
    query = selectors(label_selector, field_selector)
    query += [("watch", "true"), ("timeoutSeconds", str(timeout_seconds))]
    if resource_version:
        query.append(("resourceVersion", resource_version))
    if allow_bookmarks:
        query.append(("allowWatchBookmarks", "true"))
    return query


def watch_timeout(timeout_seconds: int) -> aiohttp.ClientTimeout:
    """No total limit: the server ends the stream after ``timeout_seconds``; the read timeout
    only catches a dead peer."""
    return aiohttp.ClientTimeout(total=None, connect=DEFAULT_TIMEOUT_S, sock_read=timeout_seconds + 30)


def write_query(field_manager: str | None, dry_run: bool, force: bool = False) -> Query:
    """``force`` takes fields over from other managers: only server-side apply patches use it."""
    query: Query = []
    if field_manager:
        query.append(("fieldManager", field_manager))
    if dry_run:
        query.append(("dryRun", "All"))
    if force:
        query.append(("force", "true"))
    return query


def delete_options(
    uid: str | None, resource_version: str | None, grace_period_seconds: int | None, propagation: str | None
) -> RawObj:
    """The body of a DELETE; the server answers 409 when a UID/resourceVersion precondition fails."""
    options: RawObj = {"apiVersion": "v1", "kind": "DeleteOptions"}
    preconditions = {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v}
    if preconditions:
        options["preconditions"] = preconditions
    if grace_period_seconds is not None:
        options["gracePeriodSeconds"] = grace_period_seconds
    if propagation is not None:
        options["propagationPolicy"] = propagation
    return options


def watch_event(line: bytes, path: str) -> RawObj | None:
    """One line of a watch stream as an event ``{"type", "object"}``, or None for a line that is
    not a JSON object (skipped). An ``ERROR`` event (e.g. 410 Gone when the resourceVersion was
    compacted away) is raised as :class:`ApiError`, so callers handle expiry in one place."""
    try:
        event = orjson.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    if event.get("type") == "ERROR":
        status = event.get("object") or {}
        raise ApiError(
            int(status.get("code", 500)),
            str(status.get("reason", "")),
            str(status.get("message", "")),
            "WATCH",
            path,
        )
    return event
