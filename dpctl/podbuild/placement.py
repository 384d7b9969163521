"""Which Nodes a Pod may run on, as Kubernetes decides it, and the runner's pin to its requester's Node.

Owns two things:

- `node_mismatch`: whether a Pod's ``nodeName``, ``nodeSelector`` and required node affinity admit
  a Node, with Kubernetes' semantics (terms ORed, expressions within a term ANDed, ``NotIn`` and
  ``DoesNotExist`` true for an absent label, ``Gt``/``Lt`` on integers, ``matchFields`` on
  ``metadata.name`` only, an empty term matching nothing). The scheduler and the kubelet's
  admission (``NodeAffinity``) apply the same rules; the simulated kubelet uses this function.
- `check_runner_placement`: contract §4 step 5, a runner always runs on its requester's Node.

What counts as placement, field by field (the rows of `check_runner_placement`):

================================================  ============================================
PodSpec field                                     decision
================================================  ============================================
``nodeName``                                      placement: absent or the requester's Node
``nodeSelector``                                  placement: must select the requester's Node
                                                  (``kubernetes.io/hostname`` its name)
``affinity.nodeAffinity.required...``             placement: must admit the requester's Node
``affinity.nodeAffinity.preferred...``            kept: a preference cannot beat the pin
``affinity.podAffinity``/``podAntiAffinity``      kept: co-location with other Pods; they can
                                                  keep a runner Pending on its Node, never move it
``tolerations``                                   kept: they only permit; the requester's own
                                                  tolerations are what let it onto a tainted Node
``topologySpreadConstraints``                     kept: like pod affinity, never moves it
``schedulerName``                                 placement: another scheduler need not honour
                                                  the pin, so it must stay the requester's
================================================  ============================================

Node labels are not always known (``dpctl render-runner`` gets only a Node name): then only what
a name decides is checked — ``nodeName``, the hostname selector, ``matchFields`` and hostname
expressions — and the rest is left to the API server and the kubelet.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from dpctl.api import HOSTNAME_LABEL

# The one field that matchFields may name (the API server rejects any other).
_NODE_NAME_FIELD: Final = "metadata.name"
_REQUIRED: Final = "requiredDuringSchedulingIgnoredDuringExecution"
_DEFAULT_SCHEDULER: Final = "default-scheduler"


class PlacementError(Exception):
    """The Pod cannot run on the Node; ``str()`` names the field and says why."""


def node_mismatch(spec: Mapping[str, Any], node: str, labels: Mapping[str, str] | None) -> str:
    """Why the Pod with ``spec`` may not run on Node ``node`` (with ``labels``); "" if it may.

    ``labels`` None means unknown: a condition on a label other than the hostname is then taken
    as met. The hostname label is taken to be the Node's name when ``labels`` lacks it.
    """
    known = labels is not None
    node_labels = {HOSTNAME_LABEL: node, **(labels or {})}
    node_name = spec.get("nodeName")
    if node_name and node_name != node:
        return f"spec.nodeName is {node_name!r}"
    selector = spec.get("nodeSelector")
    for key, value in (selector if isinstance(selector, Mapping) else {}).items():
        if (known or key == HOSTNAME_LABEL) and node_labels.get(key) != value:
            return (
                f"spec.nodeSelector[{key!r}] is {value!r}, but the Node's label is {node_labels.get(key)!r}"
            )
    affinity = spec.get("affinity")
    node_affinity = affinity.get("nodeAffinity") if isinstance(affinity, Mapping) else None
    required = node_affinity.get(_REQUIRED) if isinstance(node_affinity, Mapping) else None
    if isinstance(required, Mapping):
        terms = required.get("nodeSelectorTerms")
        terms = terms if isinstance(terms, list) else []
        if not any(_term_matches(t, node, node_labels, known) for t in terms):
            return f"spec.affinity.nodeAffinity.{_REQUIRED} does not admit Node {node!r}"
    return ""


def check_runner_placement(
    patched: Mapping[str, Any], requester_spec: Mapping[str, Any], node: str, labels: Mapping[str, str] | None
) -> None:
    """Raise PlacementError when the patched Pod (before the pin) says it runs anywhere but ``node``."""
    spec = patched.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}
    why = node_mismatch(spec, node, labels)
    if why:
        raise PlacementError(
            f"{why}: the server-running Pod must run on the requester's Node {node!r}, so the patch may not place it"
            " elsewhere"
        )
    have = spec.get("schedulerName") or _DEFAULT_SCHEDULER
    want = requester_spec.get("schedulerName") or _DEFAULT_SCHEDULER
    if have != want:
        raise PlacementError(
            f"spec.schedulerName is {have!r}: the server-running Pod must be scheduled by the requester's"
            f" scheduler {want!r}, which honours its pin to Node {node!r}"
        )


def _term_matches(term: Any, node: str, labels: Mapping[str, str], known: bool) -> bool:
    if not isinstance(term, Mapping):
        return False
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return False  # Kubernetes: an empty term matches no objects
    return all(_expression_matches(e, labels, known) for e in expressions if isinstance(e, Mapping)) and all(
        _expression_matches(f, {_NODE_NAME_FIELD: node}, True) for f in fields if isinstance(f, Mapping)
    )


def _expression_matches(expression: Mapping[str, Any], labels: Mapping[str, str], known: bool) -> bool:
    key = str(expression.get("key", ""))
    if not known and key != HOSTNAME_LABEL:
        return True
    operator = expression.get("operator")
    values = [str(v) for v in expression.get("values") or []]
    present = key in labels
    value = labels.get(key, "")
    match operator:
        case "In":
            return present and value in values
        case "NotIn":
            return not present or value not in values
        case "Exists":
            return present
        case "DoesNotExist":
            return not present
        case "Gt" | "Lt":
            try:
                have, bound = int(value), int(values[0])
            except (ValueError, IndexError):
                return False
            return have > bound if operator == "Gt" else have < bound
        case _:
            return False
