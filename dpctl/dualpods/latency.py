"""Controller-added latency: from the event that made a step possible to the call that does it.

Three steps, each timed from the arrival of an informer event to the moment the controller sends
the request that acts on it:

- ``create``: the requester's container observed running → the runner's create sent;
- ``wake``: the requester's container observed running → ``/wake_up`` sent to a sleeper;
- ``relay``: the bound runner's Ready observed → ``become-ready`` sent to the requester's stub.
  A woken sleeper was Ready all along: there the wake's success is the event.

Everything between is the controller's doing (queueing, the stub's GPU answer, building the
runner, the bind patch), which is what these figures are for; the API server's and the kubelet's
time before the event and after the call are not in them.

Event handlers :meth:`mark` arrival times (monotonic clock) by requester UID; the reconciler
:meth:`take` s a stamp when it sends the call, once. What is never taken (a requester that was
bound already, an actuation that failed) is dropped at the inference server's end of life, so
memory stays bounded by the live inference servers. No per-pod label ever reaches a metric.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, Literal

Step = Literal["create", "wake", "relay"]
STEPS: Final[tuple[Step, ...]] = ("create", "wake", "relay")

# The event behind each step: an actuation (create or wake) starts at the same event.
_EVENT: Final[dict[Step, str]] = {"create": "actuate", "wake": "actuate", "relay": "relay"}


class Stamps:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._at: dict[str, dict[str, float]] = {"actuate": {}, "relay": {}}

    def mark(self, event: Literal["actuate", "relay"], uid: str) -> None:
        """The event that enables ``event``'s step(s) for requester ``uid`` arrived now.

        A later event of the same kind replaces an earlier one (a restarted stub starts over).
        """
        self._at[event][uid] = self._clock()

    def take(self, step: Step, uid: str) -> float | None:
        """Seconds since the event behind ``step``, if one was marked and not yet taken."""
        at = self._at[_EVENT[step]].pop(uid, None)
        return None if at is None else max(0.0, self._clock() - at)

    def forget(self, uid: str) -> None:
        for stamps in self._at.values():
            stamps.pop(uid, None)

    def __len__(self) -> int:
        return sum(len(stamps) for stamps in self._at.values())
