"""A container's environment and command line, built as the kubelet builds them.

Owns: ``$(VAR)`` expansion (the kubelet's rules: ``$$`` escapes, unknown references stay as
written), the pod's ``env``/``envFrom`` with ``valueFrom`` (fieldRef, resourceFieldRef,
configMapKeyRef, secretKeyRef), and the final process environment with the simulated kubelet's
contract variables (``dpsim.simenv``).

ConfigMaps and Secrets are fetched by the caller (:func:`referenced_sources` says which) and
passed in, so everything here is pure. A missing source or key that is not optional raises
:class:`EnvError`, which the caller reports as ``CreateContainerConfigError`` like the kubelet.

Deliberately left out: the Docker-links style ``<SERVICE>_SERVICE_HOST`` variables of every
Service (``enableServiceLinks``), since no Service address is reachable from the host anyway.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Final

_OPERATOR: Final = "$"


class EnvError(ValueError):
    """The container's environment cannot be built (a missing ConfigMap, Secret or key)."""


def expand(text: str, mapping: Mapping[str, str]) -> str:
    """Replace ``$(NAME)`` with ``mapping[NAME]``, as the kubelet does for env, command and args.

    ``$$`` becomes ``$`` (so ``$$(NAME)`` is the literal ``$(NAME)``); a reference to an undefined
    name, an unclosed ``$(`` and a ``$`` before any other character stay as written.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != _OPERATOR or i + 1 == n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == _OPERATOR:
            out.append(_OPERATOR)
            i += 2
        elif nxt == "(":
            close = text.find(")", i + 2)
            if close < 0:
                out.append("$(")
                i += 2
            else:
                name = text[i + 2 : close]
                out.append(mapping.get(name, f"$({name})"))
                i = close + 1
        else:
            out.append(ch + nxt)
            i += 2
    return "".join(out)


@dataclass(frozen=True)
class PodFacts:
    """What ``fieldRef`` can read, fixed once the pod has its IPs."""

    name: str
    namespace: str
    uid: str
    node_name: str
    service_account: str
    pod_ip: str
    host_ip: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, pod: Mapping[str, Any], pod_ip: str, host_ip: str) -> PodFacts:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        return cls(
            name=str(meta.get("name", "")),
            namespace=str(meta.get("namespace", "")),
            uid=str(meta.get("uid", "")),
            node_name=str(spec.get("nodeName", "")),
            service_account=str(spec.get("serviceAccountName") or "default"),
            pod_ip=pod_ip,
            host_ip=host_ip,
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
        )


@dataclass(frozen=True)
class Sources:
    """The ConfigMaps' and Secrets' ``data`` by name (Secrets already decoded); absent = not found."""

    config_maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


def referenced_sources(container: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """Names of the ConfigMaps and Secrets the container's env reads."""
    cms: set[str] = set()
    secrets: set[str] = set()
    for item in container.get("envFrom") or []:
        if "configMapRef" in item:
            cms.add(str((item["configMapRef"] or {}).get("name", "")))
        if "secretRef" in item:
            secrets.add(str((item["secretRef"] or {}).get("name", "")))
    for item in container.get("env") or []:
        source = item.get("valueFrom") or {}
        if "configMapKeyRef" in source:
            cms.add(str((source["configMapKeyRef"] or {}).get("name", "")))
        if "secretKeyRef" in source:
            secrets.add(str((source["secretKeyRef"] or {}).get("name", "")))
    return cms, secrets


def decode_secret_data(data: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in data.items():
        try:
            out[key] = base64.b64decode(value, validate=True).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            continue
    return out


_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def pod_env(
    container: Mapping[str, Any],
    containers: Sequence[Mapping[str, Any]],
    facts: PodFacts,
    sources: Sources,
    node_allocatable: Mapping[str, str],
) -> dict[str, str]:
    """The variables the pod spec gives this container, in the kubelet's order and precedence:
    ``envFrom`` first (later sources win), then ``env`` in order, each value expanded against
    the variables defined before it."""
    env: dict[str, str] = {}
    for item in container.get("envFrom") or []:
        env.update(_env_from(item, facts, sources))
    for item in container.get("env") or []:
        name = str(item.get("name", ""))
        if item.get("valueFrom"):
            value = _value_from(item["valueFrom"], container, containers, facts, sources, node_allocatable)
            if value is None:
                continue
            env[name] = value
        else:
            env[name] = expand(str(item.get("value", "")), env)
    return env


def _env_from(item: Mapping[str, Any], facts: PodFacts, sources: Sources) -> dict[str, str]:
    prefix = str(item.get("prefix") or "")
    if "configMapRef" in item:
        ref, kind, found = item["configMapRef"] or {}, "configmap", sources.config_maps
    elif "secretRef" in item:
        ref, kind, found = item["secretRef"] or {}, "secret", sources.secrets
    else:
        return {}
    name = str(ref.get("name", ""))
    data = found.get(name)
    if data is None:
        if ref.get("optional"):
            return {}
        raise EnvError(f'{kind} "{name}" not found')
    # Keys that are not valid variable names are skipped, as the kubelet does (with an event).
    return {prefix + k: v for k, v in data.items() if _ENV_NAME.match(prefix + k)}


def _value_from(
    source: Mapping[str, Any],
    container: Mapping[str, Any],
    containers: Sequence[Mapping[str, Any]],
    facts: PodFacts,
    sources: Sources,
    node_allocatable: Mapping[str, str],
) -> str | None:
    if "fieldRef" in source:
        return field_value(str((source["fieldRef"] or {}).get("fieldPath", "")), facts)
    if "resourceFieldRef" in source:
        return resource_value(source["resourceFieldRef"] or {}, container, containers, node_allocatable)
    for key, kind, title, found in (
        ("configMapKeyRef", "configmap", "ConfigMap", sources.config_maps),
        ("secretKeyRef", "secret", "Secret", sources.secrets),
    ):
        if key in source:
            ref = source[key] or {}
            name, wanted = str(ref.get("name", "")), str(ref.get("key", ""))
            data = found.get(name)
            if data is None:
                if ref.get("optional"):
                    return None
                raise EnvError(f'{kind} "{name}" not found')
            if wanted not in data:
                if ref.get("optional"):
                    return None
                raise EnvError(f"couldn't find key {wanted} in {title} {facts.namespace}/{name}")
            return data[wanted]
    return None


_LABEL_PATH = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def field_value(path: str, facts: PodFacts) -> str:
    simple = {
        "metadata.name": facts.name,
        "metadata.namespace": facts.namespace,
        "metadata.uid": facts.uid,
        "spec.nodeName": facts.node_name,
        "spec.serviceAccountName": facts.service_account,
        "status.podIP": facts.pod_ip,
        "status.podIPs": facts.pod_ip,
        "status.hostIP": facts.host_ip,
        "status.hostIPs": facts.host_ip,
    }
    if path in simple:
        return simple[path]
    m = _LABEL_PATH.match(path)
    if m:
        table = facts.labels if m.group(1) == "labels" else facts.annotations
        return table.get(m.group(2), "")
    if path in ("metadata.labels", "metadata.annotations"):
        table = facts.labels if path == "metadata.labels" else facts.annotations
        return "\n".join(f'{k}="{v}"' for k, v in sorted(table.items()))
    raise EnvError(f"unsupported fieldPath: {path}")


def resource_value(
    ref: Mapping[str, Any],
    container: Mapping[str, Any],
    containers: Sequence[Mapping[str, Any]],
    node_allocatable: Mapping[str, str],
) -> str:
    """``resourceFieldRef``: the container's limit (node allocatable when unset) or request, divided
    by ``divisor`` and rounded up, as the kubelet's downward API does."""
    target = container
    wanted = ref.get("containerName")
    if wanted:
        target = next((c for c in containers if c.get("name") == wanted), container)
    kind, _, resource = str(ref.get("resource", "")).partition(".")
    if kind not in ("limits", "requests") or not resource:
        raise EnvError(f"unsupported resource: {ref.get('resource')}")
    resources = target.get("resources") or {}
    raw = (resources.get(kind) or {}).get(resource)
    if raw is None and kind == "requests":
        raw = (resources.get("limits") or {}).get(resource)
    if raw is None:
        raw = node_allocatable.get(resource, "0") if kind == "limits" else "0"
    divisor = parse_quantity(str(ref.get("divisor") or "1"))
    if divisor <= 0:
        raise EnvError(f"invalid divisor {ref.get('divisor')!r}")
    return str(math.ceil(parse_quantity(str(raw)) / divisor))


_SUFFIXES: Final[dict[str, Fraction]] = {
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[a-zA-Z]*)$")


def parse_quantity(text: str) -> Fraction:
    """A Kubernetes resource quantity (``500m``, ``1.5Gi``, ``1e3``) as an exact number."""
    m = _QUANTITY.match(text.strip())
    if not m:
        raise EnvError(f"invalid quantity {text!r}")
    number, suffix = m.groups()
    try:
        value = Fraction(number)
    except ValueError as e:
        raise EnvError(f"invalid quantity {text!r}") from e
    if suffix[:1] in ("e", "E") and suffix[1:].lstrip("+-").isdigit():
        return value * Fraction(10) ** int(suffix[1:])
    if suffix not in _SUFFIXES:
        raise EnvError(f"invalid quantity suffix in {text!r}")
    return value * _SUFFIXES[suffix]


def expand_command(words: Sequence[str], env: Mapping[str, str]) -> list[str]:
    return [expand(w, env) for w in words]


def process_env(
    base: Mapping[str, str],
    from_pod: Mapping[str, str],
    contract: Mapping[str, str],
    defaults: Mapping[str, str],
) -> dict[str, str]:
    """The process's environment: ``base`` (what the host must pass for the program to run), then
    ``defaults`` the pod may override (HOME, TMPDIR), the pod's own variables, and last the
    simulated kubelet's contract variables, which win as the device plugin's and kubelet's do."""
    env = {**base, **defaults, **from_pod, **contract}
    return env
