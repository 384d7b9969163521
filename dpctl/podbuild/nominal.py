"""Build the nominal server-running Pod ("runner") for a server-requesting Pod (contract §4).

Owns `build_runner` and its steps: de-individualise the requester, render and parse the
server-patch annotation, apply it as a strategic merge patch, validate the result, hash it, pin
it to the node and GPUs, and name and annotate it; and the runner's (fallback) names. Every
problem a user can cause is raised as `BuildError`, whose message is fit for the requester's
status annotation.

Does not: look anything up (GPU indices, name clashes and reusable sleepers are the
controller's business), talk to the API server, or decide whether a Pod is a requester.

De-individualisation, i.e. what of the requester does not carry over, and why:

- metadata: only labels carry over; not the controller's own ``dual``/``sleeping`` labels, and not
  a label whose value is the requester's name (StatefulSet's ``statefulset.kubernetes.io/pod-name``):
  that is per-Pod identity, which would put the requester into the nominal hash and make the
  runner match the requester's own Service.
- ``spec.ephemeralContainers``: debugging additions to a live Pod, not part of its definition.
- the ``kube-api-access-*`` volume and its mounts in every container and init container: the
  service-account admission injects the runner's own.
- ``spec.nodeName``: the runner is pinned by nodeSelector and placed by the scheduler.
- ``spec.priority``, ``spec.preemptionPolicy``, ``spec.overhead``: admission derives them from
  priorityClassName and runtimeClassName, and rejects a Pod whose copies disagree (as they would
  after a patch that changes the class).
- ``spec.serviceAccount``: the deprecated alias the server fills in from serviceAccountName; a
  stale copy would contradict a patched serviceAccountName.
- ``spec.hostname`` when it equals the requester's name (StatefulSet sets it so): it would give
  the runner the requester's DNS name. A hostname users chose is kept, as is ``subdomain``.

Everything else is kept, including what the API server defaulted on the requester. So any
container field the patch does not override (ports, probes, resource requests, ...) leaks into
the runner, as it does with the Go controller.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any, Final

from dpctl.api import (
    ACCELERATORS_ANNOTATION,
    DIALECTS,
    DUAL_LABEL,
    GPU_RESOURCE,
    HOSTNAME_LABEL,
    INFERENCE_SERVER_CONTAINER,
    NOMINAL_ANNOTATION,
    REQUESTER_ANNOTATION,
    RUNNER_NAME_SUFFIX,
    SLEEPING_LABEL,
    Dialect,
    dialects_of,
)
from dpctl.podbuild.hashing import nominal_hash, short_hash
from dpctl.podbuild.placement import PlacementError, check_runner_placement
from dpctl.podbuild.smp import PatchError, strategic_merge_patch
from dpctl.podbuild.template import TemplateError, render_server_patch
from dpctl.podbuild.validate import PodValidationError, inference_server_port, validate_pod
from dpctl.podbuild.yamltext import YamlTextError, load_yaml

CUDA_VISIBLE_DEVICES: Final = "CUDA_VISIBLE_DEVICES"
CUDA_DEVICE_ORDER: Final = "CUDA_DEVICE_ORDER"
# The order nvidia-smi (and so gpu-map) numbers GPUs in; CUDA's default is "fastest first".
PCI_BUS_ID: Final = "PCI_BUS_ID"
MAX_NAME_LENGTH: Final = 253  # a Pod name is a DNS subdomain
_MAX_LABEL_VALUE: Final = 63

_KUBE_API_ACCESS_PREFIX: Final = "kube-api-access-"
_INDIVIDUAL_SPEC_FIELDS: Final = (
    "ephemeralContainers",
    "nodeName",
    "priority",
    "preemptionPolicy",
    "overhead",
    "serviceAccount",
)
_CONTROLLER_LABELS: Final = frozenset({DUAL_LABEL, SLEEPING_LABEL})
_PATCHABLE_METADATA: Final = ("labels", "annotations")


class BuildError(Exception):
    """A problem the user can fix; ``str()`` is the text for the requester's status annotation."""


class _PatchProblem(Exception):
    """A problem of the server-patch's text; `build_runner` names the annotation (its dialect's)."""


@dataclasses.dataclass(frozen=True)
class Runner:
    """The runner to create. ``pod`` is a fresh dict, the caller's to send or change."""

    name: str
    pod: dict[str, Any]
    nominal_hash: str
    server_port: int

    def renamed(self, name: str) -> Runner:
        """The same runner under another name (see `fallback_runner_name`)."""
        pod = copy.deepcopy(self.pod)
        pod["metadata"]["name"] = name
        return dataclasses.replace(self, name=name, pod=pod)


def build_runner(
    requester: Mapping[str, Any],
    node: str,
    gpu_indices: Sequence[int],
    gpu_uuids: Sequence[str],
    node_labels: Mapping[str, str] | None = None,
) -> Runner:
    """The runner for ``requester`` on ``node`` using the GPUs ``gpu_indices`` (gpu-map indices).

    The patched Pod must not place the runner anywhere but ``node`` (see
    :mod:`dpctl.podbuild.placement`); ``node_labels``, when known, let its node selector and
    required node affinity be checked against the Node's labels too.

    ``gpu_uuids`` is empty or gives the UUID of each of ``gpu_indices`` in the same order; they only
    fill the FYI accelerators annotation. The GPUs are ordered by index, so the same set of GPUs
    always yields the same runner and hash.
    In the ``inference-server`` container, ``CUDA_VISIBLE_DEVICES`` and ``CUDA_DEVICE_ORDER`` come
    first in ``env`` (replacing any entries of those names) so that later entries can refer to
    them as ``$(CUDA_VISIBLE_DEVICES)``. ``nvidia.com/gpu`` is set to "0" there, and in any other
    container that mentions it, since the requester holds the GPUs. Raises BuildError for every
    problem a user can cause, and ValueError if the UUIDs do not match the indices.
    """
    metadata = _mapping(requester.get("metadata"))
    name, uid = metadata.get("name"), metadata.get("uid")
    if not isinstance(name, str) or not name or not isinstance(uid, str) or not uid:
        raise BuildError("the server-requesting Pod has no name or UID")
    found = dialects_of(_mapping(metadata.get("annotations")))
    if len(found) != 1:
        names = " and ".join(d.server_patch for d in DIALECTS)
        raise BuildError(f"the Pod must carry exactly one of the annotations {names}")
    dialect = found[0]
    patch_text = _mapping(metadata.get("annotations"))[dialect.server_patch]
    if not isinstance(patch_text, str):
        raise BuildError(f"the {dialect.server_patch} annotation is not a string")
    if gpu_uuids and len(gpu_uuids) != len(gpu_indices):
        raise ValueError(f"{len(gpu_uuids)} GPU UUIDs for {len(gpu_indices)} GPU indices")
    gpus = sorted(zip(gpu_indices, gpu_uuids or [""] * len(gpu_indices), strict=True))
    indices = [index for index, _ in gpus]
    uuids = [uuid for _, uuid in gpus if uuid]
    try:
        patched = _patched(runner_base(requester), patch_text, node)
        try:
            check_runner_placement(patched, _mapping(requester.get("spec")), node, node_labels)
        except PlacementError as error:
            raise _PatchProblem(str(error)) from error
        try:
            port = inference_server_port(patched)
        except PodValidationError as error:
            raise _PatchProblem(f"in the patched Pod, {error}") from error
    except _PatchProblem as problem:
        raise BuildError(f"{dialect.server_patch}: {problem}") from problem
    digest = nominal_hash(patched, node, indices)
    runner = runner_name(name)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _runner_metadata(patched, runner, metadata, digest, uuids, dialect),
        "spec": _pinned(patched, node, indices),
    }
    return Runner(runner, pod, digest, port)


def _runner_metadata(
    patched: dict[str, Any],
    runner: str,
    requester: dict[str, Any],
    digest: str,
    uuids: Sequence[str],
    dialect: Dialect,
) -> dict[str, Any]:
    """Step 6: the patched labels and annotations, plus the binding to the requester."""
    name = requester["name"]
    metadata: dict[str, Any] = {"name": runner}
    if isinstance(requester.get("namespace"), str):
        metadata["namespace"] = requester["namespace"]
    patched_metadata = _mapping(patched.get("metadata"))
    metadata["labels"] = {
        **_mapping(patched_metadata.get("labels")),
        DUAL_LABEL: _label_value(name),
        SLEEPING_LABEL: "false",
    }
    metadata["annotations"] = {
        **_mapping(patched_metadata.get("annotations")),
        NOMINAL_ANNOTATION: digest,
        REQUESTER_ANNOTATION: f"{requester['uid']} {name}",
        ACCELERATORS_ANNOTATION: ",".join(uuids),
    }
    metadata["finalizers"] = [dialect.runner_finalizer]
    return metadata


def runner_base(requester: Mapping[str, Any]) -> dict[str, Any]:
    """The de-individualised requester (labels and spec) that the server patch applies to."""
    metadata = _mapping(requester.get("metadata"))
    name = metadata.get("name")
    labels = {
        key: value
        for key, value in _mapping(metadata.get("labels")).items()
        if key not in _CONTROLLER_LABELS and value != name
    }
    return {"metadata": {"labels": labels}, "spec": deindividualised_spec(requester.get("spec"), name)}


def deindividualised_spec(spec: Any, pod_name: Any = None) -> dict[str, Any]:
    """A copy of a Pod spec without what is one Pod's own (see the module docstring)."""
    out = copy.deepcopy(_mapping(spec))
    for field in _INDIVIDUAL_SPEC_FIELDS:
        out.pop(field, None)
    if pod_name is not None and out.get("hostname") == pod_name:
        del out["hostname"]
    _drop_kube_api_access(out)
    return out


def runner_name(requester_name: str) -> str:
    """``<requester>-server``, as the recipe promises (shortened to fit if need be)."""
    return _with_suffix(requester_name, RUNNER_NAME_SUFFIX)


def fallback_runner_name(requester_name: str, requester_uid: str) -> str:
    """The name to use when `runner_name` is taken by a Pod that is not this requester's runner."""
    return _with_suffix(requester_name, f"{RUNNER_NAME_SUFFIX}-{short_hash(requester_uid)}")


def _with_suffix(base: str, suffix: str) -> str:
    return base[: MAX_NAME_LENGTH - len(suffix)].rstrip("-.") + suffix


def _label_value(text: str) -> str:
    """A Pod name fitted to a label value (at most 63 characters, alphanumeric at both ends)."""
    return text[:_MAX_LABEL_VALUE].rstrip("-.")


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _drop_kube_api_access(spec: dict[str, Any]) -> None:
    volumes = spec.get("volumes")
    doomed = {
        volume["name"]
        for volume in (volumes if isinstance(volumes, list) else [])
        if isinstance(volume, dict) and str(volume.get("name", "")).startswith(_KUBE_API_ACCESS_PREFIX)
    }
    if not doomed:
        return
    _remove_named(spec, "volumes", doomed)
    # Init containers too: the Go original indexed `containers` here by mistake (fixed upstream in 97ba923).
    for field in ("initContainers", "containers"):
        for container in spec.get(field) or []:
            if isinstance(container, dict):
                _remove_named(container, "volumeMounts", doomed)


def _remove_named(parent: dict[str, Any], field: str, names: set[str]) -> None:
    items = parent.get(field)
    if not isinstance(items, list):
        return
    kept = [item for item in items if not (isinstance(item, dict) and item.get("name") in names)]
    if len(kept) == len(items):
        return
    if kept:
        parent[field] = kept
    else:
        del parent[field]  # an empty list would be dropped by the server anyway


def _patched(base: dict[str, Any], template: str, node: str) -> dict[str, Any]:
    """Steps 2-4 of the contract: render, parse, apply and validate the server patch."""
    patch = copy.deepcopy(_server_patch(template, node))
    try:
        patched = strategic_merge_patch(base, patch)
    except PatchError as error:
        raise _PatchProblem(f"cannot apply it: {error}") from error
    try:
        validate_pod(patched)
    except PodValidationError as error:
        raise _PatchProblem(f"the patched Pod is invalid: {error}") from error
    beyond = [field for field in patched if field not in ("metadata", "spec")]
    beyond += [
        f"metadata.{field}" for field in _mapping(patched.get("metadata")) if field not in _PATCHABLE_METADATA
    ]
    if beyond:
        raise _PatchProblem(
            f"may set only metadata.labels, metadata.annotations and spec, not {', '.join(beyond)}"
        )
    return patched


@functools.lru_cache(maxsize=128)
def _server_patch(template: str, node: str) -> dict[str, Any]:
    """Steps 2-3: the patch rendered for ``node`` and parsed. Every requester of a ReplicaSet has
    the same text, and parsing YAML is most of a build, so each (text, Node) is done once; the
    result is shared (callers copy it). Errors are not remembered: they are raised each time."""
    try:
        rendered = render_server_patch(template, {"NodeName": node})
    except TemplateError as error:
        raise _PatchProblem(str(error)) from error
    return _parse_patch(template, rendered)


def _parse_patch(template: str, rendered: str) -> dict[str, Any]:
    try:
        patch = load_yaml(rendered)
    except YamlTextError as error:
        if error.line is None:
            where = ""
        elif rendered.count("\n") == template.count("\n"):
            where = f"line {error.line}: "
        else:  # the template added or removed lines, so say which text the number counts in
            where = f"line {error.line} of the rendered template: "
        raise _PatchProblem(f"{where}invalid YAML: {error.reason}") from error
    if not isinstance(patch, dict):
        raise _PatchProblem(f"must be a YAML mapping (of metadata and spec), not {_describe(patch)}")
    return patch


def _describe(value: Any) -> str:
    if value is None:
        return "an empty document"
    if isinstance(value, list):
        return "a list"
    return f"the scalar {value!r}"


def _pinned(patched: dict[str, Any], node: str, indices: Sequence[int]) -> dict[str, Any]:
    """Step 5: the patched spec, pinned to ``node`` and the GPUs, without the GPU resource.
    A ``nodeName`` the patch set (placement checked it is ``node``) goes: the scheduler places
    the runner by its node selector, as it placed the requester."""
    spec: dict[str, Any] = copy.deepcopy(patched["spec"])
    spec.pop("nodeName", None)
    spec["nodeSelector"] = {**_mapping(spec.get("nodeSelector")), HOSTNAME_LABEL: node}
    for field in ("initContainers", "containers"):
        for container in spec.get(field) or []:
            if not isinstance(container, dict):
                continue
            if field == "containers" and container.get("name") == INFERENCE_SERVER_CONTAINER:
                _pin_inference_server(container, indices)
            else:
                _zero_gpus(container, always=False)
    return spec


def _pin_inference_server(container: dict[str, Any], indices: Sequence[int]) -> None:
    pinned = {CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER}
    others = [
        item
        for item in container.get("env") or []
        if not (isinstance(item, dict) and item.get("name") in pinned)
    ]
    container["env"] = [
        {"name": CUDA_VISIBLE_DEVICES, "value": ",".join(map(str, indices))},
        {"name": CUDA_DEVICE_ORDER, "value": PCI_BUS_ID},
        *others,
    ]
    _zero_gpus(container, always=True)


def _zero_gpus(container: dict[str, Any], *, always: bool) -> None:
    resources = _mapping(container.get("resources"))
    zeroed = {
        part: {**_mapping(resources.get(part)), GPU_RESOURCE: "0"}
        for part in ("limits", "requests")
        if always or GPU_RESOURCE in _mapping(resources.get(part))
    }
    if zeroed:
        container["resources"] = {**resources, **zeroed}
