"""What an InferenceServerConfig asks to be put on its launcher while bound: routing labels and
annotations, and the rules they must keep (launcher contract §2.1, R8, R19).

Owns `RoutingMetadata`, its wire form (the ``isc-routing-metadata`` annotation: JSON with the
empty maps left out) and `routing_problems`, the checks made before binding and again before
the labels go on: keys must be qualified names outside the prefixes the controllers and
Kubernetes own, must not collide with what the launcher already carries, and label values must
be label values. Also `options_problem`: the port is the ISC's ``port`` field's alone.

The messages are upstream's, so that users of either controller read the same words.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from dpctl.kube.names import label_value_problems, qualified_name_problems

# Keys the controllers and Kubernetes write: an ISC could otherwise forge binding state.
RESERVED_PREFIXES: Final = ("dual-pods.llm-d.ai/", "kubernetes.io/", "k8s.io/")


@dataclass(frozen=True)
class RoutingMetadata:
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    def annotation_value(self) -> str:
        body: dict[str, Any] = {}
        if self.labels:
            body["labels"] = dict(sorted(self.labels.items()))
        if self.annotations:
            body["annotations"] = dict(sorted(self.annotations.items()))
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def parse(cls, text: str) -> RoutingMetadata:
        """The annotation's value read back; ValueError when it is not that JSON."""
        body = json.loads(text)
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
        parts = [body.get("labels") or {}, body.get("annotations") or {}]
        if not all(isinstance(p, dict) and all(isinstance(v, str) for v in p.values()) for p in parts):
            raise ValueError("labels and annotations must map strings to strings")
        return cls({str(k): v for k, v in parts[0].items()}, {str(k): v for k, v in parts[1].items()})


def routing_problems(
    meta: RoutingMetadata, pod_labels: Mapping[str, str], pod_annotations: Mapping[str, str]
) -> list[str]:
    """Every problem of ``meta`` against the launcher's current labels and annotations."""
    problems: list[str] = []
    for what, keys, existing in (
        ("label", meta.labels, pod_labels),
        ("annotation", meta.annotations, pod_annotations),
    ):
        for key in sorted(keys):
            if errors := qualified_name_problems(key):
                problems.append(
                    f"ISC {what} key {_q(key)} is not a valid qualified name: {'; '.join(errors)}"
                )
            elif key.startswith(RESERVED_PREFIXES):
                problems.append(f"ISC {what} key {_q(key)} uses a reserved prefix")
            elif key in existing:
                problems.append(f"ISC {what} key {_q(key)} collides with existing pod {what}")
    for key, value in sorted(meta.labels.items()):
        if errors := label_value_problems(value):
            problems.append(
                f"ISC label value {_q(value)} for key {_q(key)} is not valid: {'; '.join(errors)}"
            )
    return problems


def _q(text: str) -> str:
    return json.dumps(text)  # Go's %q, as upstream quotes keys


def options_problem(options: str) -> str | None:
    """vLLM's options may not set the port: the launch body appends the ISC's (upstream lets a
    second ``--port`` win silently, so the controller would talk to the wrong port)."""
    # Split as the launcher splits them: on whitespace, no shell quoting.
    if any(w == "--port" or w.startswith("--port=") for w in options.split()):
        return "options must not contain --port"
    return None
