"""hack/ensure-nodes-mapped.sh against a fake kubectl (fake_kubectl.py beside this file): which
Nodes it maps, the gpu-map entries it writes (created or patched), the Pod it runs, and how it
survives per-Node failures, time-outs and signals without leaving Pods behind.

The same script runs unchanged against the local cluster in the e2e tests.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import wait_for

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "hack" / "ensure-nodes-mapped.sh"
FAKE = Path(__file__).resolve().parent / "fake_kubectl.py"

A_GPUS = "0, GPU-aaaa0000-0000-0000-0000-000000000000\n1, GPU-aaaa0000-0000-0000-0000-000000000001\n"
B_GPUS = "0, GPU-bbbb0000-0000-0000-0000-000000000000\n"


def gpu_node(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "labels": {"nvidia.com/gpu.present": "true"},
        "allocatable": {"nvidia.com/gpu": "2"},
        **extra,
    }


class Fake:
    def __init__(self, tmp: Path, state: dict[str, Any]) -> None:
        self.path = tmp / "state.json"
        self.path.write_text(json.dumps({"namespace": "team-a", "configmap": None, **state}))
        self.kubectl = tmp / "kubectl"
        self.kubectl.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKE} "$@"\n')
        self.kubectl.chmod(self.kubectl.stat().st_mode | stat.S_IXUSR)
        self.env = {**os.environ, "KUBECTL": str(self.kubectl), "FAKE_KUBECTL_STATE": str(self.path)}

    @property
    def state(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.path.read_text())
        return doc

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), *args],
            check=False,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def gpu_map(self) -> dict[str, dict[str, int]]:
        cm = self.state["configmap"]
        assert cm is not None, "gpu-map was not created"
        return {node: json.loads(value) for node, value in cm["data"].items()}

    def pods_by_node(self) -> dict[str, str]:
        return {m["spec"]["nodeName"]: name for name, m in self.state.get("pods", {}).items()}

    def assert_no_pod_left(self) -> None:
        assert sorted(self.state.get("pods", {})) == sorted(self.state.get("deleted", []))


def test_maps_every_schedulable_gpu_node_and_creates_the_configmap(tmp_path: Path) -> None:
    fake = Fake(
        tmp_path,
        {
            "nodes": [
                gpu_node("node-a"),
                # GPUs known only from allocatable (no GPU feature discovery labels).
                {"name": "node-b", "labels": {}, "allocatable": {"nvidia.com/gpu": "1"}},
                {"name": "cpu-only", "labels": {}, "allocatable": {"cpu": "8"}},
                {"name": "zero-gpus", "labels": {}, "allocatable": {"nvidia.com/gpu": "0"}},
                gpu_node("cordoned", unschedulable=True),
            ],
            "behaviour": {
                "node-a": {"phase": "Succeeded", "polls": 2, "log": A_GPUS},
                "node-b": {"phase": "Succeeded", "log": B_GPUS},
            },
        },
    )
    result = fake.run()
    assert result.returncode == 0, result.stderr
    assert fake.gpu_map() == {
        "node-a": {
            "GPU-aaaa0000-0000-0000-0000-000000000000": 0,
            "GPU-aaaa0000-0000-0000-0000-000000000001": 1,
        },
        "node-b": {"GPU-bbbb0000-0000-0000-0000-000000000000": 0},
    }
    assert set(fake.pods_by_node()) == {"node-a", "node-b"}
    fake.assert_no_pod_left()
    assert "skipping cordoned: cordoned" in result.stderr
    assert "mapped 2 of 2 Node(s)" in result.stderr
    assert "team-a" in result.stderr


def test_the_pod_asks_for_no_gpu_and_sees_them_all(tmp_path: Path) -> None:
    fake = Fake(
        tmp_path,
        {"nodes": [gpu_node("node-a")], "behaviour": {"node-a": {"phase": "Succeeded", "log": A_GPUS}}},
    )
    assert fake.run().returncode == 0
    (pod,) = fake.state["pods"].values()
    spec = pod["spec"]
    assert spec["nodeName"] == "node-a"
    assert spec["restartPolicy"] == "Never"
    (c,) = spec["containers"]
    assert c["image"] == "nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04"
    assert c["command"] == ["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"]
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"} in c["env"]
    assert "nvidia.com/gpu" not in json.dumps(c.get("resources", {}))
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "ensure-nodes-mapped"


def test_image_can_be_overridden(tmp_path: Path) -> None:
    fake = Fake(
        tmp_path,
        {"nodes": [gpu_node("node-a")], "behaviour": {"node-a": {"phase": "Succeeded", "log": A_GPUS}}},
    )
    assert fake.run(GPU_MAP_IMAGE="registry.example/cuda:12").returncode == 0
    (pod,) = fake.state["pods"].values()
    assert pod["spec"]["containers"][0]["image"] == "registry.example/cuda:12"


def test_nodes_already_mapped_are_skipped_and_the_map_is_patched(tmp_path: Path) -> None:
    old = '{"GPU-old": 0}'
    fake = Fake(
        tmp_path,
        {
            "nodes": [gpu_node("node-a"), gpu_node("node-b")],
            "configmap": {"data": {"node-a": old}},
            "behaviour": {"node-b": {"phase": "Succeeded", "log": B_GPUS}},
        },
    )
    result = fake.run()
    assert result.returncode == 0, result.stderr
    assert fake.state["configmap"]["data"]["node-a"] == old
    assert fake.gpu_map()["node-b"] == {"GPU-bbbb0000-0000-0000-0000-000000000000": 0}
    assert set(fake.pods_by_node()) == {"node-b"}
    assert "skipping node-a: already in gpu-map" in result.stderr
    assert not any(call[:2] == ["create", "configmap"] for call in fake.state["calls"])


def test_nothing_to_do_creates_nothing(tmp_path: Path) -> None:
    fake = Fake(tmp_path, {"nodes": [{"name": "cpu", "labels": {}, "allocatable": {}}]})
    result = fake.run()
    assert result.returncode == 0, result.stderr
    assert fake.state["configmap"] is None
    assert not fake.state.get("pods")


def test_a_failing_node_is_reported_and_the_others_are_mapped(tmp_path: Path) -> None:
    fake = Fake(
        tmp_path,
        {
            "nodes": [gpu_node("node-a"), gpu_node("node-b"), gpu_node("node-c"), gpu_node("node-d")],
            "fail_create": ["node-d"],
            "behaviour": {
                "node-a": {"phase": "Failed", "log": "No devices were found\n"},
                "node-b": {"phase": "Succeeded", "log": B_GPUS},
                "node-c": {"phase": "Succeeded", "log": "NVIDIA-SMI has failed\n"},
            },
        },
    )
    result = fake.run()
    assert result.returncode == 0, result.stderr
    assert fake.gpu_map() == {"node-b": {"GPU-bbbb0000-0000-0000-0000-000000000000": 0}}
    assert "No devices were found" in result.stderr
    assert "node-c: nvidia-smi listed no GPUs" in result.stderr
    assert "node-d: cannot create the nvidia-smi Pod" in result.stderr
    assert "mapped 1 of 4 Node(s); failed:" in result.stderr
    fake.assert_no_pod_left()


def test_exits_non_zero_when_nothing_could_be_mapped(tmp_path: Path) -> None:
    fake = Fake(
        tmp_path,
        {"nodes": [gpu_node("node-a")], "behaviour": {"node-a": {"phase": "Failed", "log": "boom\n"}}},
    )
    result = fake.run()
    assert result.returncode == 1
    assert fake.state["configmap"] is None
    fake.assert_no_pod_left()


def test_a_pod_that_never_finishes_times_out_and_is_deleted(tmp_path: Path) -> None:
    fake = Fake(
        tmp_path,
        {
            "nodes": [gpu_node("node-a"), gpu_node("node-b")],
            "behaviour": {
                "node-a": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"},
                "node-b": {"phase": "Succeeded", "log": B_GPUS},
            },
        },
    )
    result = fake.run(GPU_MAP_TIMEOUT="1")
    assert result.returncode == 0, result.stderr
    assert "node-a: Pod" in result.stderr and "did not finish within 1s" in result.stderr
    assert "ImagePullBackOff" in result.stderr
    assert list(fake.gpu_map()) == ["node-b"]
    fake.assert_no_pod_left()


def test_a_pod_that_cannot_start_fails_fast(tmp_path: Path) -> None:
    fake = Fake(
        tmp_path,
        {
            "nodes": [gpu_node("node-a")],
            "behaviour": {"node-a": {"reason": "InvalidImageName", "message": "bad ref"}},
        },
    )
    result = fake.run(GPU_MAP_TIMEOUT="120")
    assert result.returncode == 1
    assert "cannot start: InvalidImageName: bad ref" in result.stderr
    fake.assert_no_pod_left()


def test_odd_output_lines_are_ignored(tmp_path: Path) -> None:
    log = "Warning: something\r\n0, GPU-aaaa\r\n1, GPU-bbbb\r\n\nnot, a, gpu\n0, GPU-aaaa\n"
    fake = Fake(
        tmp_path,
        {"nodes": [gpu_node("node-a")], "behaviour": {"node-a": {"phase": "Succeeded", "log": log}}},
    )
    result = fake.run()
    assert result.returncode == 0, result.stderr
    assert fake.gpu_map() == {"node-a": {"GPU-aaaa": 0, "GPU-bbbb": 1}}
    assert "ignored line: Warning: something" in result.stderr


def test_sigterm_deletes_the_pods_it_created(tmp_path: Path) -> None:
    fake = Fake(
        tmp_path,
        {"nodes": [gpu_node("node-a"), gpu_node("node-b")], "behaviour": {}},  # Pending forever
    )
    proc = subprocess.Popen(
        [str(SCRIPT)], env=fake.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: len(fake.state.get("pods", {})) == 2, 30, "both nvidia-smi Pods to be created")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    fake.assert_no_pod_left()


@pytest.mark.parametrize("args", [["extra"], ["-n", "x"]])
def test_takes_no_arguments(tmp_path: Path, args: list[str]) -> None:
    fake = Fake(tmp_path, {"nodes": []})
    result = fake.run(*args)
    assert result.returncode == 2
    assert "takes no arguments" in result.stderr


def test_help(tmp_path: Path) -> None:
    result = Fake(tmp_path, {"nodes": []}).run("--help")
    assert result.returncode == 0
    assert "Usage: hack/ensure-nodes-mapped.sh" in result.stdout
