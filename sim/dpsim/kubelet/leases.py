"""Node heartbeats: the node's Lease in ``kube-node-lease``, renewed like the kubelet renews it.

The node lifecycle controller counts a node alive while ``spec.renewTime`` of its Lease keeps
moving (it taints the node unreachable after ``--node-monitor-grace-period``, 50 s). The kubelet's
numbers: ``leaseDurationSeconds`` 40, renewed every quarter of that with up to 4% jitter, by an
update (PUT) of the object it last wrote; on a conflict it reads the Lease again, and a missing
Lease is created, owned by the Node so the garbage collector removes it with the Node.

``renewTime`` is a MicroTime: it must be written with exactly six fractional digits and a zone,
which ``datetime.isoformat`` does not guarantee (no fraction when the microseconds are 0, no zone
on a naive datetime), so it is formatted explicitly.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
from collections.abc import Awaitable, Callable
from typing import Any, Final

from dpctl.kube import LEASES, ApiError, Kube, RawObj

NODE_LEASE_NAMESPACE: Final = "kube-node-lease"
LEASE_DURATION_S: Final = 40
RENEW_INTERVAL_S: Final = LEASE_DURATION_S / 4
RENEW_JITTER: Final = 0.04


class NodeGone(RuntimeError):
    """The Node the Lease belongs to no longer exists (someone deleted it)."""


def micro_time(t: dt.datetime) -> str:
    """``metav1.MicroTime`` as the API server parses it (RFC 3339 with microseconds, UTC)."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def renew_interval() -> float:
    return RENEW_INTERVAL_S * (1 + random.uniform(0, RENEW_JITTER))


def lease_body(node: str, node_uid: str | None, renew_time: str) -> RawObj:
    meta: dict[str, Any] = {"name": node, "namespace": NODE_LEASE_NAMESPACE}
    if node_uid:
        meta["ownerReferences"] = [_owner(node, node_uid)]
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": {"holderIdentity": node, "leaseDurationSeconds": LEASE_DURATION_S, "renewTime": renew_time},
    }


def _owner(node: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid}


class LeaseRenewer:
    """Renews one node's Lease; keeps the last written object to PUT it back, as the kubelet does."""

    def __init__(self, kube: Kube, node: str, node_exists: Callable[[], Awaitable[bool]]) -> None:
        self._kube = kube
        self._node = node
        self._node_exists = node_exists
        self._lease: RawObj | None = None

    def forget(self) -> None:
        self._lease = None

    async def renew(self, node_uid: str | None) -> None:
        """One renewal. Raises ApiError on failure (the caller retries sooner than the next tick)
        and NodeGone when the Lease is missing because its Node is."""
        now = micro_time(dt.datetime.now(dt.UTC))
        if self._lease is None:
            try:
                self._lease = await self._kube.get(LEASES, self._node, NODE_LEASE_NAMESPACE)
            except ApiError as e:
                if not e.not_found:
                    raise
                await self._create(node_uid, now)
                return
        lease = copy.deepcopy(self._lease)
        spec = lease.setdefault("spec", {})
        spec.update(
            {"holderIdentity": self._node, "leaseDurationSeconds": LEASE_DURATION_S, "renewTime": now}
        )
        if node_uid:
            # A re-registered Node has a new UID: the old owner reference would get the Lease collected.
            lease["metadata"]["ownerReferences"] = [_owner(self._node, node_uid)]
        try:
            self._lease = await self._kube.update(LEASES, lease, NODE_LEASE_NAMESPACE)
        except ApiError as e:
            self._lease = None
            if e.not_found:
                await self._create(node_uid, now)
                return
            raise  # a conflict re-reads on the next try

    async def _create(self, node_uid: str | None, now: str) -> None:
        if not await self._node_exists():
            raise NodeGone(self._node)
        try:
            self._lease = await self._kube.create(
                LEASES, lease_body(self._node, node_uid, now), NODE_LEASE_NAMESPACE
            )
        except ApiError as e:
            if not e.already_exists:
                raise
            self._lease = None  # someone else made it; the next renewal updates it
