"""The sleeper limit: which sleeping runners to delete before a new runner starts on a GPU.

Just before a runner is created on a GPU, the least recently used sleepers there are deleted
until at most ``limit`` remain (so N+1 sleepers can exist while nothing new is created). "Used"
is the last time the controller bound or unbound the runner, read from its managedFields entry;
ties break by name so the choice is deterministic even while the cache lags a deletion.
"""

from __future__ import annotations

from collections.abc import Iterable

from dpctl.dualpods import podview
from dpctl.dualpods.podview import RawObj


def is_sleeper(runner: RawObj) -> bool:
    return podview.bound_requester(runner) is None and not podview.is_deleting(runner)


def victims(runners_on_gpu: Iterable[RawObj], limit: int) -> list[RawObj]:
    """The sleepers to delete on one GPU, least recently used first."""
    sleepers = sorted(
        (r for r in runners_on_gpu if is_sleeper(r)),
        key=lambda r: (podview.manager_time(r), podview.name(r)),
    )
    return sleepers[: max(0, len(sleepers) - max(0, limit))]
