"""Kubernetes objects as the API sends them, and read-only accessors for their metadata.

Owns the one :data:`RawObj` type (an object decoded from JSON, as every verb of
:class:`~dpctl.kube.Kube` returns it) and the metadata accessors that the informer, the
controller and the simulator share, so that "what is this object's key, its resourceVersion,
is it being deleted" is answered once. Also owns the store key format (client-go's
``MetaNamespaceKeyFunc``). Knows nothing about any kind's spec or status, nor about dual pods.

The accessors take any ``Mapping`` (a :data:`RawObj` or a read-only view of one), never
mutate it, and read a missing or malformed field as empty, so that a half-written object from a
watch cannot raise where a caller only asks a question; :func:`meta_namespace_key` is the
exception, since an object without a name cannot be stored at all.
"""

# No ``from __future__ import annotations``: that import binds the name the accessor below needs.
from collections.abc import Mapping
from typing import Any

# Mutable: callers copy and edit what the API sent (slimming transforms, patches built from it).
RawObj = dict[str, Any]


def meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, Mapping) else {}


def name(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("name") or "")


def namespace(obj: Mapping[str, Any]) -> str:
    """The namespace, or ``""`` for a cluster-scoped object."""
    return str(meta(obj).get("namespace") or "")


def uid(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("uid") or "")


def resource_version(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("resourceVersion") or "")


def labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    found = meta(obj).get("labels")
    return found if isinstance(found, Mapping) else {}


def annotations(obj: Mapping[str, Any]) -> Mapping[str, str]:
    found = meta(obj).get("annotations")
    return found if isinstance(found, Mapping) else {}


def finalizers(obj: Mapping[str, Any]) -> list[str]:
    found = meta(obj).get("finalizers")
    return [str(f) for f in found] if isinstance(found, list) else []


def owner_references(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found = meta(obj).get("ownerReferences")
    return [ref for ref in found if isinstance(ref, Mapping)] if isinstance(found, list) else []


def deletion_timestamp(obj: Mapping[str, Any]) -> str:
    """When deletion was requested (RFC 3339), or ``""`` while the object is not being deleted."""
    return str(meta(obj).get("deletionTimestamp") or "")


def is_deleting(obj: Mapping[str, Any]) -> bool:
    """Deletion was requested: only finalizers (or a grace period) keep the object around."""
    return bool(deletion_timestamp(obj))


def meta_namespace_key(obj: Mapping[str, Any]) -> str:
    """``"namespace/name"``, or ``"name"`` for a cluster-scoped object."""
    key = name(obj)
    if not key:
        raise ValueError(f"object has no metadata.name: {str(obj)[:200]}")
    ns = namespace(obj)
    return f"{ns}/{key}" if ns else key
