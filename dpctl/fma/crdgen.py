"""Generate the CRDs of ``fma.llm-d.ai`` from the types in `dpctl.fma.v1alpha1`.

Owns the translation of those pydantic models into structural OpenAPI v3 schemas, as
controller-gen makes upstream's from its Go types, so that the same objects are accepted and
rejected: required fields, ``minimum``/``maximum``, ``format``, list-map keys, and the Kubernetes
types (PodSpec, LabelSelector, Quantity) embedded in full from the API server's own OpenAPI
(``/openapi/v3/api/v1``), its ``$ref``s inlined and what a CRD schema may not hold dropped (patch
strategies, enums, group-version-kind tags; like controller-gen, only ``default``s other than
``{}`` stay).

`main` is the one impure part: it reads that OpenAPI document on stdin and writes one YAML file
per kind (``make crds``). An e2e test regenerates them from the local cluster's API server and
compares, so the files in the chart cannot drift from the types.
"""

from __future__ import annotations

import json
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Union

import yaml
from annotated_types import Ge, Le
from pydantic import BaseModel

from dpctl.fma.v1alpha1 import GROUP, KINDS, VERSION, Format, Kind, KubeSchema, ListMap, Status

Schema = dict[str, Any]

_REF_PREFIX: Final = "#/components/schemas/"
# Kubernetes types that are "an integer or a string" on the wire; CRDs spell that one way only.
_INT_OR_STRING: Final = frozenset(
    {"io.k8s.apimachinery.pkg.util.intstr.IntOrString", "io.k8s.apimachinery.pkg.api.resource.Quantity"}
)
_OBJECT_META: Final = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
# A Quantity's grammar (its OpenAPI description), as one expression: a signed decimal number,
# then a binary suffix, a decimal suffix or an exponent.
_NUMBER: Final = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
QUANTITY_PATTERN: Final = rf"^(\+|-)?{_NUMBER}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?{_NUMBER}))?$"
# What of a Kubernetes OpenAPI schema node a CRD's structural schema keeps.
_KEPT: Final = (
    "description",
    "type",
    "format",
    "required",
    "default",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
)
_FORMATS: Final = frozenset({"int32", "int64", "double", "byte", "date-time"})

_TYPE_META: Final[Schema] = {
    "apiVersion": {
        "description": "The versioned schema of this object; servers convert recognised schemas to the latest.",
        "type": "string",
    },
    "kind": {"description": "The REST resource this object represents, in CamelCase.", "type": "string"},
    "metadata": {"type": "object"},
}
# Upstream's LauncherPopulationPolicy does not require its spec (its Go field lacks the marker).
_SPEC_OPTIONAL: Final = frozenset({"LauncherPopulationPolicy"})


class CrdGenError(ValueError):
    """The types or the OpenAPI document cannot make a CRD (a missing or cyclic definition)."""


def crd(kind: Kind, components: Mapping[str, Any]) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind; ``components``: the OpenAPI ``components.schemas``."""
    gen = _Generator(components)
    root: Schema = {
        "description": kind.description,
        "properties": {**_TYPE_META, "spec": gen.model(kind.spec), "status": gen.model(Status)},
        "type": "object",
    }
    if kind.kind not in _SPEC_OPTIONAL:
        root["required"] = ["spec"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.crd_name},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "shortNames": [kind.short],
                "singular": kind.singular,
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "schema": {"openAPIV3Schema": root},
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                }
            ],
        },
    }


def file_name(kind: Kind) -> str:
    return f"{GROUP}_{kind.plural}.yaml"


def render(doc: Mapping[str, Any]) -> str:
    """A CRD as YAML, keys in order, long descriptions unwrapped: stable output to diff."""
    return "---\n" + yaml.safe_dump(dict(doc), sort_keys=False, width=2**16, allow_unicode=True)


class _Generator:
    def __init__(self, components: Mapping[str, Any]) -> None:
        self._components = components

    def model(self, model: type[BaseModel]) -> Schema:
        properties: Schema = {}
        required: list[str] = []
        for name, field in model.model_fields.items():
            wire = field.alias or name
            schema = self._annotation(field.annotation, field.metadata)
            if field.description:
                schema = _ordered({"description": field.description, **schema})
            properties[wire] = schema
            if field.is_required():
                required.append(wire)
        out: Schema = {"properties": dict(sorted(properties.items())), "type": "object"}
        if required:
            out["required"] = sorted(required)
        return _ordered(out)

    def _annotation(self, annotation: Any, metadata: list[Any]) -> Schema:
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin is typing.Annotated:
            return self._annotation(args[0], [*args[1:], *metadata])
        for m in metadata:
            if isinstance(m, KubeSchema):
                return self.kube(m.name)
        if origin in (Union, types.UnionType):
            present = [a for a in args if a is not type(None)]
            if len(present) != 1:
                raise CrdGenError(f"a union other than Optional has no CRD schema: {annotation}")
            return self._annotation(present[0], metadata)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return self.model(annotation)
        if origin is dict:
            return {"additionalProperties": self._annotation(args[1], []), "type": "object"}
        if origin is list:
            out: Schema = {"items": self._annotation(args[0], [])}
            for m in metadata:
                if isinstance(m, ListMap):
                    out["x-kubernetes-list-map-keys"] = list(m.keys)
                    out["x-kubernetes-list-type"] = "map"
            out["type"] = "array"
            return _ordered(out)
        return self._scalar(annotation, metadata)

    @staticmethod
    def _scalar(annotation: Any, metadata: list[Any]) -> Schema:
        names = {str: "string", bool: "boolean", int: "integer", float: "number"}
        if annotation not in names:
            raise CrdGenError(f"no CRD schema for the type {annotation!r}")
        out: Schema = {}
        for m in metadata:
            if isinstance(m, Format):
                out["format"] = m.name
            elif isinstance(m, Ge):
                out["minimum"] = m.ge
            elif isinstance(m, Le):
                out["maximum"] = m.le
        out["type"] = names[annotation]
        return _ordered(out)

    def kube(self, name: str, within: tuple[str, ...] = ()) -> Schema:
        """The structural schema of a Kubernetes type, by its OpenAPI name."""
        if name in _INT_OR_STRING:
            out: Schema = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
            if name.endswith(".Quantity"):
                out["pattern"] = QUANTITY_PATTERN
            out["x-kubernetes-int-or-string"] = True
            return _ordered(out)
        if name == _OBJECT_META:
            return {"type": "object"}  # the API server validates metadata itself, as in a Pod
        if name in within:
            raise CrdGenError(f"{name} contains itself ({' > '.join(within)}); a CRD schema cannot say that")
        node = self._components.get(name)
        if node is None:
            raise CrdGenError(f"the OpenAPI document has no definition of {name}")
        out = self._node(node, (*within, name))
        out.pop("description", None)  # the embedding field describes it
        return out

    def _node(self, node: Mapping[str, Any], within: tuple[str, ...]) -> Schema:
        refs = [n["$ref"] for n in node.get("allOf") or [] if "$ref" in n]
        if "$ref" in node:
            refs.append(node["$ref"])
        if refs:
            out = self.kube(_ref_name(refs[0]), within)
            for key in ("description", "default"):
                if key in node:
                    out[key] = node[key]
            return _ordered(_kept_default(out))
        out = {k: node[k] for k in _KEPT if k in node}
        if "required" in out:
            out["required"] = sorted(out["required"])
        if "properties" in node:
            required = set(node.get("required") or ())
            out["properties"] = {
                k: _without_zero_default(self._node(v, within), k in required)
                for k, v in node["properties"].items()
            }
        if "items" in node:
            out["items"] = _without_zero_default(self._node(node["items"], within), True)
        if isinstance(node.get("additionalProperties"), Mapping):
            out["additionalProperties"] = _without_zero_default(
                self._node(node["additionalProperties"], within), True
            )
        if out.get("format") not in _FORMATS:
            out.pop("format", None)
        return _ordered(_kept_default(out))


def _ref_name(ref: str) -> str:
    if not ref.startswith(_REF_PREFIX):
        raise CrdGenError(f"a $ref outside the document's schemas: {ref}")
    return ref.removeprefix(_REF_PREFIX)


def _kept_default(schema: Schema) -> Schema:
    # openapi-gen writes "default: {}" for every embedded struct; it says nothing and would make
    # the API server fill empty objects into stored LauncherConfigs.
    if schema.get("default") == {}:
        del schema["default"]
    return schema


def _without_zero_default(schema: Schema, implied: bool) -> Schema:
    # openapi-gen also writes the Go zero value as the default of every required field and of
    # list and map elements, where no +default marker set one; controller-gen does not, and the
    # value says nothing there. A zero default of an optional field is a marker's: it stays.
    if implied and schema.get("default") in ("", 0):  # False == 0
        del schema["default"]
    return schema


def _ordered(schema: Schema) -> Schema:
    return dict(sorted(schema.items()))


def main(argv: list[str] | None = None) -> int:
    """``python -m dpctl.fma.crdgen DIR < openapi-v3-api-v1.json``: write the CRDs into DIR."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(main.__doc__, file=sys.stderr)
        return 2
    out_dir = Path(args[0])
    components = json.load(sys.stdin)["components"]["schemas"]
    out_dir.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        (out_dir / file_name(kind)).write_text(render(crd(kind, components)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
