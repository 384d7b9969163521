"""Every patch the controller sends, each built by a pure function of the objects it concerns.

Two kinds, both on Pods (runners and launchers alike):

* **Guarded JSON patches** (RFC 6902, built with ``jsonpatch``) for the writes that depend on
  what the Pod holds: binding a sleeper, unbinding a runner, adding or removing a finalizer on
  its own. Each starts with ``test`` operations on exactly the fields it depends on (the UID,
  and e.g. "no requester yet" for a bind), so the API server applies it to its latest copy
  unless one of those changed; a resourceVersion precondition instead failed on every status
  write of the kubelet in between. A ``test`` with value null passes where the field is absent
  (the API server's JSON patch, not RFC 6902's letter). A failed test comes back as
  :attr:`~dpctl.kube.errors.ApiError.conflict`.
* **Strategic merge patches** for the rest (the routing label, the requester's status and FYI
  fields), which depend on nothing: finalizers in them are removed with
  ``$deleteFromPrimitiveList`` so another writer's finalizers are never touched, and added as a
  one-element list, which strategic merge unions with the existing ones. A ``uid`` in
  ``metadata`` is a precondition the API server checks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jsonpatch

from dpctl import api
from dpctl.dualpods import podview
from dpctl.dualpods.podview import RawObj
from dpctl.podbuild.nominal import Runner
from dpctl.podbuild.routing import RoutingMetadata

Patch = dict[str, Any]
# One RFC 6902 operation; a JSON patch is a list of them.
Op = dict[str, Any]
_REMOVE_FINALIZERS = "$deleteFromPrimitiveList/finalizers"


def sleeping_label(asleep: bool) -> Patch:
    """The routing label: set to "true" before ``/sleep``, to "false" only after ``/wake_up``."""
    return {"metadata": {"labels": {api.SLEEPING_LABEL: "true" if asleep else "false"}}}


def unbinding(runner: RawObj) -> list[Op]:
    """A runner put to sleep goes back to the pool: no requester, no dual label, no finalizer
    (of either dialect: it may have been bound by another controller version). Guarded by the
    binding it undoes: if another worker has bound it meanwhile, the test fails."""
    have = podview.annotations(runner).get(api.REQUESTER_ANNOTATION)
    before, after = _maps(runner), _maps(runner)
    after["annotations"].pop(api.REQUESTER_ANNOTATION, None)
    after["labels"].pop(api.DUAL_LABEL, None)
    return [
        *_guard(runner, (_annotation(runner, api.REQUESTER_ANNOTATION), have)),
        *_map_ops(before, after),
        *_removing_finalizers(runner, api.RUNNER_FINALIZERS),
    ]


def binding(requester: RawObj, built: Runner, sleeper: RawObj) -> list[Op]:
    """Bind a sleeper, if it is still the unbound, undeleted Pod the cache showed; a status write
    of the kubelet meanwhile does not stop it."""
    ann = built.pod["metadata"].get("annotations") or {}
    before, after = _maps(sleeper), _maps(sleeper)
    after["annotations"][api.REQUESTER_ANNOTATION] = f"{podview.uid(requester)} {podview.name(requester)}"
    accelerators = ann.get(api.ACCELERATORS_ANNOTATION)
    if accelerators is None:  # what the built runner says, absence included
        after["annotations"].pop(api.ACCELERATORS_ANNOTATION, None)
    else:
        after["annotations"][api.ACCELERATORS_ANNOTATION] = accelerators
    after["labels"][api.DUAL_LABEL] = podview.name(requester)
    return [
        *_guard(
            sleeper,
            (_annotation(sleeper, api.REQUESTER_ANNOTATION), None),
            ("/metadata/deletionTimestamp", None),
        ),
        *_map_ops(before, after),
        *_adding_finalizer(sleeper, podview.dialect(requester).runner_finalizer),
    ]


def launcher_binding(requester: RawObj, launcher: RawObj, bookkeeping: Mapping[str, str]) -> list[Op]:
    """Bind an unbound launcher (R13): the requester annotation, the dual label, the provider
    finalizer and the four bookkeeping annotations, in one write guarded as `binding` is; the
    ISC's routing labels wait until the instance is awake (I3)."""
    before, after = _maps(launcher), _maps(launcher)
    after["annotations"][api.REQUESTER_ANNOTATION] = f"{podview.uid(requester)} {podview.name(requester)}"
    after["annotations"].update(bookkeeping)
    after["labels"][api.DUAL_LABEL] = podview.name(requester)
    return [
        *_guard(
            launcher,
            (_annotation(launcher, api.REQUESTER_ANNOTATION), None),
            ("/metadata/deletionTimestamp", None),
        ),
        *_map_ops(before, after),
        *_adding_finalizer(launcher, api.HEAD.runner_finalizer),
    ]


def launcher_awake(launcher: RawObj, routing: RoutingMetadata) -> list[Op]:
    """The bound instance is awake (R19): ``sleeping=false`` and the ISC's routing labels and
    annotations, while the launcher is still bound as the cache showed (else the test fails)."""
    before, after = _maps(launcher), _maps(launcher)
    after["labels"].update(routing.labels)
    after["labels"][api.SLEEPING_LABEL] = "false"
    after["annotations"].update(routing.annotations)
    return _guarded_by_binding(launcher, before, after)


def launcher_routing_removed(launcher: RawObj, routing: RoutingMetadata) -> list[Op]:
    """Unbinding begins (R20): the ISC's routing labels go first, so routing stops before the
    instance sleeps."""
    before, after = _maps(launcher), _maps(launcher)
    for key in routing.labels:
        after["labels"].pop(key, None)
    return _guarded_by_binding(launcher, before, after)


def launcher_unbinding(launcher: RawObj, routing: RoutingMetadata) -> list[Op]:
    """The instance is asleep or gone (R20): the launcher back to the pool, ``sleeping=true``,
    without the binding, its bookkeeping, the ISC's routing keys and the provider finalizer."""
    before, after = _maps(launcher), _maps(launcher)
    for key in (api.REQUESTER_ANNOTATION, *api.BOOKKEEPING_ANNOTATIONS, *routing.annotations):
        after["annotations"].pop(key, None)
    for key in (api.DUAL_LABEL, *routing.labels):
        after["labels"].pop(key, None)
    after["labels"][api.SLEEPING_LABEL] = "true"
    return [
        *_guarded_by_binding(launcher, before, after),
        *_removing_finalizers(launcher, api.RUNNER_FINALIZERS),
    ]


def _guarded_by_binding(
    launcher: RawObj, before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]]
) -> list[Op]:
    have = podview.annotations(launcher).get(api.REQUESTER_ANNOTATION)
    return [
        *_guard(launcher, (_annotation(launcher, api.REQUESTER_ANNOTATION), have)),
        *_map_ops(before, after),
    ]


def finalizer_change(pod: RawObj, name: str, present: bool) -> list[Op]:
    """Add or remove one finalizer, by itself (the requester's, as its runner starts or goes)."""
    if present:
        return [*_guard(pod), *_adding_finalizer(pod, name)]
    return without_finalizers(pod, [name])


def without_finalizers(pod: RawObj, names: Sequence[str]) -> list[Op]:
    """Remove those of ``names`` the Pod carries, each guarded by its place in the list."""
    return [*_guard(pod), *_removing_finalizers(pod, names)]


def finalizer(name: str, present: bool) -> Patch:
    """A finalizer in a strategic merge patch that carries other fields too."""
    if present:
        return {"metadata": {"finalizers": [name]}}
    return {"metadata": {_REMOVE_FINALIZERS: [name]}}


def status_in_every_dialect(requester: RawObj, errors: Sequence[str]) -> Patch | None:
    """The status annotation of both dialects, for a requester whose dialect is unclear (it
    carries both server-patch annotations), so a user of either version sees why; None when set."""
    want = api.RequesterStatus(Errors=tuple(errors)).to_annotation()
    have = podview.annotations(requester)
    changed = {d.status: want for d in api.DIALECTS if have.get(d.status) != want}
    return {"metadata": {"annotations": changed}} if changed else None


def target_uid(patch: Patch | Sequence[Op]) -> str:
    """The UID a patch is preconditioned on ("" when none): ``metadata.uid`` of a strategic
    patch, the value of a JSON patch's ``test`` of it."""
    if isinstance(patch, Mapping):
        return str(podview.meta(patch).get("uid") or "")
    return next((str(op["value"]) for op in patch if op.get("path") == "/metadata/uid"), "")


def of_uid(pod: RawObj, patch: Patch) -> Patch:
    """``patch`` with a UID precondition: it must not land on a namesake that replaced ``pod``."""
    return {"metadata": {"uid": podview.uid(pod), **patch["metadata"]}}


def requester_state(
    requester: RawObj,
    runner: RawObj | None,
    errors: Sequence[str],
    accelerators: str,
    instance_id: str | None = None,
) -> Patch | None:
    """What the requester should show (contract §3), as one patch; None when it shows it already.

    The status annotation with ``errors``; the FYI accelerators annotation (the stub's answer, or
    the bound runner's when the controller restarted and did not ask again); the dual label
    naming the bound runner (or launcher); on the launcher path the instance label naming the
    bound instance (``instance_id``); and the requester finalizer while its provider's server runs.
    """
    on_launcher = podview.wants_launcher(requester)
    want_status = api.RequesterStatus(Errors=tuple(errors)).to_annotation(none_as_null=on_launcher)
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
    instance = instance_id if runner is not None else None
    if (on_launcher or instance) and podview.labels(requester).get(api.INSTANCE_LABEL) != instance:
        labels[api.INSTANCE_LABEL] = instance
    metadata: dict[str, Any] = {}
    if new_ann:
        metadata["annotations"] = new_ann
    if labels:
        metadata["labels"] = labels
    want_finalizer = runner is not None and podview.container_running(runner)
    if want_finalizer != (api.REQUESTER_FINALIZER in podview.finalizers(requester)):
        metadata.update(finalizer(api.REQUESTER_FINALIZER, want_finalizer)["metadata"])
    return {"metadata": metadata} if metadata else None


def _guard(pod: RawObj, *tests: tuple[str, Any]) -> list[Op]:
    """``test`` operations: the Pod's UID (not a namesake that replaced it), then ``tests``."""
    return [
        {"op": "test", "path": path, "value": value}
        for path, value in (("/metadata/uid", podview.uid(pod)), *tests)
    ]


def _annotation(pod: RawObj, key: str) -> str:
    """The path of one annotation; of the whole map when the Pod has none (a ``test`` for null
    passes on a missing member, not on a member of a missing map)."""
    if "annotations" not in podview.meta(pod):
        return "/metadata/annotations"
    return str(jsonpatch.JsonPointer.from_parts(["metadata", "annotations", key]).path)


def _maps(pod: RawObj) -> dict[str, dict[str, Any]]:
    """Copies of the Pod's annotations and labels, to edit and diff with :func:`_map_ops`."""
    return {"annotations": dict(podview.annotations(pod)), "labels": dict(podview.labels(pod))}


def _map_ops(before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]]) -> list[Op]:
    """The add/replace/remove operations that turn ``before``'s maps into ``after``'s (a map the
    Pod lacks is added whole: ``jsonpatch`` escapes the ``/`` in keys)."""
    meta_before = {k: dict(v) for k, v in before.items() if v}
    meta_after = {k: dict(v) for k, v in after.items() if v or k in meta_before}
    ops: list[Op] = jsonpatch.make_patch({"metadata": meta_before}, {"metadata": meta_after}).patch
    return ops


def _adding_finalizer(pod: RawObj, name: str) -> list[Op]:
    """Append ``name`` unless present, guarded by the list as it was: the add depends on its
    absence, which a ``test`` can only show as the whole list."""
    have = podview.finalizers(pod)
    if name in have:
        return []
    if not have:
        return [
            {"op": "test", "path": "/metadata/finalizers", "value": None},
            {"op": "add", "path": "/metadata/finalizers", "value": [name]},
        ]
    return [
        {"op": "test", "path": "/metadata/finalizers", "value": have},
        {"op": "add", "path": "/metadata/finalizers/-", "value": name},
    ]


def _removing_finalizers(pod: RawObj, names: Sequence[str]) -> list[Op]:
    """Remove each of ``names`` the Pod carries by its index, last first so the earlier indices
    hold, each guarded by a ``test`` that the index still holds that name."""
    ops: list[Op] = []
    for index, present in reversed(list(enumerate(podview.finalizers(pod)))):
        if present in names:
            path = f"/metadata/finalizers/{index}"
            ops += [{"op": "test", "path": path, "value": present}, {"op": "remove", "path": path}]
    return ops
