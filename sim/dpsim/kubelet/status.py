"""The Pod status a kubelet writes, built from the simulated kubelet's container records.

Owns the phase rules (the kubelet's ``getPhase``), the conditions it owns (``Initialized``,
``ContainersReady``, ``Ready``, ``PodReadyToStartContainers``; ``PodScheduled`` belongs to the
scheduler) with stable ``lastTransitionTime``, the full status patch body, and the comparison
that decides whether anything changed. Pure.

Rules the API server enforces and that are kept here: ``containerStatuses`` always lists every
container in spec order (the list is atomic in a strategic merge patch, so it is always sent
whole); ``podIPs[0] == podIP`` and ``hostIPs[0] == hostIP``; a terminal phase is never left;
``qosClass`` is not touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from dpsim.kubelet.containers import ContainerRecord

SUCCEEDED: Final = "Succeeded"
FAILED: Final = "Failed"
RUNNING: Final = "Running"
PENDING: Final = "Pending"
TERMINAL_PHASES: Final = frozenset({SUCCEEDED, FAILED})

INITIALIZED: Final = "Initialized"
CONTAINERS_READY: Final = "ContainersReady"
READY: Final = "Ready"
READY_TO_START: Final = "PodReadyToStartContainers"
OWNED_CONDITIONS: Final = (READY_TO_START, INITIALIZED, READY, CONTAINERS_READY)


@dataclass(frozen=True)
class _AppCounts:
    """The app containers by state, as ``getPhase`` counts them."""

    running: int
    waiting: int  # never ran
    stopped: int  # ended for good, or waiting to restart after a run
    succeeded: int  # ended for good with exit code 0


def _count(app: Sequence[ContainerRecord]) -> _AppCounts:
    running = waiting = stopped = succeeded = 0
    for r in app:
        if r.running is not None:
            running += 1
        elif r.final and r.last is not None:
            stopped += 1
            succeeded += r.last.exit_code == 0
        elif r.terminations:
            stopped += 1  # waiting to restart, it ran before
        else:
            waiting += 1
    return _AppCounts(running, waiting, stopped, succeeded)


def _ended_phase(effective: str, counts: _AppCounts) -> str:
    """The phase once no app container runs and, unless terminating, none waits to start."""
    if effective == "Always":
        return RUNNING
    if counts.stopped == counts.succeeded and counts.waiting == 0:
        return SUCCEEDED
    if effective == "Never":
        return FAILED
    return RUNNING


def pod_phase(
    policy: str,
    init: Sequence[ContainerRecord],
    app: Sequence[ContainerRecord],
    terminating: bool = False,
) -> str:
    """The kubelet's phase rules. ``terminating``: the pod is being shut down for good, so no
    container will restart whatever the policy says (then it ends Succeeded or Failed)."""
    effective = "Never" if terminating else policy
    if any(r.final and not r.succeeded for r in init) and effective == "Never":
        return FAILED
    counts = _count(app)
    if not terminating and (not all(r.succeeded for r in init) or counts.waiting > 0):
        return PENDING
    if counts.running > 0:
        return RUNNING
    if counts.stopped > 0 or terminating:
        return _ended_phase(effective, counts)
    return PENDING


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str = ""
    message: str = ""


def _names(records: Sequence[ContainerRecord]) -> str:
    return "[" + " ".join(r.name for r in records) + "]"


def owned_conditions(
    phase: str,
    init: Sequence[ContainerRecord],
    app: Sequence[ContainerRecord],
    sandbox_ready: bool,
    readiness_gates: Sequence[str],
    existing: Mapping[str, str],
) -> list[Condition]:
    """The conditions the kubelet owns; ``existing`` maps other conditions' types to their status
    (readiness gates are set by other controllers)."""
    completed = phase == SUCCEEDED
    conditions = [Condition(READY_TO_START, "True" if sandbox_ready else "False")]
    incomplete = [r for r in init if not r.succeeded]
    if not incomplete or completed:
        conditions.append(Condition(INITIALIZED, "True", "PodCompleted" if completed and init else ""))
    else:
        msg = f"containers with incomplete status: {_names(incomplete)}"
        conditions.append(Condition(INITIALIZED, "False", "ContainersNotInitialized", msg))
    unready = [r for r in app if not r.ready]
    if completed:
        containers_ready = Condition(CONTAINERS_READY, "False", "PodCompleted")
    elif unready:
        msg = f"containers with unready status: {_names(unready)}"
        containers_ready = Condition(CONTAINERS_READY, "False", "ContainersNotReady", msg)
    else:
        containers_ready = Condition(CONTAINERS_READY, "True")
    if containers_ready.status != "True":
        ready = Condition(READY, "False", containers_ready.reason, containers_ready.message)
    else:
        ready = _gates(readiness_gates, existing)
    conditions += [ready, containers_ready]
    return conditions


def _gates(gates: Sequence[str], existing: Mapping[str, str]) -> Condition:
    for gate in gates:
        if gate not in existing:
            msg = f'corresponding condition of pod readiness gate "{gate}" does not exist.'
            return Condition(READY, "False", "ReadinessGatesNotReady", msg)
        if existing[gate] != "True":
            msg = f'the status of pod readiness gate "{gate}" is not "True", but {existing[gate]}'
            return Condition(READY, "False", "ReadinessGatesNotReady", msg)
    return Condition(READY, "True")


@dataclass
class ConditionClock:
    """Remembers when each owned condition last changed status, so ``lastTransitionTime`` moves
    only on a transition (and a restarted kubelet keeps the times it finds in the API)."""

    since: dict[str, tuple[str, str]] = field(default_factory=dict)  # type -> (status, time)

    @classmethod
    def from_api(cls, conditions: Sequence[Mapping[str, Any]]) -> ConditionClock:
        clock = cls()
        for c in conditions:
            if c.get("type") in OWNED_CONDITIONS and c.get("lastTransitionTime"):
                clock.since[str(c["type"])] = (str(c.get("status")), str(c["lastTransitionTime"]))
        return clock

    def stamp(
        self, conditions: Sequence[Condition], now: str, generation: int | None
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for c in conditions:
            prev = self.since.get(c.type)
            if prev is None or prev[0] != c.status:
                prev = (c.status, now)
                self.since[c.type] = prev
            # Strategic merge patches merge conditions by type: an absent reason would keep the old
            # one, so an empty reason or message is sent as null, which deletes it.
            body: dict[str, Any] = {
                "type": c.type,
                "status": c.status,
                "lastProbeTime": None,
                "lastTransitionTime": prev[1],
                "reason": c.reason or None,
                "message": c.message or None,
            }
            if generation is not None:
                body["observedGeneration"] = generation
            out.append(body)
        return out


@dataclass(frozen=True)
class PodStatusInput:
    phase: str
    conditions: list[dict[str, Any]]
    init: Sequence[ContainerRecord]
    app: Sequence[ContainerRecord]
    pod_ip: str | None
    host_ip: str | None
    start_time: str | None
    pod_ref: str
    generation: int | None = None
    reason: str | None = None
    message: str | None = None


def status_body(s: PodStatusInput) -> dict[str, Any]:
    """The ``status`` of the patch: everything the kubelet owns, lists whole and in spec order."""
    body: dict[str, Any] = {
        "phase": s.phase,
        "conditions": s.conditions,
        "containerStatuses": [r.to_api(s.pod_ref) for r in s.app],
    }
    if s.init:
        body["initContainerStatuses"] = [r.to_api(s.pod_ref) for r in s.init]
    if s.host_ip:
        body["hostIP"] = s.host_ip
        body["hostIPs"] = [{"ip": s.host_ip}]
    if s.pod_ip:
        body["podIP"] = s.pod_ip
        body["podIPs"] = [{"ip": s.pod_ip}]
    if s.start_time:
        body["startTime"] = s.start_time
    if s.generation is not None:
        body["observedGeneration"] = s.generation
    if s.reason:
        body["reason"] = s.reason
    if s.message:
        body["message"] = s.message
    return body


def status_patch(uid: str, status: Mapping[str, Any]) -> dict[str, Any]:
    """A strategic merge patch with the UID as a precondition, as the kubelet sends it, so a pod
    recreated under the same name is never patched with its predecessor's status."""
    return {"metadata": {"uid": uid}, "status": dict(status)}


def is_subset(wanted: Any, actual: Any) -> bool:
    """True when ``actual`` already holds every value of ``wanted`` (the server may add fields;
    lists must match element by element). ``None`` in ``wanted`` matches a missing key."""
    if isinstance(wanted, Mapping):
        if not isinstance(actual, Mapping):
            return False
        return all(
            (v is None and actual.get(k) is None) or (k in actual and is_subset(v, actual[k]))
            for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        if not isinstance(actual, list) or len(wanted) != len(actual):
            return False
        return all(is_subset(w, a) for w, a in zip(wanted, actual, strict=True))
    return bool(wanted == actual)


def status_up_to_date(wanted: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """Whether the pod's current status already says what ``wanted`` says. Conditions are matched
    by type (other controllers own other conditions), everything else as :func:`is_subset`."""
    current_conditions = {c.get("type"): c for c in current.get("conditions") or []}
    for c in wanted.get("conditions") or []:
        if not is_subset(c, current_conditions.get(c["type"])):
            return False
    rest = {k: v for k, v in wanted.items() if k != "conditions"}
    return is_subset(rest, current)
