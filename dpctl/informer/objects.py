"""Raw-dict accessors the informer needs: an object's store key and its resourceVersion.

Owns the key format (client-go's ``MetaNamespaceKeyFunc``: ``namespace/name``, or ``name`` for
cluster-scoped objects). Does not own anything domain-specific about Pods or Nodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def meta_namespace_key(obj: Mapping[str, Any]) -> str:
    """``"namespace/name"``, or ``"name"`` for a cluster-scoped object."""
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not name:
        raise ValueError(f"object has no metadata.name: {str(obj)[:200]}")
    namespace = meta.get("namespace")
    return f"{namespace}/{name}" if namespace else str(name)


def resource_version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")
