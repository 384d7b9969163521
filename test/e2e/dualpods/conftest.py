"""Fixtures for running the dual-pods controller as a plain process against the cluster under test.

``controller`` starts ``dpctl controller`` in the test's namespace (its log in a file the test
can grep), ``gpu_map`` fills the namespace's ``gpu-map`` from the simulated nodes' GPU tables,
``ledger`` opens the emulator's GPU ledger. On teardown the controller is stopped and any
dual-pods finalizer left behind is removed so the namespace can go.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

from dpctl import api
from dpsim.emulator.gputable import load_gpu_table
from dpsim.emulator.ledger import Ledger
from dpsim.simenv import ledger_path
from e2e.recipe import Kubectl

DPCTL = Path(sys.executable).with_name("dpctl")


@dataclass
class ControllerProcess:
    namespace: str
    log_path: Path
    args: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    previous_logs: list[str] = field(default_factory=list)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.args,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self.proc = None
        return code

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def count(self, message: str) -> int:
        return sum(1 for line in self.log().splitlines() if message in line)


@pytest.fixture
def kubectl(cluster: Any, namespace: str) -> Kubectl:
    return Kubectl(cluster.kubectl, str(cluster.kubeconfig), namespace)


@pytest.fixture
def gpu_map(cluster: Any, kubectl: Kubectl) -> dict[str, dict[str, int]]:
    """``gpu-map`` from the simulated nodes' GPU tables (the recipe's script is tested on its own)."""
    state_dir = cluster.state_dir
    if state_dir is None:
        pytest.skip(
            "filling gpu-map from GPU tables needs the local cluster; use hack/ensure-nodes-mapped.sh"
        )
    nodes = [n["metadata"]["name"] for n in kubectl.get_json("nodes")["items"]]
    data = {n: {g.uuid: g.index for g in load_gpu_table(Path(state_dir), n).gpus} for n in nodes}
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": api.GPU_MAP_NAME},
        "data": {n: json.dumps(m) for n, m in data.items()},
    }
    kubectl.apply(cm)
    return data


@pytest.fixture
def ledger(cluster: Any) -> Ledger:
    state_dir = cluster.state_dir
    if state_dir is None:
        pytest.skip("the GPU ledger exists only on the local cluster (the simulated kubelet keeps it)")
    return Ledger(ledger_path(Path(state_dir)))


@pytest.fixture
def start_controller(
    cluster: Any, namespace: str, kubectl: Kubectl, tmp_path: Path
) -> Iterator[Callable[..., ControllerProcess]]:
    started: list[ControllerProcess] = []

    def start(sleeper_limit: int = 2, *extra: str) -> ControllerProcess:
        args = [
            str(DPCTL),
            "controller",
            "-n",
            namespace,
            "--kubeconfig",
            str(cluster.kubeconfig),
            f"--sleeper-limit={sleeper_limit}",
            "--metrics-port=0",
            "-v",
            "5",
            *extra,
        ]
        env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
        proc = ControllerProcess(namespace, tmp_path / f"controller-{len(started)}.log", args, env)
        proc.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
    release_finalizers(kubectl)


def release_finalizers(kubectl: Kubectl) -> None:
    """Leave nothing Terminating behind: the controller that owned these finalizers is gone."""
    for pod in kubectl.pods():
        if any(f.startswith("dual-pods.llm-d.ai/") for f in pod["metadata"].get("finalizers") or []):
            kubectl.run(
                "patch",
                "pod",
                pod["metadata"]["name"],
                "--type=merge",
                "-p",
                '{"metadata":{"finalizers":null}}',
                check=False,
            )


_release_finalizers = release_finalizers  # the name other suites import


class HasLog(Protocol):
    """A controller whose log a test can read: a process here, the chart's Deployment elsewhere."""

    def log(self) -> str: ...


def dump(kubectl: Kubectl, controller: HasLog | None, tail: int = 60) -> str:
    """What a person needs when a case fails: the dual pods (with the dual and sleeping labels),
    their status and accelerators annotations, finalizers and deletion state, the ReplicaSets,
    the Nodes (cordons), the namespace's warning Events and the controller's log tail."""
    lines = [
        kubectl.run("get", "pods", "-o", "wide", "-L", f"{api.DUAL_LABEL},{api.SLEEPING_LABEL}", check=False)
    ]
    for pod in kubectl.pods():
        ann = pod["metadata"].get("annotations") or {}
        lines.append(
            f"{pod['metadata']['name']}: status={ann.get(api.ORIGINAL.status)} "
            f"requester={ann.get(api.REQUESTER_ANNOTATION)} accelerators={ann.get(api.ACCELERATORS_ANNOTATION)} "
            f"finalizers={pod['metadata'].get('finalizers')} "
            f"deleting={bool(pod['metadata'].get('deletionTimestamp'))}"
        )
    lines.append(kubectl.run("get", "replicasets", "-o", "wide", check=False))
    lines.append(kubectl.run("get", "nodes", "-L", api.HOSTNAME_LABEL, check=False))
    lines.append("--- warning events ---")
    lines.append(
        kubectl.run(
            "get",
            "events",
            # The local cluster's loopback pod IPs cannot be Endpoints: noise, not news.
            "--field-selector=type=Warning,reason!=FailedToCreateEndpoint,reason!=FailedToUpdateEndpoint,"
            "reason!=FailedToUpdateEndpointSlices",
            "--sort-by=.lastTimestamp",
            check=False,
        )
    )
    if controller is not None:
        lines.append("--- controller log (tail) ---")
        try:
            lines.extend(controller.log().splitlines()[-tail:])
        except Exception as e:  # a diagnostic must never hide the failure it explains
            lines.append(f"(cannot read the controller log: {e})")
    return "\n".join(lines)
