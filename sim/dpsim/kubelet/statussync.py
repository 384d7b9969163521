"""Step 4 of the pod sync, status: the phase, conditions and container statuses a kubelet
reports, written only when they differ from what the API has (strategic merge patch of the
``status`` subresource, UID precondition). How the body is built is ``status``'s (pure); here is
when it is sent, and the wait for an informer that lags behind our own previous write.
"""

from __future__ import annotations

from typing import Final

from dpctl.kube import PODS, ApiError, Kube, RawObj
from dpsim.kubelet.containers import now_rfc3339, restart_policy
from dpsim.kubelet.podrecord import PodRecord
from dpsim.kubelet.status import (
    PodStatusInput,
    owned_conditions,
    pod_phase,
    status_body,
    status_patch,
    status_up_to_date,
)

# After a status write, the informer may lag behind it; a sync in that window that would write
# the same status again waits this long for the watch event instead.
STATUS_LAG_S: Final = 2.0


def phase(rec: PodRecord, pod: RawObj, terminating: bool = False) -> str:
    """The pod's phase: terminal once it was, else by the kubelet's rules over its containers."""
    return rec.terminal or pod_phase(restart_policy(pod.get("spec") or {}), rec.init, rec.app, terminating)


class StatusWriter:
    def __init__(self, kube: Kube) -> None:
        self._kube = kube

    async def write(self, rec: PodRecord, pod: RawObj, now: float) -> float | None:
        """Patch the status if it differs from the API's; returns a re-check delay when the
        informer may still lag behind our previous write."""
        meta, spec, current = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        pod_phase_now = phase(rec, pod)
        gates = [str(g.get("conditionType")) for g in spec.get("readinessGates") or []]
        others = {str(c.get("type")): str(c.get("status")) for c in current.get("conditions") or []}
        generation = meta.get("generation")
        conditions = owned_conditions(pod_phase_now, rec.init, rec.app, rec.sandbox_ready, gates, others)
        reason, message = rec.terminal_reason or (None, None)
        body = status_body(
            PodStatusInput(
                phase=pod_phase_now,
                conditions=rec.conditions.stamp(conditions, now_rfc3339(), generation),
                init=rec.init,
                app=rec.app,
                pod_ip=rec.pod_ip,
                host_ip=rec.host_ip,
                start_time=rec.start_time,
                pod_ref=rec.kubelet_ref,
                generation=generation,
                reason=reason,
                message=message,
            )
        )
        if status_up_to_date(body, current):
            rec.last_sent = body
            return None
        if body == rec.last_sent and now - rec.last_sent_at < STATUS_LAG_S:
            return STATUS_LAG_S
        try:
            await self._kube.patch(
                PODS, rec.name, status_patch(rec.uid, body), rec.namespace, subresource="status"
            )
        except ApiError as e:
            if e.not_found or e.conflict:
                return None  # gone or replaced by a namesake; the informer will say which
            raise
        rec.last_sent, rec.last_sent_at = body, now
        return None
