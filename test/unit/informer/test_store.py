"""The indexed store: keys, index maintenance on every change, and relist replacement."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from dpctl.informer import Store, meta_namespace_key


def pod(name: str, rv: str = "1", node: str | None = None, gpus: Iterable[str] = ()) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv},
        "spec": {"nodeName": node, "gpus": list(gpus)},
    }


def by_node(obj: dict[str, Any]) -> list[str]:
    node = obj["spec"]["nodeName"]
    return [node] if node else []


def by_gpu(obj: dict[str, Any]) -> list[str]:
    return list(obj["spec"]["gpus"])


def make_store() -> Store:
    return Store({"node": by_node, "gpu": by_gpu})


def names(objs: list[dict[str, Any]]) -> list[str]:
    return sorted(o["metadata"]["name"] for o in objs)


def test_meta_namespace_key() -> None:
    assert meta_namespace_key(pod("a")) == "ns/a"
    assert meta_namespace_key({"metadata": {"name": "node-1"}}) == "node-1"
    with pytest.raises(ValueError, match=r"metadata\.name"):
        meta_namespace_key({"metadata": {"namespace": "ns"}})


def test_get_list_keys() -> None:
    s = make_store()
    a = pod("a")
    assert s.upsert(a) is None
    s.upsert(pod("b"))
    assert s.get("ns/a") is a
    assert s.get("ns/missing") is None
    assert sorted(s.keys()) == ["ns/a", "ns/b"]
    assert names(s.list()) == ["a", "b"]
    assert len(s) == 2


def test_index_lookup_and_values() -> None:
    s = make_store()
    s.upsert(pod("a", node="n1", gpus=["g0", "g1"]))
    s.upsert(pod("b", node="n1", gpus=["g2"]))
    s.upsert(pod("c"))
    assert names(s.by_index("node", "n1")) == ["a", "b"]
    assert names(s.by_index("gpu", "g1")) == ["a"]
    assert s.by_index("node", "n9") == []
    assert sorted(s.index_values("node")) == ["n1"]
    assert sorted(s.index_values("gpu")) == ["g0", "g1", "g2"]


def test_update_moves_index_entries() -> None:
    s = make_store()
    s.upsert(pod("a", node="n1", gpus=["g0"]))
    old = s.upsert(pod("a", rv="2", node="n2", gpus=["g0", "g3"]))
    assert old is not None and old["metadata"]["resourceVersion"] == "1"
    assert s.by_index("node", "n1") == []
    assert names(s.by_index("node", "n2")) == ["a"]
    assert sorted(s.index_values("node")) == ["n2"], "an emptied value is removed, not kept empty"
    assert sorted(s.index_values("gpu")) == ["g0", "g3"]


def test_delete_cleans_empty_index_sets() -> None:
    s = make_store()
    s.upsert(pod("a", node="n1", gpus=["g0"]))
    s.upsert(pod("b", node="n1"))
    deleted = s.delete("ns/a")
    assert deleted is not None and deleted["metadata"]["name"] == "a"
    assert s.index_values("gpu") == []
    assert names(s.by_index("node", "n1")) == ["b"]
    s.delete("ns/b")
    assert s.index_values("node") == []
    assert s.delete("ns/b") is None


def test_unknown_index_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="no index named 'nope'"):
        make_store().by_index("nope", "x")


def test_failing_indexer_leaves_the_object_out_of_that_index_only(caplog: pytest.LogCaptureFixture) -> None:
    def broken(obj: dict[str, Any]) -> list[str]:
        raise RuntimeError("bad object")

    s = Store({"broken": broken, "node": by_node})
    s.upsert(pod("a", node="n1"))
    assert s.get("ns/a") is not None
    assert s.index_values("broken") == []
    assert names(s.by_index("node", "n1")) == ["a"]
    assert "Index 'broken' failed on ns/a" in caplog.text


def test_indexer_returning_a_bare_string_files_one_value() -> None:
    s = Store({"node": lambda obj: obj["spec"]["nodeName"]})
    s.upsert(pod("a", node="n1"))
    assert s.index_values("node") == ["n1"]


def test_replace_reports_adds_updates_and_tombstones() -> None:
    s = make_store()
    a1, b1, c1 = pod("a", "1", node="n1"), pod("b", "1"), pod("c", "1", node="n1")
    for obj in (a1, b1, c1):
        s.upsert(obj)
    a2, d1 = pod("a", "2", node="n2"), pod("d", "1")
    changes = s.replace([a2, pod("b", "1"), d1])
    assert changes.added == [d1]
    assert changes.updated == [(a1, a2)]
    assert changes.deleted == [c1], "the vanished object comes back with its last known state"
    assert sorted(s.keys()) == ["ns/a", "ns/b", "ns/d"]
    assert s.get("ns/b") is b1, "an unchanged resourceVersion keeps the cached object"
    assert names(s.by_index("node", "n2")) == ["a"]
    assert s.index_values("node") == ["n2"]
