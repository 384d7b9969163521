"""Check a Pod, given as plain JSON-like data, as Go's strict decoder and the dual-pods contract do.

Owns:

- `validate_pod`: every field must exist in core/v1 (names are case-sensitive) and hold the right
  JSON type; each problem is reported with its path, e.g. ``unknown field
  "spec.containers[0].imagee"``. The structure comes from the generated `kubernetes_asyncio`
  model classes (``openapi_types``/``attribute_map``, walked from ``V1Pod``), built once, lazily.
  Two things the generated classes do not say are added here: which string fields are
  Quantities (Go also accepts a JSON number there, and rejects a malformed string) and which
  ``object`` fields are IntOrString.
- `inference_server_port`: the contract's source of the runner's server port, the
  ``inference-server`` container's ``readinessProbe.httpGet.port``.

Does not: run the API server's semantic validation (required fields, name formats, ranges,
cross-field rules); those problems surface when the runner is created. ``null`` is accepted for
any field, as Go's decoder accepts it (it means "unset").
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from dpctl.api import INFERENCE_SERVER_CONTAINER

MAX_PROBLEMS: Final = 10

# (model class, JSON field) pairs whose `str` values are Kubernetes Quantities.
_QUANTITY_FIELDS: Final = frozenset(
    {
        ("V1ResourceRequirements", "limits"),
        ("V1ResourceRequirements", "requests"),
        ("V1VolumeResourceRequirements", "limits"),
        ("V1VolumeResourceRequirements", "requests"),
        ("V1PodSpec", "overhead"),
        ("V1PodStatus", "allocatedResources"),
        ("V1ContainerStatus", "allocatedResources"),
        ("V1NodeAllocatableResourceClaimStatus", "resources"),
        ("V1EmptyDirVolumeSource", "sizeLimit"),
        ("V1ResourceFieldSelector", "divisor"),
    }
)
# (model class, JSON field) pairs whose `object` type is IntOrString; other `object`s are free-form.
_INT_OR_STRING_FIELDS: Final = frozenset({("V1HTTPGetAction", "port"), ("V1TCPSocketAction", "port")})

_QUANTITY: Final = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[numkMGTPE])?")
_TIME: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
_PLAIN_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")


class PodValidationError(Exception):
    """The Pod is not acceptable; ``problems`` lists each one with its path."""

    def __init__(self, problems: list[str]) -> None:
        shown = problems[:MAX_PROBLEMS]
        more = len(problems) - len(shown)
        super().__init__("; ".join(shown) + (f"; and {more} more" if more else ""))
        self.problems = tuple(problems)


@dataclass(frozen=True)
class _Scalar:
    kind: str  # a key of _SCALAR_CHECKS


@dataclass(frozen=True)
class _ListOf:
    item: _Type


@dataclass(frozen=True)
class _MapOf:
    value: _Type


@dataclass(frozen=True)
class _Model:
    name: str


_Type = _Scalar | _ListOf | _MapOf | _Model


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


_SCALAR_CHECKS: Final[Mapping[str, tuple[str, Callable[[Any], bool]]]] = {
    "string": ("a string", lambda v: isinstance(v, str)),
    "integer": ("an integer", _is_int),
    "boolean": ("true or false", lambda v: isinstance(v, bool)),
    "number": ("a number", _is_number),
    "quantity": (
        'a quantity such as "2", "500m" or "9Gi"',
        lambda v: _is_number(v) or (isinstance(v, str) and _QUANTITY.fullmatch(v) is not None),
    ),
    "int-or-string": ("an integer or a string", lambda v: _is_int(v) or isinstance(v, str)),
    "time": (
        'an RFC 3339 time such as "2025-01-02T03:04:05Z"',
        lambda v: isinstance(v, str) and _TIME.fullmatch(v) is not None,
    ),
    "any": ("any JSON value", lambda v: True),
}
_PYTHON_SCALARS: Final = {
    "str": "string",
    "int": "integer",
    "bool": "boolean",
    "float": "number",
    "datetime": "time",
}


def validate_pod(pod: Any) -> None:
    """Raise PodValidationError unless ``pod`` decodes strictly as a core/v1 Pod."""
    problems: list[str] = []
    _check(pod, _Model("V1Pod"), "", _pod_models(), problems)
    if problems:
        raise PodValidationError(problems)


@functools.cache
def _pod_models() -> Mapping[str, Mapping[str, _Type]]:
    """Every model class reachable from V1Pod: JSON field name to type."""
    from kubernetes_asyncio.client import models  # heavy (~0.7 s), so only when first needed

    found: dict[str, dict[str, _Type]] = {}
    pending = ["V1Pod"]
    while pending:
        name = pending.pop()
        if name in found:
            continue
        model = getattr(models, name)
        fields: dict[str, _Type] = {}
        for attribute, type_text in model.openapi_types.items():
            field = model.attribute_map[attribute]
            fields[field] = _parse_type(type_text, name, field)
            pending.extend(_models_in(fields[field]))
        found[name] = fields
    return found


def _parse_type(text: str, model: str, field: str) -> _Type:
    if match := re.fullmatch(r"list\[(.+)\]", text):
        return _ListOf(_parse_type(match.group(1), model, field))
    if match := re.fullmatch(r"dict\(str, (.+)\)", text):
        return _MapOf(_parse_type(match.group(1), model, field))
    if text == "object":
        return _Scalar("int-or-string" if (model, field) in _INT_OR_STRING_FIELDS else "any")
    if text == "str" and (model, field) in _QUANTITY_FIELDS:
        return _Scalar("quantity")
    if text in _PYTHON_SCALARS:
        return _Scalar(_PYTHON_SCALARS[text])
    return _Model(text)


def _models_in(type_: _Type) -> list[str]:
    match type_:
        case _ListOf(item):
            return _models_in(item)
        case _MapOf(value):
            return _models_in(value)
        case _Model(name):
            return [name]
    return []


def _check(
    value: Any, type_: _Type, path: str, models: Mapping[str, Mapping[str, _Type]], problems: list[str]
) -> None:
    if value is None:
        return
    match type_:
        case _Model(name):
            if not isinstance(value, dict):
                problems.append(_wrong(path, "an object", value))
                return
            fields = models[name]
            for key, item in value.items():
                where = f"{path}.{key}" if path else str(key)
                if key not in fields:
                    problems.append(f'unknown field "{where}"')
                else:
                    _check(item, fields[key], where, models, problems)
        case _ListOf(item_type):
            if not isinstance(value, list):
                problems.append(_wrong(path, "a list", value))
                return
            for index, item in enumerate(value):
                _check(item, item_type, f"{path}[{index}]", models, problems)
        case _MapOf(value_type):
            if not isinstance(value, dict):
                problems.append(_wrong(path, "a map", value))
                return
            for key, item in value.items():
                shown = f"{path}.{key}" if _PLAIN_KEY.fullmatch(str(key)) else f'{path}["{key}"]'
                _check(item, value_type, shown, models, problems)
        case _Scalar(kind):
            expected, accepts = _SCALAR_CHECKS[kind]
            if not accepts(value):
                problems.append(_wrong(path, expected, value))


def _wrong(path: str, expected: str, value: Any) -> str:
    return f"{path or 'the Pod'}: expected {expected}, got {_json_kind(value)}"


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, str):
        return f'string "{value}"' if len(value) <= 40 else "a string"
    if isinstance(value, dict | list):
        return "an object" if isinstance(value, dict) else "a list"
    return f"a {type(value).__name__}"


def inference_server_port(pod: Mapping[str, Any]) -> int:
    """The port the controller reaches the inference server on; raise PodValidationError if unusable.

    Taken from the ``inference-server`` container's ``readinessProbe.httpGet.port``: a number
    from 1 to 65535, or ``http``/``HTTP`` meaning 80. Other named ports are not resolved.
    """
    spec = pod.get("spec")
    containers = spec.get("containers") if isinstance(spec, dict) else None
    for index, container in enumerate(containers if isinstance(containers, list) else []):
        if isinstance(container, dict) and container.get("name") == INFERENCE_SERVER_CONTAINER:
            return _probe_port(container, f"spec.containers[{index}]")
    raise PodValidationError([f'there is no container named "{INFERENCE_SERVER_CONTAINER}"'])


def _probe_port(container: Mapping[str, Any], path: str) -> int:
    where = f"{path}.readinessProbe.httpGet.port"
    probe = container.get("readinessProbe")
    http_get = probe.get("httpGet") if isinstance(probe, dict) else None
    port = http_get.get("port") if isinstance(http_get, dict) else None
    if port is None:
        raise PodValidationError(
            [f"{where} is missing; the controller reaches the {INFERENCE_SERVER_CONTAINER} on that port"]
        )
    if port in ("http", "HTTP"):
        return 80
    if isinstance(port, str):
        raise PodValidationError([f'{where}: named port "{port}" is not supported; give the number'])
    if not _is_int(port) or not 1 <= port <= 65535:
        raise PodValidationError([f"{where}: {port!r} is not a port number (1-65535)"])
    return int(port)
