"""Step 6 of the pod sync, restart recovery: what a new kubelet process makes of a pod a previous
one admitted. Pure: the API's pod and the recorded allocation in, the record's state out.

Every container process died with the previous kubelet. What is left is the pod's status in the
API (its IP, its containers' last reported states, restart counts) and ``allocations.json`` (its
IP and GPUs), which may be lost or stale. Two moments:

- at start-up, before any sync, :func:`startup_claims` says which IPs and GPUs the live pods of
  our nodes held, so that ``resources`` re-takes them before a new pod could be given one;
- at a pod's first sync, :func:`recover` rebuilds its record from the API status, the recorded
  allocation and what the node's allocators answered when its resources were taken back
  (:class:`Retaken`, from ``resources``): admitted, its IP, its GPUs (allocated anew when no
  record survived; a shortfall fails the pod with ``UnexpectedAdmissionError``), each container's
  history, and the containers the API says were running reported exited
  (``ContainerStatusUnknown``, 137) and restarted as their policy says.

What to log is returned as :class:`Report` values, so the rules can be tested as a table.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from dpctl.kube import RawObj, objects
from dpsim.kubelet import containers as ctr
from dpsim.kubelet.admission import REJECTED_PREFIX, UNEXPECTED_ADMISSION
from dpsim.kubelet.allocations import PodAllocation
from dpsim.kubelet.containers import ContainerRecord, Running, Termination
from dpsim.kubelet.podrecord import BackoffFactory, container_records
from dpsim.kubelet.status import FAILED, TERMINAL_PHASES

RESTARTED_MESSAGE: Final = "The container's process ended with a previous simulated kubelet"


@dataclass(frozen=True)
class Report:
    """One log line: its level, words and key-values."""

    level: int
    message: str
    fields: Mapping[str, Any]


def pod_ref(pod: RawObj) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


# -- start-up ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """What one live pod held before the restart, to be re-taken before any new pod is admitted."""

    uid: str
    node: str
    ref: str
    ip: str | None  # None: none known, or the node's own (host network), which is no pod's to hold
    alloc: PodAllocation | None


def startup_claims(
    pods: Iterable[RawObj], recorded: Mapping[str, PodAllocation], node_ips: Mapping[str, str]
) -> list[Claim]:
    """The claims of the pods on our nodes (``node_ips``: node name -> its IP) not yet ended.
    The API's ``podIP`` wins over the recorded one: a pod keeps the IP the API shows for life."""
    claims = []
    for pod in pods:
        meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        uid, node = str(meta["uid"]), str(spec.get("nodeName", ""))
        if node not in node_ips or status.get("phase") in TERMINAL_PHASES:
            continue
        alloc = recorded.get(uid)
        ip = status.get("podIP") or (alloc.ip if alloc else None)
        claims.append(Claim(uid, node, pod_ref(pod), ip if ip != node_ips[node] else None, alloc))
    return claims


# -- a pod's first sync --------------------------------------------------------------------------


def needs_recovery(pod: RawObj, alloc: PodAllocation | None) -> bool:
    """Whether a previous kubelet admitted this pod: it has a recorded allocation or an IP."""
    return alloc is not None or bool((pod.get("status") or {}).get("podIP"))


def claimed_ip(pod: RawObj, alloc: PodAllocation | None) -> str | None:
    return (pod.get("status") or {}).get("podIP") or (alloc.ip if alloc else None)


@dataclass(frozen=True)
class Retaken:
    """What the node's allocators answered when a recovered pod's IP and GPUs were taken back."""

    ip_conflict: bool = False  # its IP is another pod's (or not one of this node's)
    gpu_conflict: bool = False  # a recorded GPU is another pod's (or not one of this node's)
    fresh_gpus: tuple[str, ...] = ()  # allocated anew: no GPUs were recorded but it asks for some
    shortfall: str | None = None  # that allocation failed: the device manager's words


@dataclass(frozen=True)
class Recovered:
    """The rebuilt record's state (the pod counts as admitted) and what to log about it."""

    pod_ip: str | None
    gpus: tuple[str, ...]
    terminal: str | None
    terminal_reason: tuple[str, str] | None
    init: list[ContainerRecord]
    app: list[ContainerRecord]
    reports: tuple[Report, ...]


def recover(
    pod: RawObj,
    alloc: PodAllocation | None,
    retaken: Retaken,
    backoff: BackoffFactory,
    now: float,
    stamp: str,
) -> Recovered:
    """The record of a pod a previous kubelet admitted (``now``: monotonic; ``stamp``: API time)."""
    ref, pod_ip = pod_ref(pod), claimed_ip(pod, alloc)
    reports = []
    if retaken.ip_conflict:
        reports.append(Report(logging.ERROR, "Pod IP is taken by another pod", {"pod": ref, "ip": pod_ip}))
    gpus = alloc.gpus if alloc else ()
    if retaken.gpu_conflict:
        reports.append(
            Report(
                logging.ERROR, "Recorded GPUs are held by another pod", {"pod": ref, "gpus": ",".join(gpus)}
            )
        )
    terminal: str | None = None
    reason: tuple[str, str] | None = None
    if not gpus:
        # No record survived (lost file, or the node was removed and re-added): allocated anew.
        gpus = retaken.fresh_gpus
        if retaken.shortfall is not None:
            terminal, reason = FAILED, (UNEXPECTED_ADMISSION, REJECTED_PREFIX + retaken.shortfall)
    spec = pod.get("spec") or {}
    init, app = container_records(spec, backoff)
    status = pod.get("status") or {}
    by_name = {
        str(s.get("name")): s
        for s in (*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or []))
    }
    policy = ctr.restart_policy(spec)
    stopping = objects.is_deleting(pod) or terminal is not None
    for r in (*init, *app):
        _recover_container(r, by_name.get(r.name), policy, stopping, now, stamp)
    reports.append(
        Report(
            logging.INFO,
            "Recovered pod from a previous kubelet",
            {"pod": ref, "ip": pod_ip, "gpus": ",".join(gpus)},
        )
    )
    return Recovered(pod_ip, gpus, terminal, reason, init, app, tuple(reports))


def _recover_container(
    r: ContainerRecord, api: Mapping[str, Any] | None, policy: str, stopping: bool, now: float, stamp: str
) -> None:
    if ctr.recover(r, api) and api is not None:
        # It was running: its process died with the previous kubelet.
        started = str(((api.get("state") or {}).get("running") or {}).get("startedAt") or stamp)
        r.running = Running(str(api.get("containerID") or ""), started, now)
        term = Termination(
            ctr.STATUS_UNKNOWN_EXIT_CODE,
            ctr.STATUS_UNKNOWN,
            stamp,
            started,
            RESTARTED_MESSAGE,
            r.running.container_id,
        )
        r.on_exited(term, now)
        # A fresh back-off's first delay is 0: the restart is due at once and no BackOff is said.
        r.after_exit(policy, stopping, term.exit_code, 0.0, now)
    elif r.init and r.last is not None and r.last.exit_code == 0:
        r.final, r.ready = True, True
