"""Step 1 of the pod sync, admission, as a real kubelet's: may this pod run on its node?

A pod asking for more GPUs than its node has free is rejected (``OutOfnvidia.com/gpu``), one
whose ``nodeSelector`` or required node affinity does not match its Node's labels too
(``NodeAffinity``): phase ``Failed``, the kubelet's reason and words, a Warning Event, no
container started. Both matter for pods bound by ``nodeName``, which skip the scheduler. Then
its GPUs are allocated (exclusive, like the device plugin) and its IP (``OutOfpods`` when none
is left). Not simulated: CPU and memory fit, host ports and ``NoExecute`` taints, which dual
pods do not depend on.

The words are a real kubelet's (pkg/kubelet/lifecycle/predicate.go, kubelet.rejectPod): the
Event carries the message, the Pod's status the same message after :data:`REJECTED_PREFIX`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from dpctl.api import GPU_RESOURCE
from dpctl.kube import RawObj
from dpctl.log import KV
from dpctl.podbuild.placement import node_mismatch
from dpsim.kubelet.allocations import PodAllocation
from dpsim.kubelet.containers import now_rfc3339
from dpsim.kubelet.devices import pod_gpu_request
from dpsim.kubelet.events import WARNING, EventSink
from dpsim.kubelet.ips import NoAddressError
from dpsim.kubelet.nodes import NodeAgent
from dpsim.kubelet.podrecord import PodRecord
from dpsim.kubelet.status import FAILED

if TYPE_CHECKING:  # resources imports recovery, which uses the words below
    from dpsim.kubelet.resources import PodResources

REJECTED_PREFIX: Final = "Pod was rejected: "
NODE_AFFINITY: Final = "NodeAffinity"
NODE_AFFINITY_MISMATCH: Final = "node(s) didn't match Pod's node affinity/selector"
UNEXPECTED_ADMISSION: Final = "UnexpectedAdmissionError"
OUT_OF_PODS: Final = "OutOfpods"


def predicate_failure(
    spec: Mapping[str, Any], node: str, labels: Mapping[str, str], capacity: int, free: int
) -> tuple[str, str] | None:
    """The kubelet's own admission predicates, first failure wins, in its order: resources,
    then node affinity. A Pod bound by ``nodeName`` skipped the scheduler, so this is where
    it is stopped; for a scheduled Pod they pass unless the Node changed in between.
    ``capacity`` and ``free``: the node's GPUs, all and not held."""
    requested = pod_gpu_request(spec)
    used = capacity - free
    if requested and requested + used > capacity:
        return (
            f"OutOf{GPU_RESOURCE}",
            f"Node didn't have enough resource: {GPU_RESOURCE}, requested: {requested},"
            f" used: {used}, capacity: {capacity}",
        )
    if node_mismatch(spec, node, labels):
        return NODE_AFFINITY, f"Predicate {NODE_AFFINITY} failed: {NODE_AFFINITY_MISMATCH}"
    return None


class Admission:
    def __init__(
        self, resources: PodResources, nodes: Mapping[str, NodeAgent], events: EventSink, log: KV
    ) -> None:
        self._resources = resources
        self._nodes = nodes
        self._events = events
        self._log = log

    def admit(self, rec: PodRecord, pod: RawObj) -> bool:
        """Admit the pod (its GPUs and IP allocated and recorded), or reject it: then the record
        is terminal with the kubelet's reason and words."""
        spec = pod.get("spec") or {}
        agent, gpus = self._nodes[rec.node], self._resources.gpus
        refusal = predicate_failure(
            spec, rec.node, agent.labels, len(agent.table.uuids), len(gpus.free(rec.node))
        )
        if refusal is None:
            try:
                # The resource predicate has made sure enough GPUs are free.
                rec.gpus = gpus.allocate(rec.uid, rec.node, pod_gpu_request(spec))
                rec.pod_ip = (
                    rec.host_ip
                    if spec.get("hostNetwork")
                    else self._resources.ips.allocate(rec.uid, rec.node)
                )
            except NoAddressError as e:
                gpus.release(rec.uid)
                refusal = (OUT_OF_PODS, str(e))
        if refusal is not None:
            reason, message = refusal
            self._log.warning("Rejected pod", pod=rec.ref, node=rec.node, reason=reason, error=message)
            self._events.emit(pod, WARNING, reason, message)
            rec.terminal, rec.terminal_reason = FAILED, (reason, REJECTED_PREFIX + message)
            return False
        rec.admitted = True
        rec.start_time = rec.start_time or now_rfc3339()
        self._resources.record(rec.uid, PodAllocation(rec.ref, rec.node, rec.pod_ip, rec.gpus))
        rec.dir.mkdir(parents=True, exist_ok=True)
        self._log.progress("Admitted pod", pod=rec.ref, node=rec.node, ip=rec.pod_ip, gpus=",".join(rec.gpus))
        return True
