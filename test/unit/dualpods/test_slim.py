"""slim_pod, the Pod informer's transform: dual pods stay whole but for managedFields; the LRU clock
survives; every other Pod keeps only its identity."""

from __future__ import annotations

import copy

from dpctl import api
from dpctl.dualpods import cache, podview, sleepers

from .fakes import requester, runner


def managed(*entries: tuple[str, str]) -> list[dict[str, object]]:
    return [
        {"manager": m, "operation": "Update", "time": t, "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}
        for m, t in entries
    ]


def test_a_runner_keeps_what_is_read_of_it() -> None:
    pod = runner(gpus=(1, 3))
    pod["metadata"]["managedFields"] = managed(
        ("kube-scheduler", "2026-01-01T00:00:01Z"),
        (api.FIELD_MANAGER, "2026-01-01T00:00:05Z"),
        (api.FIELD_MANAGER, "2026-01-01T00:09:00Z"),
        ("sim-kubelet", "2026-01-01T00:10:00Z"),
    )
    pod["spec"]["volumes"] = [{"name": "models", "emptyDir": {}}]
    pod["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "2"}}
    pod["spec"]["containers"].append({"name": "sidecar", "image": "busybox"})
    whole = copy.deepcopy(pod)
    slim = cache.slim_pod(pod)
    assert slim["metadata"]["managedFields"] == [
        {"manager": api.FIELD_MANAGER, "time": "2026-01-01T00:09:00Z"}
    ]
    readers = (
        podview.manager_time,
        podview.runner_node,
        podview.gpu_indices,
        podview.server_port,
        podview.bound_requester,
        podview.nominal_hash,
        podview.container_running,
        podview.container_started_at,
        podview.pod_ready,
        podview.in_trouble,
        podview.pod_ip,
    )
    assert [f(slim) for f in readers] == [f(whole) for f in readers]
    assert slim["status"] == whole["status"] and slim["metadata"]["labels"] == whole["metadata"]["labels"]
    assert "volumes" not in slim["spec"]
    assert [c["name"] for c in slim["spec"]["containers"]] == ["inference-server"]
    assert "resources" not in slim["spec"]["containers"][0]


def test_a_requester_keeps_its_whole_spec() -> None:
    pod = requester()
    whole = copy.deepcopy(pod)
    assert cache.slim_pod(pod)["spec"] == whole["spec"]


def test_without_a_write_of_ours_the_creation_time_is_the_clock() -> None:
    pod = requester()
    pod["metadata"]["managedFields"] = managed(("kube-controller-manager", "2026-01-01T00:00:00Z"))
    slim = cache.slim_pod(pod)
    assert "managedFields" not in slim["metadata"]
    assert podview.manager_time(slim) == slim["metadata"]["creationTimestamp"]
    assert podview.is_requester(slim) and slim["spec"] and slim["status"]


def test_the_sleeper_lru_order_is_the_same_after_slimming() -> None:
    pods = []
    for i, used in enumerate(["2026-01-01T00:03:00Z", "2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z"]):
        pod = runner(name=f"s{i}", uid=f"u{i}", bound_to=None)
        pod["metadata"]["managedFields"] = managed(
            ("sim-kubelet", "2026-01-01T00:09:00Z"), (api.FIELD_MANAGER, used)
        )
        pods.append(pod)
    before = [p["metadata"]["name"] for p in sleepers.victims(copy.deepcopy(pods), 0)]
    after = [p["metadata"]["name"] for p in sleepers.victims([cache.slim_pod(p) for p in pods], 0)]
    assert before == after == ["s1", "s2", "s0"]


def test_any_other_pod_keeps_only_its_identity() -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web",
            "namespace": "ns1",
            "uid": "u-web",
            "resourceVersion": "7",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "deletionTimestamp": "2026-01-01T00:01:00Z",
            "labels": {"app": "web"},
            "annotations": {"note": "x" * 1000},
            "managedFields": managed(("kubectl", "2026-01-01T00:00:00Z")),
        },
        "spec": {"containers": [{"name": "c", "image": "nginx"}]},
        "status": {"phase": "Running"},
    }
    slim = cache.slim_pod(pod)
    assert slim == {
        "metadata": {
            "name": "web",
            "namespace": "ns1",
            "uid": "u-web",
            "resourceVersion": "7",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "deletionTimestamp": "2026-01-01T00:01:00Z",
        }
    }
    assert not podview.is_requester(slim) and not podview.is_runner(slim)
