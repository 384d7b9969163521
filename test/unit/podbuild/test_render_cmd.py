"""`dpctl render-runner`, in process and once as the real command."""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from dpctl.podbuild import build_runner, render_cmd

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parents[3]

REPLICA_SET = """\
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: my-request
  namespace: team-a
spec:
  replicas: 1
  selector: {matchLabels: {app: dp-example}}
  template:
    metadata:
      labels: {app: dp-example}
      annotations:
        dual-pod.llm-d.ai/server-patch: |
          metadata:
            labels: {app: null}
          spec:
            containers:
            - name: inference-server
              image: vllm
              readinessProbe: {httpGet: {port: 8000}}
            volumes:
            - name: local
              persistentVolumeClaim: {claimName: 'vcp-local-{{ .NodeName }}'}
    spec:
      containers:
      - name: inference-server
        image: stub
"""


def run(argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    render_cmd.add_arguments(parser)
    args = parser.parse_args(argv)
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdin", io.StringIO(stdin))
        patch.setattr(sys, "stdout", out)
        patch.setattr(sys, "stderr", err)
        code = render_cmd.run(args)
    return code, out.getvalue(), err.getvalue()


def test_pod_manifest_prints_the_runner(data: Callable[[str], Any]) -> None:
    code, out, err = run(
        [
            "-f",
            str(DATA / "requester-staging.yaml"),
            "--node",
            "gpu-node-1",
            "--gpus",
            "3",
            "--gpu-uuids",
            "GPU-4f1e2d3c-0000-1111-2222-333344445555",
        ]
    )
    assert (code, err) == (0, "")
    assert yaml.safe_load(out) == data("runner-staging.yaml")


def test_replica_set_uses_its_template_and_placeholders() -> None:
    code, out, err = run(
        ["-f", "-", "--node", "n1", "--gpus", "1,0", "--gpu-uuids", "GPU-b,GPU-a"], REPLICA_SET
    )
    assert (code, err) == (0, "")
    pod = yaml.safe_load(out)
    assert pod["metadata"]["name"] == "my-request-xxxxx-server"
    assert pod["metadata"]["namespace"] == "team-a"
    assert pod["metadata"]["labels"] == {
        "dual-pods.llm-d.ai/dual": "my-request-xxxxx",
        "dual-pods.llm-d.ai/sleeping": "false",
    }
    assert (
        pod["metadata"]["annotations"]["dual-pods.llm-d.ai/requester"]
        == f"{render_cmd.PLACEHOLDER_UID} my-request-xxxxx"
    )
    assert pod["metadata"]["annotations"]["dual-pods.llm-d.ai/accelerators"] == "GPU-a,GPU-b"
    assert pod["spec"]["volumes"] == [
        {"name": "local", "persistentVolumeClaim": {"claimName": "vcp-local-n1"}}
    ]
    assert pod["spec"]["containers"][0]["env"][0] == {"name": "CUDA_VISIBLE_DEVICES", "value": "0,1"}


def test_deployment_and_generate_name_pods() -> None:
    deployment = REPLICA_SET.replace("kind: ReplicaSet", "kind: Deployment")
    assert run(["-f", "-", "--node", "n1"], deployment)[0] == 0
    pod = yaml.safe_load(REPLICA_SET)["spec"]["template"] | {"apiVersion": "v1", "kind": "Pod"}
    pod["metadata"]["generateName"] = "req-"
    code, out, _ = run(["-f", "-", "--node", "n1"], yaml.safe_dump(pod))
    assert code == 0
    assert yaml.safe_load(out)["metadata"]["name"] == "req-xxxxx-server"


def test_build_errors_are_printed_as_the_status_annotation_would_say() -> None:
    broken = REPLICA_SET.replace("image: vllm", "imagee: vllm")
    code, out, err = run(["-f", "-", "--node", "n1"], broken)
    assert (code, out) == (1, "")
    assert err == (
        'dual-pod.llm-d.ai/server-patch: the patched Pod is invalid: unknown field "spec.containers[0].imagee"\n'
    )


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [
        pytest.param(
            ["-f", "/no/such/file"], "", "/no/such/file: No such file or directory", id="missing-file"
        ),
        pytest.param(["-f", "-"], "a: [", "-: line 1: ", id="bad-yaml"),
        pytest.param(["-f", "-"], "- 1", "-: expected a Kubernetes object", id="not-an-object"),
        pytest.param(["-f", "-"], "kind: Service\nspec: {}", "got kind 'Service'", id="no-template"),
        pytest.param(
            ["-f", "-", "--gpus", "0,1", "--gpu-uuids", "A"], "", "one UUID for each index", id="uuid-count"
        ),
    ],
)
def test_unreadable_input_exits_2(argv: list[str], stdin: str, message: str) -> None:
    code, out, err = run([*argv, "--node", "n1"], stdin)
    assert (code, out) == (2, "")
    assert err.startswith("dpctl render-runner: ")
    assert message in err


@pytest.mark.parametrize("gpus", ["x", "0,-1", "1,1", ""])
def test_bad_gpu_indices_are_usage_errors(gpus: str) -> None:
    with pytest.raises(SystemExit):
        run(["-f", "-", "--node", "n1", "--gpus", gpus])


def test_the_dpctl_command(data: Callable[[str], Any]) -> None:
    requester = data("requester-simple.yaml")
    good = subprocess.run(
        [str(REPO / ".venv/bin/dpctl"), "render-runner", "-f", "-", "--node", "gpu-node-1", "--gpus", "3"],
        input=yaml.safe_dump(requester),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (good.returncode, good.stderr) == (0, "")
    assert yaml.safe_load(good.stdout) == build_runner(requester, "gpu-node-1", [3], []).pod
    missing = subprocess.run(
        [str(REPO / ".venv/bin/dpctl"), "render-runner", "-f", "-", "--node", "n"],
        input="kind: Pod\nmetadata: {name: p, uid: u}\nspec: {containers: [{name: inference-server}]}\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr == (
        "the Pod must carry exactly one of the annotations"
        " dual-pod.llm-d.ai/server-patch and dual-pods.llm-d.ai/server-patch\n"
    )
