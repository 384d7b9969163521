"""The simulated kubelet against the real control plane: nodes, scheduling on GPUs, pod lifecycle,
logs, nvidia-smi, the vLLM emulator, cordon, scale-down, and nodes that die or are deleted.

Checks that look at processes, pod IPs or the state dir need the local cluster (``is_local``);
on a foreign cluster they are skipped and the rest still says whether the cluster behaves alike.
Tests that take a node away put it back before they end, so later tests see every node.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from dpsim.kubelet import ctl
from e2e.conftest import ClusterHandle
from e2e.recipe import Kubectl, ServerPatch
from helpers import wait_for

pytestmark = pytest.mark.e2e

REQUESTER_IMAGE = "registry.example/x/requester:latest"
GPU = "nvidia.com/gpu"
HTTP_TIMEOUT_S = 5.0
# PodGC force-deletes pods of a missing node after a 40 s quarantine, checked every 20 s.
POD_GC_DEADLINE_S = 150.0


@pytest.fixture
def kc(cluster: ClusterHandle, namespace: str) -> Kubectl:
    return Kubectl(cluster.kubectl, str(cluster.kubeconfig), namespace)


@pytest.fixture
def local(cluster: ClusterHandle) -> Path:
    """The state dir of a local cluster; skips on a foreign one."""
    if not cluster.is_local or cluster.state_dir is None:
        pytest.skip("needs the local cluster (processes, pod IPs, the sim-kubelet admin API)")
    return cluster.state_dir


def node_names(cluster: ClusterHandle) -> list[str]:
    nodes = json.loads(cluster.run_kubectl("get", "nodes", "-o", "json").stdout)["items"]
    return sorted(n["metadata"]["name"] for n in nodes)


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions") or [] if c["type"] == ctype), {})


def pods_of_rs(kc: Kubectl, rs: str) -> list[dict[str, Any]]:
    return [
        p for p in kc.pods() if any(o.get("name") == rs for o in p["metadata"].get("ownerReferences") or [])
    ]


def running_pod(kc: Kubectl, name: str) -> dict[str, Any] | None:
    pod = kc.pod(name)
    return pod if pod and pod["status"].get("phase") == "Running" and pod["status"].get("podIP") else None


def container_pids(uid: str) -> list[int]:
    """Processes the simulated kubelet runs for pod ``uid`` (they carry DPCTL_SIM_POD_UID)."""
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get("DPCTL_SIM_POD_UID") == uid and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p.pid)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def recorded_allocations(local: Path) -> dict[str, Any]:
    """allocations.json's pods. The kubelet writes it at most once a second (a burst of
    admissions is one write), so a change shows up to a second later."""
    pods: dict[str, Any] = json.loads((local / "allocations.json").read_text())["pods"]
    return pods


def http(method: str, url: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as resp:
        return resp.status, resp.read()


def pod(name: str, container: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [container], **spec},
    }


def requester_rs(name: str, replicas: int = 1, gpus: int = 1, node: str | None = None) -> dict[str, Any]:
    container = {
        "name": "inference-server",
        "image": REQUESTER_IMAGE,
        "ports": [{"name": "probes", "containerPort": 8080}, {"name": "spi", "containerPort": 8081}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "probes"}, "periodSeconds": 1},
        "resources": {"limits": {GPU: str(gpus), "cpu": "1", "memory": "250Mi"}},
    }
    spec: dict[str, Any] = {"containers": [container], "terminationGracePeriodSeconds": 5}
    if node:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }


def node_ready(cluster: ClusterHandle, node: str) -> bool:
    done = cluster.run_kubectl("get", "node", node, "-o", "json", check=False)
    if done.returncode != 0:
        return False
    obj = json.loads(done.stdout)
    taints = [t["key"] for t in obj["spec"].get("taints") or []]
    return condition(obj, "Ready").get("status") == "True" and not any(
        "not-ready" in t or "unreachable" in t for t in taints
    )


@pytest.fixture
def restore_nodes(cluster: ClusterHandle, local: Path) -> Iterator[None]:
    """Whatever a test does to nodes, every node is back, Ready and schedulable afterwards."""
    before = node_names(cluster)
    yield
    _, body = ctl.call(local, "GET", "/nodes")
    states = {n["name"]: n["state"] for n in body["nodes"]}
    present = node_names(cluster)
    for node in before:
        cluster.run_kubectl("uncordon", node, check=False)
        if node not in present:
            ctl.node_action(local, node, "add")
        elif states.get(node) == "not-ready":
            ctl.node_action(local, node, "ready")
    for node in before:
        wait_for(partial(node_ready, cluster, node), 90, f"node {node} Ready again")


# -- nodes ------------------------------------------------------------------------------------------


def test_nodes_are_ready_with_gpus_labels_and_fresh_leases(cluster: ClusterHandle) -> None:
    nodes = json.loads(cluster.run_kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert nodes, "no nodes"
    for node in nodes:
        name = node["metadata"]["name"]
        assert condition(node, "Ready")["status"] == "True", name
        gpus = node["status"]["allocatable"][GPU]
        assert int(gpus) > 0
        labels = node["metadata"]["labels"]
        assert labels["nvidia.com/gpu.present"] == "true"
        assert labels["nvidia.com/gpu.count"] == gpus
        assert labels["kubernetes.io/hostname"] == name
        lease = json.loads(
            cluster.run_kubectl("get", "lease", name, "-n", "kube-node-lease", "-o", "json").stdout
        )
        assert lease["spec"]["holderIdentity"] == name
        assert lease["spec"]["leaseDurationSeconds"] == 40
    if cluster.local is not None:  # started by this session: exactly what it asked for
        assert len(nodes) == cluster.local.nodes
        assert {n["status"]["allocatable"][GPU] for n in nodes} == {str(cluster.local.gpus)}
    assert "NotReady" not in cluster.run_kubectl("get", "nodes").stdout


# -- the requester ReplicaSet ---------------------------------------------------------------------


def test_requester_replicaset_gets_a_gpu_becomes_ready_and_ends_cleanly(
    cluster: ClusterHandle, kc: Kubectl, local: Path
) -> None:
    kc.apply(requester_rs("req"))
    started = time.monotonic()
    p = wait_for(lambda: next(iter(pods_of_rs(kc, "req")), None), 30, "the ReplicaSet's pod")
    name, uid = p["metadata"]["name"], p["metadata"]["uid"]
    p = wait_for(lambda: running_pod(kc, name), 60, f"pod {name} Running with an IP")
    node, ip = p["spec"]["nodeName"], p["status"]["podIP"]
    assert condition(p, "PodScheduled")["status"] == "True"
    running_after = time.monotonic() - started
    # The stub answers on its own address; it is not Ready until the controller relays readiness.
    uuids = json.loads(
        wait_for(lambda: http("GET", f"http://{ip}:8081/v1/dual-pod/accelerators")[1], 30, "the SPI")
    )
    allocated = wait_for(
        lambda: recorded_allocations(local).get(uid), 10, "the allocation in allocations.json"
    )["gpus"]
    table = json.loads((local / "gpus" / f"{node}.json").read_text())
    assert uuids == allocated
    assert len(uuids) == 1
    assert uuids[0] in {g["uuid"] for g in table["gpus"]}
    assert condition(kc.pod(name) or {}, "Ready").get("status") == "False"
    assert http("POST", f"http://{ip}:8081/v1/become-ready")[0] == 200
    wait_for(lambda: condition(kc.pod(name) or {}, "Ready").get("status") == "True", 30, f"pod {name} Ready")
    pids = container_pids(uid)
    assert len(pids) == 1
    print(f"requester Running {running_after:.1f}s after the ReplicaSet was created")

    kc.run("delete", "rs", "req", "--wait=true", "--cascade=foreground", timeout=60)
    wait_for(lambda: kc.pod(name) is None, 60, f"pod {name} gone")
    assert container_pids(uid) == []
    assert not any(
        psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids
    )
    wait_for(lambda: uid not in recorded_allocations(local), 10, "the allocation gone from allocations.json")


def test_more_gpus_than_any_node_has_stays_pending(kc: Kubectl) -> None:
    kc.apply(pod("five", {"name": "c", "image": REQUESTER_IMAGE, "resources": {"limits": {GPU: "5"}}}))
    scheduled = wait_for(
        lambda: condition(kc.pod("five") or {}, "PodScheduled").get("message"), 30, "a scheduling verdict"
    )
    assert f"Insufficient {GPU}" in scheduled
    assert (kc.pod("five") or {})["status"]["phase"] == "Pending"


# -- admission: what a kubelet refuses to run, for Pods bound by nodeName past the scheduler -------

REJECTED = "Pod was rejected: "
NODE_AFFINITY_WORDS = "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"
TEST_LABEL = "dpctl.test/admission"


def rejection(kc: Kubectl, name: str) -> dict[str, Any]:
    """The Failed status of Pod ``name``, once the kubelet has written it."""

    def failed() -> dict[str, Any] | None:
        status: dict[str, Any] = (kc.pod(name) or {}).get("status") or {}
        return status if status.get("phase") == "Failed" else None

    return wait_for(failed, 60, f"{name} Failed")


def warning_events(kc: Kubectl, name: str, reason: str) -> list[str]:
    return [
        str(e.get("message"))
        for e in kc.get_json("events")["items"]
        if e["involvedObject"].get("name") == name
        and e.get("reason") == reason
        and e.get("type") == "Warning"
    ]


def not_on(node: str) -> dict[str, Any]:
    term = {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "NotIn", "values": [node]}]}
    return {
        "affinity": {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}
        }
    }


@pytest.mark.parametrize("placement", ["hostname-selector-elsewhere", "required-affinity-excluding-the-node"])
def test_a_pod_bound_to_a_node_its_placement_excludes_is_rejected_not_run(
    cluster: ClusterHandle, kc: Kubectl, placement: str
) -> None:
    node = node_names(cluster)[0]
    spec = (
        {"nodeSelector": {"kubernetes.io/hostname": f"not-{node}"}}
        if placement == "hostname-selector-elsewhere"
        else not_on(node)
    )
    kc.apply(pod("misplaced", {"name": "c", "image": REQUESTER_IMAGE}, nodeName=node, **spec))
    status = rejection(kc, "misplaced")
    assert (status.get("reason"), status.get("message")) == ("NodeAffinity", REJECTED + NODE_AFFINITY_WORDS)
    wait_for(
        lambda: warning_events(kc, "misplaced", "NodeAffinity") == [NODE_AFFINITY_WORDS], 30, "the Event"
    )
    assert container_pids(str((kc.pod("misplaced") or {})["metadata"]["uid"])) == []
    assert not status.get("containerStatuses") or all(
        "running" not in c.get("state", {}) for c in status["containerStatuses"]
    )


@pytest.fixture
def labelled_node(cluster: ClusterHandle) -> Iterator[str]:
    node = node_names(cluster)[0]
    cluster.run_kubectl("label", "node", node, f"{TEST_LABEL}=yes", "--overwrite")
    yield node
    cluster.run_kubectl("label", "node", node, f"{TEST_LABEL}-", check=False)


def test_a_label_added_to_a_node_is_honoured_at_admission(kc: Kubectl, labelled_node: str) -> None:
    kc.apply(
        pod(
            "labelled",
            {"name": "c", "image": REQUESTER_IMAGE},
            nodeName=labelled_node,
            nodeSelector={TEST_LABEL: "yes"},
        )
    )
    wait_for(lambda: running_pod(kc, "labelled"), 60, "the pod Running on the node just labelled")


def test_a_pod_bound_past_the_scheduler_asking_for_more_gpus_than_the_node_has_is_rejected(
    cluster: ClusterHandle, kc: Kubectl
) -> None:
    node = node_names(cluster)[0]
    nodes = json.loads(cluster.run_kubectl("get", "node", node, "-o", "json").stdout)
    capacity = int(nodes["status"]["allocatable"][GPU])
    container = {"name": "c", "image": REQUESTER_IMAGE, "resources": {"limits": {GPU: str(capacity + 1)}}}
    kc.apply(pod("greedy", container, nodeName=node))
    status = rejection(kc, "greedy")
    assert status.get("reason") == f"OutOf{GPU}"
    words = str(status.get("message")).removeprefix(REJECTED)
    assert status["message"].startswith(REJECTED)
    assert words.startswith(f"Node didn't have enough resource: {GPU}, requested: {capacity + 1}, used: ")
    assert words.endswith(f", capacity: {capacity}")
    wait_for(lambda: warning_events(kc, "greedy", f"OutOf{GPU}") == [words], 30, "the Event")
    assert container_pids(str((kc.pod("greedy") or {})["metadata"]["uid"])) == []


def test_an_image_without_a_program_fails_like_a_pull(kc: Kubectl) -> None:
    kc.apply(pod("mystery", {"name": "c", "image": "quay.io/nobody/mystery:1.0"}))

    def shown_status() -> str:
        out = kc.run("get", "pod", "mystery", "--no-headers")
        return next((s for s in ("ErrImagePull", "ImagePullBackOff") if s in out), "")

    wait_for(shown_status, 30, "ErrImagePull in kubectl get pods")
    described = kc.run("describe", "pod", "mystery")
    assert "quay.io/nobody/mystery:1.0" in described
    assert "has no program for image" in described


# -- logs -----------------------------------------------------------------------------------------


def test_logs_of_a_deployment_previous_instances_and_follow(kc: Kubectl) -> None:
    container = {
        "name": "c",
        "image": "busybox",
        "command": ["sh", "-c", 'echo "instance of $(POD_NAME) at $(date +%s%N)"; sleep 1; exit 1'],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
    }
    kc.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "crasher"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "crasher"}},
                "template": {"metadata": {"labels": {"app": "crasher"}}, "spec": {"containers": [container]}},
            },
        }
    )

    def restarted() -> dict[str, Any] | None:
        pods = [p for p in kc.pods() if p["metadata"]["name"].startswith("crasher-")]
        statuses = pods[0]["status"].get("containerStatuses") if pods else None
        return pods[0] if statuses and statuses[0]["restartCount"] >= 1 else None

    p = wait_for(restarted, 60, "a restart of the crashing container")
    name = p["metadata"]["name"]
    assert p["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 1
    current = wait_for(lambda: kc.run("logs", "deploy/crasher"), 30, "kubectl logs deploy/crasher")
    assert current.startswith(f"instance of {name} at ")
    previous = kc.run("logs", name, "-c", "c", "--previous")
    assert previous.startswith(f"instance of {name} at ")
    assert kc.run("logs", name, "--tail=1", "--timestamps").split(" ", 1)[1].startswith("instance of")

    kc.apply(
        pod(
            "talker",
            {"name": "c", "image": "busybox", "command": ["sh", "-c", "echo one; sleep 2; echo two"]},
            restartPolicy="Never",
        )
    )
    wait_for(
        lambda: (kc.pod("talker") or {}).get("status", {}).get("phase") in ("Running", "Succeeded"),
        30,
        "talker",
    )
    # -f streams until the container ends, then kubectl exits by itself.
    assert kc.run("logs", "-f", "talker", timeout=30) == "one\ntwo\n"
    wait_for(lambda: (kc.pod("talker") or {})["status"]["phase"] == "Succeeded", 30, "talker Succeeded")


# -- GPU views --------------------------------------------------------------------------------------


def test_nvidia_smi_pod_prints_its_nodes_gpu_table(cluster: ClusterHandle, kc: Kubectl) -> None:
    node = node_names(cluster)[0]
    container = {
        "name": "smi",
        "image": "nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04",
        "command": ["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"],
    }
    kc.apply(pod("smi", container, restartPolicy="Never", nodeSelector={"kubernetes.io/hostname": node}))
    wait_for(
        lambda: (kc.pod("smi") or {}).get("status", {}).get("phase") == "Succeeded",
        60,
        "nvidia-smi to finish",
    )
    lines = kc.run("logs", "smi").splitlines()
    gpus = int(
        json.loads(cluster.run_kubectl("get", "node", node, "-o", "json").stdout)["status"]["capacity"][GPU]
    )
    assert [line.split(", ")[0] for line in lines] == [str(i) for i in range(gpus)]
    if cluster.is_local and cluster.state_dir is not None:
        table = json.loads((cluster.state_dir / "gpus" / f"{node}.json").read_text())
        assert lines == [f"{g['index']}, {g['uuid']}" for g in table["gpus"]]


def test_vllm_emulator_from_the_recipes_server_patch_becomes_ready(kc: Kubectl) -> None:
    patch = yaml.safe_load(ServerPatch(startup_delay_s=1.0).text())
    container = patch["spec"]["containers"][0]
    kc.apply(pod("vllm", container))
    p = wait_for(
        lambda: condition(kc.pod("vllm") or {}, "Ready").get("status") == "True" and kc.pod("vllm"),
        90,
        "vLLM Ready",
    )
    assert p["status"]["containerStatuses"][0]["ready"]
    assert "Application startup complete." in kc.run("logs", "vllm")


# -- nodes changing under pods --------------------------------------------------------------------


def test_cordon_keeps_new_pods_off_and_scale_down_stops_processes(
    cluster: ClusterHandle, kc: Kubectl, local: Path, restore_nodes: None
) -> None:
    nodes = node_names(cluster)
    if len(nodes) < 2:
        pytest.skip("needs two nodes")
    open_node, cordoned = nodes[0], nodes[1]
    cluster.run_kubectl("cordon", cordoned)
    kc.apply(requester_rs("spread", replicas=2))
    wait_for(
        lambda: len([p for p in pods_of_rs(kc, "spread") if p["status"].get("podIP")]) == 2, 60, "two pods"
    )
    pods = pods_of_rs(kc, "spread")
    assert {p["spec"]["nodeName"] for p in pods} == {open_node}
    uids = {p["metadata"]["uid"] for p in pods}
    wait_for(lambda: all(container_pids(u) for u in uids), 30, "both containers running")
    kc.scale("spread", 1)
    wait_for(lambda: len(pods_of_rs(kc, "spread")) == 1, 60, "scale-down to one pod")
    [victim] = uids - {p["metadata"]["uid"] for p in pods_of_rs(kc, "spread")}
    wait_for(lambda: container_pids(victim) == [], 10, "the removed pod's process to end")


def test_kubectl_delete_node_lets_podgc_remove_its_pods(
    cluster: ClusterHandle, kc: Kubectl, local: Path, restore_nodes: None
) -> None:
    node = node_names(cluster)[-1]
    kc.apply(requester_rs("doomed", node=node))
    p = wait_for(
        lambda: next((q for q in pods_of_rs(kc, "doomed") if q["status"].get("podIP")), None), 60, "pod"
    )
    uid = p["metadata"]["uid"]
    wait_for(lambda: container_pids(uid), 30, "its process")
    cluster.run_kubectl("delete", "node", node)
    # Like a real kubelet it keeps the pod running until PodGC force-deletes it.
    wait_for(lambda: uid not in {q["metadata"]["uid"] for q in kc.pods()}, POD_GC_DEADLINE_S, "PodGC")
    wait_for(lambda: container_pids(uid) == [], 15, "the process of the collected pod to end")
    replacement = wait_for(lambda: next(iter(pods_of_rs(kc, "doomed")), None), 30, "a replacement pod")
    assert replacement["status"]["phase"] == "Pending"  # its node is gone
    ctl.node_action(local, node, "add")
    wait_for(lambda: node_ready(cluster, node), 60, f"node {node} back")
    wait_for(
        lambda: running_pod(kc, replacement["metadata"]["name"]),
        60,
        "the replacement Running on the new node",
    )


def test_admin_api_not_ready_remove_and_add(
    cluster: ClusterHandle, kc: Kubectl, local: Path, restore_nodes: None
) -> None:
    node = node_names(cluster)[-1]
    ctl.node_action(local, node, "not-ready")
    wait_for(
        lambda: "NotReady" in cluster.run_kubectl("get", "node", node, "--no-headers").stdout, 30, "NotReady"
    )
    wait_for(
        lambda: (
            "node.kubernetes.io/not-ready"
            in cluster.run_kubectl("get", "node", node, "-o", "jsonpath={.spec.taints}").stdout
        ),
        60,
        "the not-ready taint",
    )
    ctl.node_action(local, node, "ready")
    wait_for(lambda: node_ready(cluster, node), 60, "Ready and untainted again")

    kc.apply(requester_rs("victim", node=node))
    p = wait_for(
        lambda: next((q for q in pods_of_rs(kc, "victim") if q["status"].get("podIP")), None), 60, "pod"
    )
    uid = p["metadata"]["uid"]
    wait_for(lambda: container_pids(uid), 30, "its process")
    # `ctl` is what people run; call the command line once.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dpctl",
            "sim-kubelet",
            "ctl",
            "--state-dir",
            str(local),
            "node",
            node,
            "--remove",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "removed"
    assert container_pids(uid) == []  # killed like a dead machine, before the command returned
    assert node not in node_names(cluster)
    ctl.node_action(local, node, "add")
    wait_for(lambda: node_ready(cluster, node), 60, f"node {node} back")
