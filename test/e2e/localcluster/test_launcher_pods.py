"""A launcher Pod built from a LauncherConfig, on a simulated GPU node, as on a real one: the
``*/launcher`` image runs ``dpctl launcher`` whatever its command, each instance is a vLLM
emulator on its own port of the Pod's IP holding its GPU in the ledger awake or asleep, the
notifier sidecar publishes the instances' signature on the Pod, and deleting the Pod ends the
instances too (launcher contract §2.4, §3; issue: launcher-based actuation, part 1).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dpctl import api
from dpctl.fma.v1alpha1 import API_VERSION, KINDS, ModelServerConfig
from dpctl.launcher.notifier import signature
from dpctl.podbuild.launcher import instance_id, launch_body, launcher_for_node, launcher_template
from dpsim.emulator.gputable import load_gpu_table
from dpsim.emulator.ledger import Ledger
from dpsim.simenv import ledger_path
from e2e.conftest import ClusterHandle
from e2e.deploy.chart import CHART
from e2e.recipe import Kubectl
from helpers import wait_for

pytestmark = pytest.mark.e2e

LAUNCHER_IMAGE = "ghcr.io/llm-d-incubation/llm-d-fast-model-actuation/launcher:v0.1.0"
HTTP_TIMEOUT_S = 5.0
T = 90.0  # a launcher becomes Ready, an instance starts, a deleted Pod's processes end


@pytest.fixture
def kc(cluster: ClusterHandle, namespace: str) -> Kubectl:
    if not cluster.is_local or cluster.state_dir is None:
        pytest.skip("needs the local cluster (the GPU ledger, the simulated launcher image)")
    cluster.run_kubectl("apply", "--server-side", "-f", str(CHART / "crds"))  # as the chart installs them
    for kind in KINDS:
        cluster.run_kubectl("wait", "--for=condition=Established", f"crd/{kind.crd_name}", "--timeout=60s")
    # The notifier's rights (contract §3.3): get and patch its own Pod.
    cluster.run_kubectl("create", "role", "notifier", "--verb=get,patch", "--resource=pods", "-n", namespace)
    cluster.run_kubectl(
        "create",
        "rolebinding",
        "notifier",
        "--role=notifier",
        f"--serviceaccount={namespace}:default",
        "-n",
        namespace,
    )
    return Kubectl(cluster.kubectl, str(cluster.kubeconfig), namespace)


def http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def ready_ip(kc: Kubectl, name: str) -> str:
    pod = kc.pod(name) or {}
    status = pod.get("status") or {}
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
    return str(status.get("podIP") or "") if ready else ""


@pytest.fixture
def launcher(kc: Kubectl, cluster: ClusterHandle) -> Iterator[tuple[str, str, str]]:
    """A launcher Pod of LauncherConfig ``lc-e2e`` on the first Node: (Pod name, Node, Pod IP)."""
    lc = {
        "apiVersion": API_VERSION,
        "kind": "LauncherConfig",
        "metadata": {"name": "lc-e2e"},
        "spec": {
            "maxInstances": 2,
            "podTemplate": {
                "spec": {
                    "containers": [
                        {
                            "name": "inference-server",
                            "image": LAUNCHER_IMAGE,
                            "command": ["uvicorn", "launcher:app", "--host", "0.0.0.0", "--port", "8001"],
                        }
                    ]
                }
            },
        },
    }
    kc.apply(lc)
    nodes = json.loads(cluster.run_kubectl("get", "nodes", "-o", "json").stdout)["items"]
    node = sorted(n["metadata"]["name"] for n in nodes)[0]
    pod = launcher_for_node(launcher_template(kc.get_json("launcherconfig", "lc-e2e")), node)
    name = kc.run("create", "-f", "-", "-o", "name", input=json.dumps(pod)).strip().removeprefix("pod/")
    ip = wait_for(lambda: ready_ip(kc, name), T, f"launcher Pod {name} Ready")
    yield name, node, ip
    kc.run("delete", "pod", name, "--ignore-not-found", "--wait=false", check=False)


def test_a_launcher_pod_runs_instances_that_hold_their_gpus_and_end_with_it(
    kc: Kubectl, cluster: ClusterHandle, launcher: tuple[str, str, str]
) -> None:
    name, node, ip = launcher
    assert cluster.state_dir is not None
    ledger = Ledger(ledger_path(Path(cluster.state_dir)))
    held = {h.gpu for h in ledger.holds()}
    gpu = next(
        g.uuid for g in reversed(load_gpu_table(Path(cluster.state_dir), node).gpus) if g.uuid not in held
    )
    server = ModelServerConfig(port=8005, options="--model facebook/opt-125m --enable-sleep-mode")
    iid = instance_id(server, [gpu])

    status, state = http(
        "PUT", f"http://{ip}:8001/v2/vllm/instances/{iid}", launch_body("isc-e2e", server, [gpu])
    )
    assert status == 201, state
    assert (state["status"], state["instance_id"]) == ("running", iid)
    assert state["env_vars"]["CUDA_VISIBLE_DEVICES"].isdigit()

    def sleeping() -> bool | None:
        try:
            return bool(http("GET", f"http://{ip}:8005/is_sleeping")[1]["is_sleeping"])
        except OSError:
            return None

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://{ip}:8005/health", timeout=HTTP_TIMEOUT_S) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    wait_for(healthy, T, "the instance to serve on the ISC's port of the Pod's IP")
    assert sleeping() is False
    pod_ref = f"{kc.namespace}/{name}"
    assert ledger.awake_holders()[gpu].pod == pod_ref
    assert http("POST", f"http://{ip}:8005/sleep?level=1")[0] == 200
    wait_for(lambda: sleeping() is True, T, "the instance asleep")
    (hold,) = [h for h in ledger.holds() if h.gpu == gpu]
    assert (hold.holder.pod, hold.awake) == (pod_ref, False)

    listing = http("GET", f"http://{ip}:8001/v2/vllm/instances")[1]
    wait_for(
        lambda: (
            (kc.pod(name) or {})["metadata"].get("annotations", {}).get(api.INSTANCE_SIGNATURE_ANNOTATION)
            == signature(listing)
        ),
        T,
        "the notifier to publish the instances' signature on the Pod",
    )

    kc.run("delete", "pod", name, "--wait=false")
    wait_for(
        lambda: all(h.gpu != gpu for h in ledger.holds()), T, "the instance to end with its launcher Pod"
    )
    assert sleeping() is None
