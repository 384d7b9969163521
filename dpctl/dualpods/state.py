"""Soft state: what the controller learned by talking to Pods, kept between reconciles.

Nothing here is needed for correctness after a restart: every field starts unknown and is
re-learned by asking (GPU UUIDs from the stub, sleeping state from ``/is_sleeping``, readiness
from the requester's observed container status). Facts are tied to the container instance they
were learned from, so a restarted stub or vLLM is never trusted on old knowledge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dpctl.dualpods import podview
from dpctl.dualpods.podview import RawObj
from dpctl.dualpods.ports import Path
from dpctl.launcher.api import InstanceState


def instance(pod: RawObj) -> tuple[str, int]:
    """Identifies one run of a Pod's inference-server container: a restart changes it."""
    return podview.uid(pod), podview.restart_count(pod)


@dataclass
class Streak:
    """Failures of one call in a row, and when (monotonic) the streak began."""

    count: int = 0
    since: float | None = None

    def failed(self, tries: int, seconds: float, now: float) -> bool:
        """Count a failure; whether there have now been ``tries`` of them over ``seconds``."""
        self.count += 1
        if self.since is None:
            self.since = now
        return self.count >= tries and now - self.since >= seconds

    def reset(self) -> None:
        self.count, self.since = 0, None


@dataclass
class ServerState:
    """What is known about one inference server (one requester UID)."""

    # The stub's answer, per requester container instance; a failure is never cached.
    gpu_uuids: tuple[str, ...] = ()
    gpu_uuids_from: tuple[str, int] | None = None
    # When the stub first failed to answer (monotonic); a stub just starting is not an error yet.
    gpu_query_failing_since: float | None = None
    # The runner instance known to be awake (we created it, woke it, or asked it).
    awake_instance: tuple[str, int] | None = None
    # Readiness last relayed, and to which requester container instance.
    relayed: tuple[bool, tuple[str, int]] | None = None
    requester_delete_requested: bool = False
    # Failures of /sleep (on unbind) and /wake_up (bound) in a row.
    sleep_failures: Streak = field(default_factory=Streak)
    wake_failures: Streak = field(default_factory=Streak)
    # For the actuation-latency metric: "cold" (new runner or launcher), "warm" (new instance in
    # a launcher that was there) or "hot" (woke a sleeper), and how many instances made room.
    # None after a restart: an actuation begun by an earlier controller is not measured.
    actuation_path: Path | None = None
    instances_deleted: int = 0
    # The launcher path: (launcher UID, instance id) of the bound instance known to exist in this
    # controller process (we created it or saw it listed: absent later means it died, R17), and
    # the same when it is known awake.
    instance_seen: tuple[str, str] | None = None
    instance_awake: tuple[str, str] | None = None
    # When (monotonic) the bound instance was first found not answering: its start deadline.
    instance_unanswered_since: float | None = None
    # Set when its instance kept dying and is not created again: the requester's status error.
    gave_up: str | None = None
    # Why the last create of the bound instance failed, shown until one succeeds (so that the
    # status does not flip between the error and none, each write's event skipping the backoff).
    create_failed: str | None = None
    actuation_observed: bool = False
    # The requester's resourceVersion and the runner's nominal hash when the API server refused
    # that runner: not sent again until one of them changes.
    refused: tuple[str, str] | None = None

    def known_gpus(self, requester: RawObj) -> tuple[str, ...]:
        return self.gpu_uuids if self.gpu_uuids_from == instance(requester) else ()

    def knows_awake(self, runner: RawObj) -> bool:
        return self.awake_instance == instance(runner)

    def already_relayed(self, ready: bool, requester: RawObj) -> bool:
        return self.relayed == (ready, instance(requester))


@dataclass
class RunnerState:
    """What is known about one unbound runner: the container instance verified asleep."""

    asleep_instance: tuple[str, int] | None = None


# Deaths of one instance id while bound, within this window, after which it is not created again.
DEATHS_COUNTED = 3
DEATHS_WINDOW_S = 600.0


@dataclass
class Memory:
    """All the soft state of one controller: per inference server (requester UID), per unbound
    runner, per launcher the last use of its instances, and the names each server was last seen
    with (for its end-of-life line)."""

    servers: dict[str, ServerState] = field(default_factory=dict)
    runners: dict[str, RunnerState] = field(default_factory=dict)
    names: dict[str, dict[str, Any]] = field(default_factory=dict)
    # launcher UID -> instance id -> when (monotonic) it was last bound, unbound or created, or
    # first seen: the LRU clock of reclaims (R12). Lost on restart, as upstream's is: a launch
    # body cannot be changed after the create, so the wire has nowhere to keep it.
    instance_use: dict[str, dict[str, float]] = field(default_factory=dict)

    def last_use(self, launcher_uid: str, instance_id: str, now: float) -> float:
        return self.instance_use.setdefault(launcher_uid, {}).setdefault(instance_id, now)

    def used(self, launcher_uid: str, instance_id: str, now: float) -> None:
        self.instance_use.setdefault(launcher_uid, {})[instance_id] = now

    # launcher UID -> (its instance signature annotation, its instances as last listed): a
    # candidate whose notifier has published no change since is not asked again (R11 lists every
    # candidate of a Node, each reconcile). Our own creates and deletes drop the entry, since the
    # signature follows them only a notifier period later.
    listings: dict[str, tuple[str, tuple[InstanceState, ...]]] = field(default_factory=dict)

    def listing(self, launcher_uid: str, signature: str) -> tuple[InstanceState, ...] | None:
        found = self.listings.get(launcher_uid)
        return found[1] if found is not None and signature and found[0] == signature else None

    def listed(self, launcher_uid: str, signature: str, states: Sequence[InstanceState]) -> None:
        if signature:
            self.listings[launcher_uid] = (signature, tuple(states))

    def changed_instances(self, launcher_uid: str) -> None:
        self.listings.pop(launcher_uid, None)

    def forget_instance(self, launcher_uid: str, instance_id: str) -> None:
        self.instance_use.get(launcher_uid, {}).pop(instance_id, None)
        self.changed_instances(launcher_uid)

    def forget_launcher(self, launcher_uid: str) -> None:
        self.instance_use.pop(launcher_uid, None)
        self.listings.pop(launcher_uid, None)

    # instance id -> when (monotonic) it died while bound, the latest DEATHS_COUNTED at most, so a
    # vLLM that cannot start (bad options) is not recreated for ever (launcher contract §9 [D]).
    instance_deaths: dict[str, list[float]] = field(default_factory=dict)

    def died(self, iid: str, now: float) -> int:
        """Count a death; how many there were in the last DEATHS_WINDOW_S."""
        recent = [t for t in self.instance_deaths.get(iid, []) if now - t < DEATHS_WINDOW_S][
            -DEATHS_COUNTED + 1 :
        ]
        self.instance_deaths[iid] = [*recent, now]
        self._prune_deaths(now)
        return len(self.instance_deaths[iid])

    def deaths(self, iid: str, now: float) -> int:
        return sum(1 for t in self.instance_deaths.get(iid, []) if now - t < DEATHS_WINDOW_S)

    def _prune_deaths(self, now: float) -> None:
        self.instance_deaths = {
            k: v for k, v in self.instance_deaths.items() if v and now - v[-1] < DEATHS_WINDOW_S
        }

    def server(self, uid: str) -> ServerState:
        return self.servers.setdefault(uid, ServerState())

    def runner(self, uid: str) -> RunnerState:
        return self.runners.setdefault(uid, RunnerState())

    def note_names(self, uid: str, **names: Any) -> None:
        self.names.setdefault(uid, {}).update(names)

    def name_of(self, uid: str) -> str | None:
        """The requester's name as last seen, for a UID whose Pod the cache no longer has."""
        known = self.names.get(uid, {}).get("requester")
        return str(known) if known else None

    def forget_server(self, uid: str) -> dict[str, Any] | None:
        """Drop what is known of a server; the names it had, or None if nothing was known."""
        known = self.servers.pop(uid, None) is not None or uid in self.names
        names = self.names.pop(uid, {})
        return names if known else None

    def forget_runner(self, uid: str) -> None:
        self.runners.pop(uid, None)

    def verified_asleep(self, runner: RawObj) -> bool:
        """Whether this container instance of an unbound runner was found (or put) asleep."""
        st = self.runners.get(podview.uid(runner))
        return st is not None and st.asleep_instance == instance(runner)
