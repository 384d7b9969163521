"""Node objects, heartbeats and API credentials: the parts that are pure."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import yaml

from dpsim.kubelet.leases import lease_body, micro_time, renew_interval
from dpsim.kubelet.nodes import (
    NodeShape,
    _ConditionTimes,
    node_conditions,
    node_labels,
    node_status,
)
from dpsim.kubelet.tokens import ClusterAccess, kubeconfig_text, wants_token

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:00:10Z"


def test_micro_time_always_has_six_digits_and_a_zone() -> None:
    assert micro_time(dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)) == "2026-01-02T03:04:05.000000Z"
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert micro_time(dt.datetime(2026, 1, 2, 3, 4, 5, 42, tzinfo=plus_two)) == "2026-01-02T01:04:05.000042Z"


def test_lease_is_owned_by_its_node_and_renewed_about_every_ten_seconds() -> None:
    body = lease_body("node-1", "uid-1", "2026-01-02T03:04:05.000000Z")
    assert body["metadata"]["namespace"] == "kube-node-lease"
    assert body["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Node", "name": "node-1", "uid": "uid-1"}
    ]
    assert body["spec"] == {
        "holderIdentity": "node-1",
        "leaseDurationSeconds": 40,
        "renewTime": "2026-01-02T03:04:05.000000Z",
    }
    assert all(10.0 <= renew_interval() <= 10.4 for _ in range(50))


def test_node_status_offers_gpus_and_says_where_the_kubelet_is() -> None:
    shape = NodeShape(gpus=4, gpu_product="NVIDIA-L40S")
    times = _ConditionTimes({})
    status = node_status(
        "node-1", "127.64.0.1", 10250, shape, "v1.36.3", "boot", node_conditions(True, T0, times)
    )
    assert status["capacity"]["nvidia.com/gpu"] == "4"
    assert status["allocatable"] == status["capacity"]
    assert status["addresses"] == [
        {"type": "InternalIP", "address": "127.64.0.1"},
        {"type": "Hostname", "address": "node-1"},
    ]
    assert status["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 10250}}
    assert status["nodeInfo"]["kubeletVersion"] == "v1.36.3"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert set(conditions) == {"Ready", "MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable"}
    assert conditions["Ready"]["status"] == "True"
    labels = node_labels("node-1", shape, shape.gpu_table("node-1"))
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-L40S"
    assert labels["nvidia.com/gpu.count"] == "4"
    assert labels["kubernetes.io/hostname"] == "node-1"
    assert shape.gpu_table("node-1").name == "NVIDIA L40S"


def test_condition_transition_times_move_only_on_change_while_heartbeats_move() -> None:
    times = _ConditionTimes({})
    first = {c["type"]: c for c in node_conditions(True, T0, times)}
    second = {c["type"]: c for c in node_conditions(True, T1, times)}
    assert second["Ready"]["lastHeartbeatTime"] == T1
    assert second["Ready"]["lastTransitionTime"] == first["Ready"]["lastTransitionTime"] == T0
    down = {c["type"]: c for c in node_conditions(False, T1, times)}
    assert (down["Ready"]["status"], down["Ready"]["lastTransitionTime"]) == ("False", T1)
    assert down["MemoryPressure"]["lastTransitionTime"] == T0


def test_who_gets_a_token() -> None:
    projected = {
        "volumes": [
            {
                "name": "kube-api-access-x",
                "projected": {
                    "sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]
                },
            }
        ]
    }
    assert wants_token(projected) == (True, 3607, None)
    assert wants_token({}) == (True, 3607, None)
    assert wants_token({"automountServiceAccountToken": False})[0] is False


def test_pod_kubeconfig_reads_the_token_file_and_trusts_the_cluster_ca(tmp_path: Path) -> None:
    kc = tmp_path / "admin.kubeconfig"
    (tmp_path / "ca.crt").write_bytes(b"PEM")
    kc.write_text(
        yaml.safe_dump(
            {
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {"server": "https://127.0.0.1:6443", "certificate-authority": "ca.crt"},
                    }
                ],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    access = ClusterAccess.from_kubeconfig(kc)
    assert (access.server, access.ca_pem) == ("https://127.0.0.1:6443", b"PEM")
    inline = tmp_path / "inline.kubeconfig"
    inline.write_text(
        yaml.safe_dump(
            {
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": "s",
                            "certificate-authority-data": base64.b64encode(b"X").decode(),
                        },
                    }
                ]
            }
        )
    )
    assert ClusterAccess.from_kubeconfig(inline).ca_pem == b"X"
    doc = yaml.safe_load(kubeconfig_text("https://s", tmp_path / "ca", False, tmp_path / "token", "ns"))
    assert doc["users"][0]["user"] == {"tokenFile": str(tmp_path / "token")}
    assert doc["contexts"][0]["context"]["namespace"] == "ns"
    assert doc["clusters"][0]["cluster"] == {
        "server": "https://s",
        "certificate-authority": str(tmp_path / "ca"),
    }
