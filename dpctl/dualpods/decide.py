"""The decision of contract §5, pure: from the cached requester, runner and Node, which step.

Read top to bottom, :func:`decide` is §5's order of precedence: a runner being deleted is
reflected first; a requester gone or going releases its runner; a requester that carries the
server-patch annotation of both dialects (§2b), or a server-patch and an InferenceServerConfig,
is refused; a requester not yet placed (or on a Node absent or departing) waits for its Node; a
bound pair is served; a requester on a cordoned Node without a runner is deleted; anything else
is actuated.

The launcher path (launcher contract §4) follows the same order with a launcher as the
provider ("runner" below means either kind): R2 is `ReflectRunnerDeletion`, R3 `Release`, R4
`AwaitNode`, R9 `DeleteOnCordon`; the reconciler hands a step to the path's own module by the
kind of provider (bound) or of requester (unbound).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dpctl import api
from dpctl.dualpods import podview
from dpctl.dualpods.podview import RawObj


@dataclass(frozen=True)
class Forget:
    """Neither Pod exists any more: the server's end of life."""


@dataclass(frozen=True)
class ReflectRunnerDeletion:
    requester: RawObj | None
    runner: RawObj


@dataclass(frozen=True)
class Release:
    requester: RawObj | None
    runner: RawObj | None


@dataclass(frozen=True)
class RefuseTwoDialects:
    """Both server-patch annotations: which one to serve is the user's call, not ours."""

    requester: RawObj


@dataclass(frozen=True)
class RefuseTwoPaths:
    """A server-patch and an InferenceServerConfig: a direct runner or a launcher? The user's call."""

    requester: RawObj


@dataclass(frozen=True)
class AwaitNode:
    """Not scheduled yet, or its Node is absent or departing: its Node's events bring it back."""


@dataclass(frozen=True)
class ServeBound:
    requester: RawObj
    runner: RawObj


@dataclass(frozen=True)
class DeleteOnCordon:
    requester: RawObj


@dataclass(frozen=True)
class Actuate:
    requester: RawObj
    node: str
    node_labels: Mapping[str, str]


Step = (
    Forget
    | ReflectRunnerDeletion
    | Release
    | RefuseTwoDialects
    | RefuseTwoPaths
    | AwaitNode
    | ServeBound
    | DeleteOnCordon
    | Actuate
)


def decide(requester: RawObj | None, runner: RawObj | None, node: RawObj | None) -> Step:
    """``node`` is the requester's Node as cached (None when unscheduled or unknown)."""
    if requester is None and runner is None:
        return Forget()
    if runner is not None and podview.is_deleting(runner):
        return ReflectRunnerDeletion(requester, runner)
    if requester is None or podview.is_deleting(requester):
        return Release(requester, runner)
    dialects = api.dialects_of(podview.annotations(requester))
    if len(dialects) > 1:
        return RefuseTwoDialects(requester)
    if dialects and podview.wants_launcher(requester):
        return RefuseTwoPaths(requester)
    if node is None or podview.is_deleting(node):
        return AwaitNode()
    if runner is not None:
        return ServeBound(requester, runner)
    if podview.node_unschedulable(node):
        return DeleteOnCordon(requester)
    return Actuate(requester, podview.node_name(requester), podview.labels(node))


def the_runner(bound: Sequence[RawObj]) -> tuple[RawObj | None, list[RawObj]]:
    """Of the runners bound to one requester, the oldest, and the live duplicates to delete
    (a lost race could make them)."""
    runners = sorted(
        bound, key=lambda r: (str(podview.meta(r).get("creationTimestamp", "")), podview.name(r))
    )
    if not runners:
        return None, []
    return runners[0], [r for r in runners[1:] if not podview.is_deleting(r)]
