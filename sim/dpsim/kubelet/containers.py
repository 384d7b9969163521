"""One container's lifecycle as the kubelet tracks it: instances, terminations, restarts, backoff.

Owns :class:`ContainerRecord` (what ``containerStatuses[i]`` is built from), the restart rules
of ``restartPolicy`` and the crash-loop backoff. Pure: the pod sync loop tells a record what
happened (started, exited, could not start) and asks it what to report and when to restart.

Backoff follows the kubelet: the first restart is immediate, then it waits ``base``, ``2·base``,
... up to ``cap`` since the last exit (10 s and 5 min in the kubelet; the simulated kubelet's
base is a flag so tests run fast). A container that ran longer than twice the cap starts over.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

# Waiting reasons and terminated reasons a kubelet reports.
CONTAINER_CREATING: Final = "ContainerCreating"
POD_INITIALIZING: Final = "PodInitializing"
CRASH_LOOP_BACK_OFF: Final = "CrashLoopBackOff"
ERR_IMAGE_PULL: Final = "ErrImagePull"
IMAGE_PULL_BACK_OFF: Final = "ImagePullBackOff"
ERR_IMAGE_NEVER_PULL: Final = "ErrImageNeverPull"
CREATE_CONTAINER_CONFIG_ERROR: Final = "CreateContainerConfigError"
COMPLETED: Final = "Completed"
ERROR: Final = "Error"
START_ERROR: Final = "StartError"
STATUS_UNKNOWN: Final = "ContainerStatusUnknown"
# What the kubelet reports for a container it can no longer find (here: its process died with a
# previous kubelet, or its node was removed).
STATUS_UNKNOWN_MESSAGE: Final = "The container could not be located when the pod was terminated"
START_ERROR_EXIT_CODE: Final = 128
STATUS_UNKNOWN_EXIT_CODE: Final = 137


def rfc3339(t: dt.datetime) -> str:
    """API ``Time``: whole seconds, UTC, ``Z``. The server truncates anything finer, so sending
    finer would make every comparison with what it stored differ."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_rfc3339() -> str:
    return rfc3339(dt.datetime.now(dt.UTC))


def restart_policy(spec: Mapping[str, Any]) -> str:
    """The pod's ``restartPolicy``, the API's default when unset."""
    return str(spec.get("restartPolicy") or "Always")


def will_restart(policy: str, exit_code: int) -> bool:
    if policy == "Always":
        return True
    if policy == "OnFailure":
        return exit_code != 0
    return False


@dataclass(frozen=True)
class Termination:
    """How one instance of a container ended."""

    exit_code: int
    reason: str
    finished_at: str
    started_at: str | None = None
    message: str | None = None
    container_id: str | None = None
    signal: int | None = None

    def to_api(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "finishedAt": self.finished_at,
        }
        # The API requires startedAt on terminated; a container that never started reports its end.
        body["startedAt"] = self.started_at or self.finished_at
        if self.message:
            body["message"] = self.message
        if self.container_id:
            body["containerID"] = self.container_id
        if self.signal:
            body["signal"] = self.signal
        return {"terminated": body}

    @classmethod
    def from_api(cls, state: Mapping[str, Any] | None) -> Termination | None:
        term = (state or {}).get("terminated")
        if not term:
            return None
        return cls(
            exit_code=int(term.get("exitCode", 0)),
            reason=str(term.get("reason") or (COMPLETED if not term.get("exitCode") else ERROR)),
            finished_at=str(term.get("finishedAt") or term.get("startedAt") or ""),
            started_at=term.get("startedAt"),
            message=term.get("message"),
            container_id=term.get("containerID"),
            signal=term.get("signal"),
        )


def termination_for_exit(
    exit_code: int, started_at: str, finished_at: str, container_id: str, message: str | None = None
) -> Termination:
    reason = COMPLETED if exit_code == 0 else ERROR
    return Termination(exit_code, reason, finished_at, started_at, message, container_id)


@dataclass
class CrashBackoff:
    """The kubelet's per-container restart backoff (see the module docstring)."""

    base: float
    cap: float
    next_delay: float = 0.0

    def delay_after_exit(self, ran_for: float) -> float:
        """The wait before restarting a container that just exited after ``ran_for`` seconds."""
        if ran_for > 2 * self.cap:
            self.next_delay = 0.0
        delay = self.next_delay
        self.next_delay = min(self.cap, self.base if delay == 0 else delay * 2)
        return delay


@dataclass
class Running:
    container_id: str
    started_at: str
    started_mono: float


@dataclass
class ContainerRecord:
    """The kubelet's view of one container of one pod, across its restarts."""

    name: str
    image: str
    backoff: CrashBackoff
    init: bool = False
    restart_count: int = 0
    running: Running | None = None
    # Newest last; two are kept: the current (or last) one and the one before for lastState.
    terminations: list[Termination] = field(default_factory=list)
    waiting: tuple[str, str | None] | None = None
    # Terminated for good: the policy says no restart, the pod is terminating, or init succeeded.
    final: bool = False
    ready: bool = False
    started: bool = False
    # Monotonic time before which a restart (or a retried image pull) must not happen.
    not_before: float = 0.0
    # Monotonic time until which a failed pull shows ErrImagePull before ImagePullBackOff.
    pull_error_until: float = 0.0
    image_id: str = ""

    @property
    def ever_ran(self) -> bool:
        return self.running is not None or bool(self.terminations)

    @property
    def last(self) -> Termination | None:
        return self.terminations[-1] if self.terminations else None

    @property
    def succeeded(self) -> bool:
        return self.final and self.running is None and self.last is not None and self.last.exit_code == 0

    def on_started(self, container_id: str, started_at: str, now: float, image_id: str) -> None:
        if self.ever_ran:
            self.restart_count += 1
        self.running = Running(container_id, started_at, now)
        self.waiting = None
        self.ready = False
        self.started = False
        self.image_id = image_id

    def on_exited(self, term: Termination, now: float) -> float:
        """Record the end of the running instance; returns how long it ran (monotonic seconds)."""
        ran_for = now - self.running.started_mono if self.running else 0.0
        self.running = None
        self.ready = False
        self.started = False
        self._push(term)
        return ran_for

    def on_start_failed(self, term: Termination) -> None:
        """The runtime could not start it (a StartError): it counts as an instance that exited."""
        if self.ever_ran:
            self.restart_count += 1
        self._push(term)
        self.running = None
        self.waiting = None

    def _push(self, term: Termination) -> None:
        self.terminations.append(term)
        del self.terminations[:-2]

    def set_waiting(self, reason: str, message: str | None = None) -> None:
        self.waiting = (reason, message)

    def schedule_restart(self, now: float, ran_for: float) -> float:
        """Back off after an exit; returns the delay. The state waits in CrashLoopBackOff meanwhile."""
        delay = self.backoff.delay_after_exit(ran_for)
        self.not_before = now + delay
        if delay > 0:
            self.set_waiting(
                CRASH_LOOP_BACK_OFF,
                f"back-off {_seconds(delay)} restarting failed container={self.name}",
            )
        return delay

    def after_exit(
        self, policy: str, stopping: bool, exit_code: int, ran_for: float, now: float
    ) -> float | None:
        """What follows an exit: None when the container is done for good, else the delay before
        its restart. ``stopping``: the pod is being deleted or has ended, so nothing restarts."""
        if stopping:
            self.final = True
            return None
        if self.init:
            if exit_code == 0:
                self.final, self.ready = True, True
                return 0.0
            if policy == "Never":
                self.final = True
                return None
            return self.schedule_restart(now, ran_for)
        if will_restart(policy, exit_code):
            return self.schedule_restart(now, ran_for)
        self.final = True
        return None

    def to_api(self, pod_ref: str = "") -> dict[str, Any]:
        """One entry of ``containerStatuses`` (or ``initContainerStatuses``)."""
        last: Mapping[str, Any] = {}
        if self.running is not None:
            state: Mapping[str, Any] = {"running": {"startedAt": self.running.started_at}}
            if self.terminations:
                last = self.terminations[-1].to_api()
        elif self.final and self.terminations:
            state = self.terminations[-1].to_api()
            if len(self.terminations) > 1:
                last = self.terminations[-2].to_api()
        else:
            reason, message = self.waiting or (CONTAINER_CREATING, None)
            if reason == CRASH_LOOP_BACK_OFF and message and pod_ref:
                message = f"{message} pod={pod_ref}"
            waiting: dict[str, Any] = {"reason": reason}
            if message:
                waiting["message"] = message
            state = {"waiting": waiting}
            if self.terminations:
                last = self.terminations[-1].to_api()
        status: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.started,
            "state": dict(state),
            "lastState": dict(last),
        }
        cid = self.running.container_id if self.running else (self.last.container_id if self.last else None)
        if cid:
            status["containerID"] = cid
        return status


def _seconds(delay: float) -> str:
    # The kubelet prints a Go duration: "10s", "1m20s", "5m0s".
    whole = round(delay)
    if whole < 60:
        return f"{delay:g}s" if delay < 1 else f"{whole}s"
    return f"{whole // 60}m{whole % 60}s"


def recover(record: ContainerRecord, api_status: Mapping[str, Any] | None) -> bool:
    """Rebuild a record from what a previous kubelet last reported, after a restart.

    Returns True when the API says the container was running: its process died with the previous
    kubelet (every container dies with it), so the caller records it as exited with
    ContainerStatusUnknown.
    """
    if not api_status:
        return False
    record.restart_count = int(api_status.get("restartCount") or 0)
    record.image_id = str(api_status.get("imageID") or "")
    older = Termination.from_api(api_status.get("lastState"))
    newer = Termination.from_api(api_status.get("state"))
    record.terminations = [t for t in (older, newer) if t is not None]
    state = api_status.get("state") or {}
    if "terminated" in state:
        record.final = True
    return "running" in state
