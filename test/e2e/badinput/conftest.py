"""Module-wide fixtures of the bad-input table: one namespace, one ``gpu-map``, one controller (a
plain process with a metrics port, so its API and HTTP calls can be counted) and one healthy pair
that every row must leave alone.

The rows run one after another against the same controller, which is the point: a bad requester
must not disturb anything else the controller does, and a controller that crashed, looped or
lost the healthy pair on one row fails that row.
"""

from __future__ import annotations

import json
import os
import re
import socket
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dpctl import api
from dpctl.dualpods import podview
from dpctl.fma.v1alpha1 import API_VERSION, KINDS
from dpsim.emulator.gputable import load_gpu_table
from dpsim.emulator.ledger import Ledger
from dpsim.simenv import ledger_path
from e2e.deploy.chart import CHART
from e2e.dualpods.conftest import DPCTL, ControllerProcess, _release_finalizers
from e2e.recipe import Kubectl, ServerPatch, mkrs
from helpers import wait_for

HEALTHY_NODE = "node-1"
ROW_NODE = "node-2"
GOOD_PATCH = ServerPatch(startup_delay_s=1.0)
TIMEOUT = 120

_COUNT = re.compile(r"^(dpctl_(?:api|http)_request_duration_seconds)_count\{([^}]*)\} ([0-9.e+]+)$")


def requester_pod(
    name: str,
    row: str,
    patch: ServerPatch | str | None = GOOD_PATCH,
    *,
    admin_port: str | None = "8081",
    env: Mapping[str, str] | None = None,
    node: str = ROW_NODE,
) -> dict[str, Any]:
    """A bare requester Pod (the recipe's ReplicaSet template) pinned to ``node``, labelled ``row``."""
    template = mkrs(
        name, patch, admin_port=admin_port, requester_env=env, node_selector={api.HOSTNAME_LABEL: node}
    )["spec"]["template"]
    return _bare_pod(name, row, template, template["metadata"]["annotations"])


def _bare_pod(
    name: str, row: str, template: Mapping[str, Any], annotations: Mapping[str, str]
) -> dict[str, Any]:
    """The ReplicaSet template as one Pod of ``row``."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            # One instance label per row, so two requesters of a row can share a sleeper.
            "labels": {**template["metadata"]["labels"], "instance": row, "row": row},
            "annotations": dict(annotations),
        },
        "spec": template["spec"],
    }


def create_pod(kubectl: Kubectl, pod: Mapping[str, Any]) -> None:
    """``kubectl create``, not ``apply``: apply would copy the object into an annotation, and the
    oversized row needs all of the API server's 256 KiB of annotations."""
    kubectl.run("create", "-f", "-", input=json.dumps(pod))


@dataclass
class Calls:
    """The controller's calls so far: API writes (by resource) and HTTP calls to Pods."""

    api_writes: dict[str, float]
    http: float

    def minus(self, before: Calls) -> Calls:
        return Calls(
            {k: v - before.api_writes.get(k, 0.0) for k, v in self.api_writes.items()},
            self.http - before.http,
        )

    @property
    def writes(self) -> float:
        return sum(self.api_writes.values())


@dataclass
class Setup:
    kubectl: Kubectl
    controller: ControllerProcess
    metrics_port: int
    gpu_map: dict[str, dict[str, int]]
    healthy: tuple[str, str, str, str]  # requester name, uid; runner name, uid
    ledger: Ledger

    def calls(self) -> Calls:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
        writes: dict[str, float] = {}
        http = 0.0
        for line in text.splitlines():
            m = _COUNT.match(line)
            if m is None:
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            if m.group(1).startswith("dpctl_http"):
                http += float(m.group(3))
            elif labels.get("verb") in ("create", "patch", "update", "delete"):
                key = labels.get("resource", "")
                writes[key] = writes.get(key, 0.0) + float(m.group(3))
        return Calls(writes, http)

    def apply_gpu_map(self, data: Mapping[str, str] | None) -> None:
        """Replace ``gpu-map``'s data (None: delete the ConfigMap)."""
        if data is None:
            self.kubectl.run("delete", "configmap", api.GPU_MAP_NAME, "--ignore-not-found")
            return
        self.kubectl.run("delete", "configmap", api.GPU_MAP_NAME, "--ignore-not-found")
        self.kubectl.apply(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": api.GPU_MAP_NAME},
                "data": dict(data),
            }
        )

    def good_gpu_map_data(self) -> dict[str, str]:
        return {n: json.dumps(m) for n, m in self.gpu_map.items()}

    def healthy_problems(self) -> list[str]:
        """How the healthy pair differs from how it started (empty: untouched and Ready)."""
        req_name, req_uid, run_name, run_uid = self.healthy
        problems = []
        for name, uid in ((req_name, req_uid), (run_name, run_uid)):
            pod = self.kubectl.pod(name)
            if pod is None or podview.uid(pod) != uid:
                problems.append(f"{name} was replaced or deleted")
            elif not podview.pod_ready(pod) or podview.is_deleting(pod):
                problems.append(f"{name} is not Ready")
        return problems

    def controller_problems(self) -> list[str]:
        proc = self.controller.proc
        problems = []
        if proc is None or proc.poll() is not None:
            problems.append(f"the controller exited ({None if proc is None else proc.returncode})")
        log_text = self.controller.log()
        if "Traceback" in log_text:
            problems.append("the controller logged a traceback")
        if "ServerKey(" in log_text or "RunnerKey(" in log_text:
            problems.append("the controller named a Pod by a Python repr instead of namespace/name")
        return problems


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def controller_process(
    cluster: Any, ns: str, tmp_path_factory: pytest.TempPathFactory, *extra: str
) -> tuple[ControllerProcess, int]:
    """``dpctl controller`` for ``ns`` as a plain process (not started) and its metrics port."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    env["DPCTL_LISTEN_HOST"] = "127.0.0.1"
    args = [str(DPCTL), "controller", "-n", ns, "--kubeconfig", str(cluster.kubeconfig)]
    args += ["--sleeper-limit=2", f"--metrics-port={port}", "-v", "5", *extra]
    log_path = tmp_path_factory.mktemp("badinput") / "controller.log"
    return ControllerProcess(ns, log_path, args, env), port


@pytest.fixture(scope="module")
def setup(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    if cluster.state_dir is None:
        pytest.skip("the bad-input table needs the local cluster (GPU tables, ledger, fault injection)")
    ns = cluster.create_namespace("e2e-bad")
    kubectl = Kubectl(cluster.kubectl, str(cluster.kubeconfig), ns)
    nodes = [n["metadata"]["name"] for n in kubectl.get_json("nodes")["items"]]
    gpu_map = {n: {g.uuid: g.index for g in load_gpu_table(Path(cluster.state_dir), n).gpus} for n in nodes}
    controller, port = controller_process(cluster, ns, tmp_path_factory)
    s = Setup(
        kubectl, controller, port, gpu_map, ("", "", "", ""), Ledger(ledger_path(Path(cluster.state_dir)))
    )
    s.apply_gpu_map(s.good_gpu_map_data())
    controller.start()
    try:
        wait_for(s.calls, 60, "the controller's /metrics")
        create_pod(kubectl, requester_pod("healthy", "healthy", node=HEALTHY_NODE))

        def pair() -> tuple[str, str, str, str] | None:
            pods = kubectl.pods()
            req = next((p for p in pods if podview.name(p) == "healthy"), None)
            if req is None or not podview.pod_ready(req):
                return None
            for p in pods:
                bound = podview.bound_requester(p) if podview.is_runner(p) else None
                if bound and bound[0] == podview.uid(req) and podview.pod_ready(p):
                    return "healthy", podview.uid(req), podview.name(p), podview.uid(p)
            return None

        s.healthy = wait_for(pair, TIMEOUT, "the healthy pair bound and Ready")
        yield s
    finally:
        controller.stop()
        _release_finalizers(kubectl)
        cluster.run_kubectl("delete", "namespace", ns, "--wait=false", check=False)


# --- The launcher path's rows (launcher contract §9) ------------------------------------------
#
# Their own namespace and controller (started once the CRDs are Established: it looks for them
# at start), LauncherConfigs whose image the local cluster runs as dpctl's launcher with vLLM
# emulator instances, the launchers' ServiceAccount with the notifier's rights, and a healthy
# launcher-path pair on HEALTHY_NODE that every row must leave alone.

SCALE = float(os.environ.get("DPCTL_E2E_TIMEOUT_SCALE") or 1)
LX_TIMEOUT = 120 * SCALE  # a pair forms, a status error shows, a Pod goes (2 cores, runs beside us)
LAUNCHER_IMAGE = "ghcr.io/llm-d-incubation/llm-d-fast-model-actuation/launcher:v0.1.0"
LC_NAME = "lc-bad"
LC_NO_SERVER = "lc-bad-no-server"  # its podTemplate names its container "launcher"
TEMPLATE_LABEL = "example.com/launcher-pool"  # on LC_NAME's launchers, so an ISC label may collide
ISC_PORT = 8005
GOOD_OPTIONS = "--model facebook/opt-125m --enable-sleep-mode"
HEALTHY_ISC = "isc-healthy"
# Short, so the never-answering instance row takes seconds (the default is 15 minutes).
INSTANCE_START_TIMEOUT_S = 10


def launcher_config(name: str, container: str = api.INFERENCE_SERVER_CONTAINER) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "LauncherConfig",
        "metadata": {"name": name},
        "spec": {
            "maxInstances": 2,
            "podTemplate": {
                "metadata": {"labels": {TEMPLATE_LABEL: "bad-input"}},
                "spec": {
                    "containers": [
                        {
                            "name": container,
                            "image": LAUNCHER_IMAGE,
                            "command": ["uvicorn", "launcher:app", "--host", "0.0.0.0", "--port", "8001"],
                        }
                    ]
                },
            },
        },
    }


def inference_server_config(
    name: str,
    lc: str = LC_NAME,
    *,
    options: str = GOOD_OPTIONS,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    env_vars: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    server: dict[str, Any] = {"port": ISC_PORT, "options": options}
    for key, value in (("labels", labels), ("annotations", annotations), ("env_vars", env_vars)):
        if value:
            server[key] = dict(value)
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceServerConfig",
        "metadata": {"name": name},
        "spec": {"launcherConfigName": lc, "modelServerConfig": server},
    }


def launcher_requester(
    name: str,
    row: str,
    isc: str,
    *,
    env: Mapping[str, str] | None = None,
    node: str = ROW_NODE,
    server_patch: str | None = None,
    gpus: int = 1,
) -> dict[str, Any]:
    """A bare launcher-path requester (ISC annotation, no server-patch unless given) on ``node``."""
    template = mkrs(
        name, None, gpus=gpus, admin_port=None, requester_env=env, node_selector={api.HOSTNAME_LABEL: node}
    )["spec"]["template"]
    annotations = {api.INFERENCE_SERVER_CONFIG_ANNOTATION: isc, api.HEAD.admin_port: "8081"}
    if server_patch is not None:
        annotations[api.HEAD.server_patch] = server_patch
    return _bare_pod(name, row, template, annotations)


def launcher_status_errors(pod: Mapping[str, Any]) -> list[str]:
    """The errors of ``dual-pods.llm-d.ai/status`` (the launcher path's, and the HEAD dialect's)."""
    raw = (pod["metadata"].get("annotations") or {}).get(api.HEAD.status)
    return list(json.loads(raw).get("Errors") or []) if raw else []


def bound_launcher(pods: list[dict[str, Any]], requester_uid: str) -> dict[str, Any] | None:
    for p in pods:
        bound = podview.bound_requester(p) if podview.is_launcher(p) else None
        if bound and bound[0] == requester_uid:
            return p
    return None


def served_pair(kubectl: Kubectl, name: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The requester ``name`` (not deleting) and its bound launcher, both Ready; else None."""
    pods = kubectl.pods()
    req = next((p for p in pods if podview.name(p) == name and not podview.is_deleting(p)), None)
    if req is None or not podview.pod_ready(req):
        return None
    launcher = bound_launcher(pods, podview.uid(req))
    return (req, launcher) if launcher is not None and podview.pod_ready(launcher) else None


@pytest.fixture(scope="module")
def lsetup(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    if cluster.state_dir is None:
        pytest.skip("the launcher path's bad-input rows need the local cluster (simulated launcher image)")
    cluster.run_kubectl("apply", "--server-side", "-f", str(CHART / "crds"))  # as the chart installs them
    for kind in KINDS:
        cluster.run_kubectl("wait", "--for=condition=Established", f"crd/{kind.crd_name}", "--timeout=60s")
    ns = cluster.create_namespace("e2e-lbad")
    kubectl = Kubectl(cluster.kubectl, str(cluster.kubeconfig), ns)
    # The notifier's rights (launcher contract §3.3): get and patch its own Pod.
    kubectl.run("create", "role", "notifier", "--verb=get,patch", "--resource=pods")
    kubectl.run("create", "rolebinding", "notifier", "--role=notifier", f"--serviceaccount={ns}:default")
    kubectl.apply(launcher_config(LC_NAME))
    kubectl.apply(launcher_config(LC_NO_SERVER, container="launcher"))
    kubectl.apply(inference_server_config(HEALTHY_ISC))
    controller, port = controller_process(
        cluster, ns, tmp_path_factory, f"--instance-start-timeout={INSTANCE_START_TIMEOUT_S}"
    )
    s = Setup(kubectl, controller, port, {}, ("", "", "", ""), Ledger(ledger_path(Path(cluster.state_dir))))
    controller.start()
    try:
        wait_for(s.calls, 60, "the controller's /metrics")
        create_pod(kubectl, launcher_requester("healthy", "healthy", HEALTHY_ISC, node=HEALTHY_NODE))
        req, launcher = wait_for(
            lambda: served_pair(kubectl, "healthy"), LX_TIMEOUT, "the healthy launcher-path pair served"
        )
        s.healthy = (podview.name(req), podview.uid(req), podview.name(launcher), podview.uid(launcher))
        yield s
    finally:
        controller.stop()
        _release_finalizers(kubectl)
        cluster.run_kubectl("delete", "namespace", ns, "--wait=false", check=False)
