"""Metadata accessors: what they read, and that a missing or malformed field reads as empty.
The store key's edge cases are in test/unit/informer/test_store.py."""

from __future__ import annotations

from typing import Any

import pytest

from dpctl.kube import objects

POD: dict[str, Any] = {
    "metadata": {
        "name": "p",
        "namespace": "ns",
        "uid": "u1",
        "resourceVersion": "42",
        "labels": {"app": "x"},
        "annotations": {"a": "b"},
        "finalizers": ["f1", "f2"],
        "ownerReferences": [{"kind": "ReplicaSet", "name": "rs"}, "junk"],
        "deletionTimestamp": "2026-01-01T00:00:00Z",
    }
}


def test_accessors_read_the_metadata() -> None:
    assert (objects.name(POD), objects.namespace(POD), objects.uid(POD)) == ("p", "ns", "u1")
    assert objects.resource_version(POD) == "42"
    assert objects.labels(POD) == {"app": "x"}
    assert objects.annotations(POD) == {"a": "b"}
    assert objects.finalizers(POD) == ["f1", "f2"]
    assert objects.owner_references(POD) == [{"kind": "ReplicaSet", "name": "rs"}]
    assert objects.deletion_timestamp(POD) == "2026-01-01T00:00:00Z"
    assert objects.is_deleting(POD)
    assert objects.meta_namespace_key(POD) == "ns/p"


@pytest.mark.parametrize(
    "obj",
    [
        {},
        {"metadata": None},
        {"metadata": []},
        {"metadata": {"labels": [], "annotations": "x", "finalizers": {}}},
    ],
)
def test_missing_or_malformed_metadata_reads_as_empty(obj: dict[str, Any]) -> None:
    assert objects.name(obj) == objects.namespace(obj) == objects.uid(obj) == ""
    assert objects.resource_version(obj) == objects.deletion_timestamp(obj) == ""
    assert objects.labels(obj) == objects.annotations(obj) == {}
    assert objects.finalizers(obj) == []
    assert objects.owner_references(obj) == []
    assert not objects.is_deleting(obj)
