"""What processing an item concluded, as types the worker loop maps onto the queue.

Owns :class:`Done`, :class:`Retry` and :class:`RequeueAfter`. A process function returns one
of them; the worker loop (``workers.py``) turns it into ``forget``, ``add_rate_limited`` or
``add_after``. Never a ``(err, retry)`` pair: the two are not independent (FMA lesson 59a1ed2).
Does not own the queue or the loop.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Done:
    """Converged (or nothing more to do until the next event): reset the item's backoff."""


@dataclass(frozen=True)
class Retry:
    """Something transient failed: try again after the item's backoff, which grows each time.

    ``expected`` marks a failure that is normal for a while (a stub that has not started
    listening yet): it is logged only at trace verbosity, so that routine start-up does not fill
    the log with retries.
    """

    reason: str
    expected: bool = False


@dataclass(frozen=True)
class RequeueAfter:
    """Progress is being made but needs another look later, e.g. polling a loading server.

    The delay is fixed and the item's backoff is reset, so polling does not escalate it.
    """

    seconds: float
    reason: str


Outcome = Done | Retry | RequeueAfter
