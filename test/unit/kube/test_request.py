"""What each verb sends, built without I/O: paths, queries, DeleteOptions, patch content types,
timeouts, and how watch lines decode."""

from __future__ import annotations

import json

import pytest

from dpctl.kube import CONFIGMAPS, LEASES, NODES, PODS, ApiError, Resource, request


def test_paths_of_core_and_group_resources() -> None:
    assert PODS.path() == "/api/v1/pods"
    assert PODS.path("ns") == "/api/v1/namespaces/ns/pods"
    assert PODS.path("ns", "p", "status") == "/api/v1/namespaces/ns/pods/p/status"
    assert CONFIGMAPS.path("ns", "gpu-map") == "/api/v1/namespaces/ns/configmaps/gpu-map"
    assert NODES.path(None, "n1") == "/api/v1/nodes/n1"
    assert NODES.path("ignored", "n1") == "/api/v1/nodes/n1"
    assert (
        LEASES.path("kube-node-lease", "n1")
        == "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1"
    )
    assert (
        Resource("apps/v1", "replicasets", namespaced=True).path("ns")
        == "/apis/apps/v1/namespaces/ns/replicasets"
    )
    assert PODS.path("ns", None, "status") == "/api/v1/namespaces/ns/pods", "a subresource needs a name"


def test_a_namespaced_object_needs_a_namespace() -> None:
    with pytest.raises(ValueError, match="pods is namespaced"):
        PODS.path(None, "p")


def test_list_query_pages_and_selects() -> None:
    assert request.list_query(None, None, None, None) == []
    assert request.list_query("app=x", "spec.nodeName=n1", 500, "tok") == [
        ("labelSelector", "app=x"),
        ("fieldSelector", "spec.nodeName=n1"),
        ("limit", "500"),
        ("continue", "tok"),
    ]
    assert request.list_query("", "", 0, "") == [("limit", "0")], "empty selectors and tokens are left out"


def test_watch_query_resumes_and_asks_for_bookmarks() -> None:
    assert request.watch_query(None, None, "", 300, allow_bookmarks=False) == [
        ("watch", "true"),
        ("timeoutSeconds", "300"),
    ]
    assert request.watch_query("a=b", None, "42", 60, allow_bookmarks=True) == [
        ("labelSelector", "a=b"),
        ("watch", "true"),
        ("timeoutSeconds", "60"),
        ("resourceVersion", "42"),
        ("allowWatchBookmarks", "true"),
    ]


def test_a_watch_has_no_total_timeout_only_a_dead_peer_one() -> None:
    timeout = request.watch_timeout(300)
    assert (timeout.total, timeout.connect, timeout.sock_read) == (None, request.DEFAULT_TIMEOUT_S, 330)


def test_write_query() -> None:
    assert request.write_query(None, False) == []
    assert request.write_query("dpctl", True, force=True) == [
        ("fieldManager", "dpctl"),
        ("dryRun", "All"),
        ("force", "true"),
    ]


def test_delete_options_carry_only_the_preconditions_given() -> None:
    bare = {"apiVersion": "v1", "kind": "DeleteOptions"}
    assert request.delete_options(None, None, None, None) == bare
    assert request.delete_options("u1", "", 0, "Background") == {
        **bare,
        "preconditions": {"uid": "u1"},
        "gracePeriodSeconds": 0,
        "propagationPolicy": "Background",
    }
    assert request.delete_options("u1", "7", None, None)["preconditions"] == {
        "uid": "u1",
        "resourceVersion": "7",
    }


def test_every_patch_type_has_its_content_type() -> None:
    assert dict(request.PATCH_CONTENT_TYPES) == {
        "strategic": "application/strategic-merge-patch+json",
        "merge": "application/merge-patch+json",
        "json": "application/json-patch+json",
        "apply": "application/apply-patch+yaml",
    }


def test_watch_lines_decode_to_events_and_skip_what_is_not_one() -> None:
    event = {"type": "ADDED", "object": {"metadata": {"name": "p"}}}
    assert request.watch_event(json.dumps(event).encode() + b"\n", "/api/v1/pods") == event
    for line in (b"not json\n", b"[1, 2]\n", b'"text"\n', b"\n"):
        assert request.watch_event(line, "/api/v1/pods") is None, line


def test_a_watch_error_event_raises_its_status() -> None:
    gone = {
        "type": "ERROR",
        "object": {"code": 410, "reason": "Expired", "message": "too old resource version"},
    }
    with pytest.raises(ApiError) as caught:
        request.watch_event(json.dumps(gone).encode(), "/api/v1/namespaces/ns/pods")
    err = caught.value
    assert (err.status, err.reason, err.message, err.gone) == (
        410,
        "Expired",
        "too old resource version",
        True,
    )
    assert str(err) == "WATCH /api/v1/namespaces/ns/pods: 410 Expired: too old resource version"
    with pytest.raises(ApiError) as bare:
        request.watch_event(b'{"type": "ERROR"}', "/p")
    assert (bare.value.status, bare.value.reason) == (500, "")
