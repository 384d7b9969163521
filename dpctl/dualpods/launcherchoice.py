"""Which launcher serves an unbound requester (launcher contract R11–R12), pure.

The caller has listed the instances of every candidate launcher (the Node's unbound, live
launchers of the right LauncherConfig) and deleted the stopped ones no live server needs (R11);
`choose_launcher` then picks, in the contract's order:

- `Hot`: a launcher that still holds the very instance (same ISC, same GPUs): bind and wake it;
- `Warm`: the first launcher with room for one more instance and none on the ISC's port;
- `Reclaim`: otherwise the launcher that loses the fewest sleeping instances to make that room
  (all those on the port, then the least recently used), ties going to the plan whose victims
  were used longest ago, then by id — so warm sleepers elsewhere survive;
- `AwaitCandidates`: none of that, but a launcher is still starting: its Ready brings us back
  (creating one now would leave two);
- `CreateLauncher`: no launcher can serve; make one, bound from the start (R14).

Upstream's code breaks the reclaim choice the other way (the plan with the *most* deletions);
the contract's order, followed here, keeps more sleepers. An instance whose ``inference-port``
annotation cannot be read is the caller's to delete before choosing (R11), so it never gets here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Instance:
    """One instance a launcher reports (L5), with the controller's memory of its last use."""

    id: str
    port: int
    stopped: bool
    # Monotonic time the controller last bound, unbound or created it; its first sight if never.
    last_use: float


@dataclass(frozen=True)
class Candidate:
    """A launcher that could serve; ``instances`` is None while it is not Ready with an IP."""

    launcher: str
    instances: tuple[Instance, ...] | None


@dataclass(frozen=True)
class Hot:
    launcher: str


@dataclass(frozen=True)
class Warm:
    launcher: str


@dataclass(frozen=True)
class Reclaim:
    """Delete ``victims`` (in order) from ``launcher``, then start the instance there."""

    launcher: str
    victims: tuple[str, ...]


@dataclass(frozen=True)
class AwaitCandidates:
    """A launcher is still starting; choose again when it is Ready."""


@dataclass(frozen=True)
class CreateLauncher:
    """No launcher can take the instance."""


Choice = Hot | Warm | Reclaim | AwaitCandidates | CreateLauncher


def choose_launcher(
    candidates: Sequence[Candidate], instance_id: str, port: int, max_instances: int
) -> Choice:
    """The launcher for instance ``instance_id`` on ``port``; ``max_instances``: the LC's limit."""
    others_allowed = max_instances - 1
    warm: Warm | None = None
    best: tuple[tuple[int, float, str, str], Reclaim] | None = None
    starting = False
    for candidate in candidates:
        if candidate.instances is None:
            starting = True
            continue
        instances = candidate.instances
        if any(i.id == instance_id and not i.stopped for i in instances):
            return Hot(candidate.launcher)
        # A stopped instance of the same id is on this port too (the id covers the port): it
        # must go before the id can be PUT again (L4 answers 409 while it exists).
        on_port = [i for i in instances if i.port == port]
        if not on_port and len(instances) <= others_allowed:
            warm = warm or Warm(candidate.launcher)
            continue
        if warm is not None:
            continue  # a warm launcher wins over any reclaim; only a hot one could still beat it
        others = sorted((i for i in instances if i.port != port), key=lambda i: (i.last_use, i.id))
        wanted = max(len(instances) - others_allowed, 1) - len(on_port)
        victims = [*on_port, *others[: max(wanted, 0)]]
        oldest = min(victims, key=lambda i: (i.last_use, i.id))
        rank = (len(victims), oldest.last_use, oldest.id, candidate.launcher)
        if best is None or rank < best[0]:
            best = (rank, Reclaim(candidate.launcher, tuple(i.id for i in victims)))
    if warm is not None:
        return warm
    if best is not None:
        return best[1]
    return AwaitCandidates() if starting else CreateLauncher()
