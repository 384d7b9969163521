"""Every patch the controller sends, each built by a pure function of the objects it concerns.

All are strategic merge patches on Pods. Finalizers are removed with
``$deleteFromPrimitiveList`` so another writer's finalizers are never touched, and added as a
one-element list, which strategic merge unions with the existing ones. A ``resourceVersion`` or
``uid`` in ``metadata`` is a precondition the API server checks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dpctl import api
from dpctl.dualpods import podview
from dpctl.dualpods.podview import RawObj
from dpctl.podbuild.nominal import Runner

Patch = dict[str, Any]
_REMOVE_FINALIZERS = "$deleteFromPrimitiveList/finalizers"


def sleeping_label(asleep: bool) -> Patch:
    """The routing label: set to "true" before ``/sleep``, to "false" only after ``/wake_up``."""
    return {"metadata": {"labels": {api.SLEEPING_LABEL: "true" if asleep else "false"}}}


def unbinding() -> Patch:
    """A runner put to sleep goes back to the pool: no requester, no dual label, no finalizer
    (of either dialect: it may have been bound by another controller version)."""
    return {
        "metadata": {
            "annotations": {api.REQUESTER_ANNOTATION: None},
            "labels": {api.DUAL_LABEL: None},
            _REMOVE_FINALIZERS: list(api.RUNNER_FINALIZERS),
        }
    }


def binding(requester: RawObj, built: Runner, sleeper: RawObj) -> Patch:
    """Bind a sleeper: the resourceVersion makes it fail if anyone changed the sleeper meanwhile."""
    meta: Mapping[str, Any] = built.pod["metadata"]
    ann = meta.get("annotations") or {}
    return {
        "metadata": {
            "resourceVersion": podview.meta(sleeper).get("resourceVersion"),
            "annotations": {
                api.REQUESTER_ANNOTATION: f"{podview.uid(requester)} {podview.name(requester)}",
                api.ACCELERATORS_ANNOTATION: ann.get(api.ACCELERATORS_ANNOTATION),
            },
            "labels": {api.DUAL_LABEL: podview.name(requester)},
            "finalizers": [podview.dialect(requester).runner_finalizer],
        }
    }


def finalizer(name: str, present: bool) -> Patch:
    if present:
        return {"metadata": {"finalizers": [name]}}
    return without_finalizers([name])


def without_finalizers(names: Sequence[str]) -> Patch:
    return {"metadata": {_REMOVE_FINALIZERS: list(names)}}


def status_in_every_dialect(requester: RawObj, errors: Sequence[str]) -> Patch | None:
    """The status annotation of both dialects, for a requester whose dialect is unclear (it
    carries both server-patch annotations), so a user of either version sees why; None when set."""
    want = api.RequesterStatus(Errors=tuple(errors)).to_annotation()
    have = podview.annotations(requester)
    changed = {d.status: want for d in api.DIALECTS if have.get(d.status) != want}
    return {"metadata": {"annotations": changed}} if changed else None


def of_uid(pod: RawObj, patch: Patch) -> Patch:
    """``patch`` with a UID precondition: it must not land on a namesake that replaced ``pod``."""
    return {"metadata": {"uid": podview.uid(pod), **patch["metadata"]}}


def requester_state(
    requester: RawObj, runner: RawObj | None, errors: Sequence[str], accelerators: str
) -> Patch | None:
    """What the requester should show (contract §3), as one patch; None when it shows it already.

    The status annotation with ``errors``; the FYI accelerators annotation (the stub's answer, or
    the bound runner's when the controller restarted and did not ask again); the dual label
    naming the bound runner; and the requester finalizer while its runner's server runs.
    """
    want_status = api.RequesterStatus(Errors=tuple(errors)).to_annotation()
    have_ann = podview.annotations(requester)
    new_ann: dict[str, str | None] = {}
    status_key = podview.dialect(requester).status
    if have_ann.get(status_key) != want_status:
        new_ann[status_key] = want_status
    for other in api.DIALECTS:  # left by a time it carried both server-patches: stale now
        if other.status != status_key and other.status in have_ann:
            new_ann[other.status] = None
    if not accelerators and runner is not None:
        accelerators = podview.annotations(runner).get(api.ACCELERATORS_ANNOTATION) or ""
    if accelerators and have_ann.get(api.ACCELERATORS_ANNOTATION) != accelerators:
        new_ann[api.ACCELERATORS_ANNOTATION] = accelerators
    labels: dict[str, str | None] = {}
    dual = podview.name(runner) if runner is not None else None
    if podview.labels(requester).get(api.DUAL_LABEL) != dual:
        labels[api.DUAL_LABEL] = dual
    metadata: dict[str, Any] = {}
    if new_ann:
        metadata["annotations"] = new_ann
    if labels:
        metadata["labels"] = labels
    want_finalizer = runner is not None and podview.container_running(runner)
    if want_finalizer != (api.REQUESTER_FINALIZER in podview.finalizers(requester)):
        metadata.update(finalizer(api.REQUESTER_FINALIZER, want_finalizer)["metadata"])
    return {"metadata": metadata} if metadata else None
