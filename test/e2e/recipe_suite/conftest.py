"""Fixtures of the recipe suite: the cluster set up the way ``e2e-recipe.md`` sets it up.

* ``controller_image``, ``requester_image``: the images the chart and ``mkrs`` name; the image
  tests (``test_images``) override both with the images they built and pushed.
* ``dpctlr``: the controller installed by the chart, exactly the recipe's ``helm upgrade --install
  dpctlr ... --set Image=... --set NodeViewClusterRole=... --set SleeperLimit=N``, in the test's
  namespace. It can ``helm delete`` and reinstall the release, kill the controller Pod, read the
  log as the recipe does (``kubectl logs deploy/dpctlr``, with the logs of earlier controller
  instances kept in front), and read the controller's work queue from ``/metrics`` to tell when it
  has processed what happened ("idle"). The sleeper limit is 2 (the chart's default) unless a
  test parametrizes the fixture indirectly: ``@pytest.mark.parametrize("dpctlr", [1], indirect=True)``.
  On teardown every workload of the namespace is deleted while the controller still runs (so
  finalizers are released the normal way), then the release is deleted.
* ``gpu_map``: the ``gpu-map`` ConfigMap filled by running ``hack/ensure-nodes-mapped.sh`` as the
  recipe does, with a kubeconfig whose current namespace is the test's; ``gpu_map_script`` runs it
  on demand (Example 4 makes the map late).
* ``gpus``: makes a Node have exactly one (or a few) free GPUs by occupying the others with
  placeholder Pods, so consecutive requesters there get the same GPU (Examples 7 and 8).
* ``cordon``: cordons Nodes and uncordons them after the test, pass or fail.
* ``claims``: the PersistentVolumeClaims the recipe's volume form of the server-patch names.
* ``dialect`` (autouse): every case runs twice, its ReplicaSets written with the recipe's
  (8ed2953) names and with upstream's current ones (contract §2b); checks read the names of the
  requester's dialect. A module with ``ONE_DIALECT = True`` runs in the recipe's names only.
* ``sim``: the local cluster's simulated kubelet (``dpctl sim-kubelet ctl``); skips on a foreign
  cluster.

After every case (autouse ``recipe_invariants``): no Pod stays Terminating, and on the local cluster
the GPU ledger has no violation of contract invariant 1. A failing case gets a diagnostics section
in its report: the dual pods, their annotations, the ReplicaSets, the Nodes and the controller log.

Checks that need the simulator (the GPU ledger, the kubelet's admin API, the emulator's delays)
skip on a foreign cluster, saying so; on the local cluster nothing is ever skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dpctl import api
from dpsim.emulator.ledger import Ledger
from dpsim.kubelet.ctl import node_action
from dpsim.simenv import ledger_path
from e2e.deploy.chart import CHART, IMAGE, NODE_VIEWER, RELEASE, REPO, SELECTOR
from e2e.dualpods.conftest import dump, kubectl, release_finalizers
from e2e.recipe import (
    LOCAL_CLAIM_PREFIX,
    REQUESTER_IMAGE,
    SHARED_CLAIM,
    Kubectl,
    deleting,
    gpu_request,
    is_ready,
    name_of,
    placeholder_pod,
    pod_get,
    writing_dialect,
)
from helpers import wait_for

__all__ = ["CHART", "REPO", "kubectl"]

MAP_SCRIPT = REPO / "hack" / "ensure-nodes-mapped.sh"
# Every Pod of a test that is not the controller's (requesters, runners, placeholders).
WORKLOAD_SELECTOR = "!app.kubernetes.io/instance"
METRICS_PORT = 8002
QUEUE = "dualpods"
DEFAULT_SLEEPER_LIMIT = 2

# Deadlines, generous for a 2-core machine shared with other clusters; a slow real cluster (model
# loads of minutes) scales them with $DPCTL_E2E_TIMEOUT_SCALE.
SCALE = float(os.environ.get("DPCTL_E2E_TIMEOUT_SCALE") or 1)
T = 150 * SCALE  # something the controller and the kubelet do: a pair forms, a Pod goes
T_INSTALL = 240 * SCALE

NEEDS_SIMULATOR = "needs the local cluster's simulated kubelet"


def skip_unless_local(cluster: Any, what: str) -> None:
    """Skip on a foreign cluster, saying which simulator feature the check needs."""
    if not cluster.is_local:
        pytest.skip(f"{what} {NEEDS_SIMULATOR} (KUBECONFIG names another cluster)")


# ------------------------------------------------------------------ the controller, by the chart


@dataclass(frozen=True)
class QueueStats:
    """The controller's work queue, read from ``/metrics``."""

    adds: float
    depth: float
    busy_s: float  # seconds of work in progress (0 when no worker is busy)

    @property
    def idle(self) -> bool:
        return self.depth == 0 and self.busy_s == 0


@dataclass
class Dpctlr:
    """The chart release ``dpctlr`` in the test's namespace."""

    cluster: Any
    kubectl: Kubectl
    sleeper_limit: int = DEFAULT_SLEEPER_LIMIT
    image: str = IMAGE
    installed: bool = False
    previous_logs: list[str] = field(default_factory=list)

    @property
    def namespace(self) -> str:
        return self.kubectl.namespace

    def helm(self, *args: str, timeout: float = T_INSTALL + 30) -> str:
        cmd = [self.cluster.helm] if self.cluster.helm else [str(REPO / "hack" / "helm.sh")]
        done = subprocess.run(
            [*cmd, "--kubeconfig", str(self.cluster.kubeconfig), "--namespace", self.namespace, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n"
                + self.diagnostics()
            )
        return done.stdout

    def install(self, sleeper_limit: int | None = None) -> None:
        """The recipe's ``helm upgrade --install``; returns once the controller's caches synced."""
        if sleeper_limit is not None:
            self.sleeper_limit = sleeper_limit
        self.helm(
            "upgrade",
            "--install",
            RELEASE,
            str(CHART),
            "--set",
            f"Image={self.image}",
            "--set",
            f"NodeViewClusterRole={NODE_VIEWER}",
            "--set",
            f"SleeperLimit={self.sleeper_limit}",
            "--wait",
            "--timeout",
            f"{int(T_INSTALL)}s",
        )
        self.installed = True
        wait_for(self.pod, T, "a Running and Ready controller Pod")
        wait_for(lambda: "Caches synced" in self.current_log(), T, "'Caches synced' in the controller log")

    def uninstall(self) -> None:
        """The recipe's ``helm delete dpctlr``; returns once the controller Pod is gone."""
        self.previous_logs.append(self.current_log())
        self.helm("delete", RELEASE, "--wait", "--timeout", f"{int(T)}s")
        self.installed = False
        wait_for(lambda: not self.pods(), T, "the controller Pod to go away")

    def pods(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.kubectl.get_json("pods", "-l", SELECTOR)["items"]
        return items

    def pod(self) -> dict[str, Any] | None:
        """The controller Pod that runs and is Ready (not one on its way out)."""
        live = [p for p in self.pods() if not deleting(p) and is_ready(p)]
        return live[0] if len(live) == 1 else None

    def kill(self, grace_s: int = 1) -> str:
        """Delete the controller Pod with a short grace period, as a crash or a node drain would
        stop it mid-work; returns once its replacement synced. Its log so far is kept."""
        old = self.pod()
        assert old is not None, "no controller Pod to delete"
        self.previous_logs.append(self.current_log())
        self.kubectl.delete_pod(name_of(old), f"--grace-period={grace_s}")
        new = wait_for(
            lambda: (p := self.pod()) is not None and name_of(p) != name_of(old) and p,
            T,
            "a new controller Pod, Running and Ready",
        )
        wait_for(
            lambda: "Caches synced" in self.current_log(), T, "'Caches synced' in the new controller's log"
        )
        return name_of(new)

    def current_log(self) -> str:
        """``kubectl logs deploy/dpctlr``: the current controller's log."""
        return self.kubectl.run("logs", f"deploy/{RELEASE}", check=False)

    def log(self) -> str:
        """Every controller's log in this test, oldest first."""
        current = [self.current_log()] if self.installed else []
        return "\n".join([*self.previous_logs, *current])

    def lines(self, message: str, **kv: str) -> list[str]:
        """Log lines with ``message`` and each ``key="value"`` given (the text format's spelling)."""
        wanted = [f"{k}={json.dumps(v)}" for k, v in kv.items()]
        return [
            line for line in self.log().splitlines() if message in line and all(w in line for w in wanted)
        ]

    def count(self, message: str, **kv: str) -> int:
        return len(self.lines(message, **kv))

    def queue(self) -> QueueStats:
        pod = self.pod()
        assert pod is not None, "no controller Pod to read /metrics from"
        text = pod_get(self.kubectl, pod, METRICS_PORT, "/metrics", direct=self.cluster.is_local).decode()
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.labels.get("name") == QUEUE:
                    values[sample.name] = sample.value
        return QueueStats(
            adds=values.get("workqueue_adds_total", 0.0),
            depth=values.get("workqueue_depth", 0.0),
            busy_s=values.get("workqueue_unfinished_work_seconds", 0.0),
        )

    def wait_processed(self, adds_before: float, what: str) -> QueueStats:
        """Wait until the controller has taken in something new (its queue saw more adds than
        ``adds_before``) and has finished with all of it (nothing queued, no worker busy)."""
        return wait_for(
            lambda: (q := self.queue()).adds > adds_before and q.idle and q,
            T,
            f"the controller to process {what}",
        )

    def diagnostics(self) -> str:
        parts = []
        for args in (
            ["get", "pods", "-o", "wide", "-l", SELECTOR],
            ["describe", "pods", "-l", SELECTOR],
            ["logs", f"deploy/{RELEASE}", "--tail=40"],
        ):
            out = self.kubectl.run(*args, check=False)
            parts.append(f"$ kubectl {' '.join(args)}\n{out}")
        return "\n".join(parts)


@pytest.fixture
def controller_image() -> str:
    """The chart's ``--set Image=...``; the image tests override it with the image they pushed."""
    return IMAGE


@pytest.fixture
def requester_image() -> str:
    """The image of ``mkrs``'s requester; the image tests override it with the one they pushed."""
    return REQUESTER_IMAGE


@pytest.fixture
def dpctlr(
    request: pytest.FixtureRequest, cluster: Any, kubectl: Kubectl, node_viewer: str, controller_image: str
) -> Iterator[Dpctlr]:
    sleeper_limit = int(getattr(request, "param", DEFAULT_SLEEPER_LIMIT))
    controller = Dpctlr(cluster, kubectl, sleeper_limit, image=controller_image)
    controller.install()
    yield controller
    try:
        _delete_workloads(kubectl, controller)
    finally:
        if controller.installed:
            controller.uninstall()
        release_finalizers(kubectl)


def _delete_workloads(kubectl: Kubectl, controller: Dpctlr) -> None:
    """Delete every requester, runner and placeholder while the controller runs, so finalizers
    go the normal way and no awake server outlives the test."""
    if not controller.installed:
        controller.install()
    kubectl.run("delete", "replicasets", "--all", "--wait=false", check=False)
    kubectl.run("delete", "pods", "-l", WORKLOAD_SELECTOR, "--wait=false", check=False)
    wait_for(
        lambda: not kubectl.get_json("pods", "-l", WORKLOAD_SELECTOR)["items"],
        T,
        "the test's Pods to go away",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every case in each dialect, but for modules about something else than the names on Pods
    (``ONE_DIALECT = True``: real images, Prometheus), which run in the recipe's only."""
    dialects = (api.ORIGINAL,) if getattr(metafunc.module, "ONE_DIALECT", False) else api.DIALECTS
    metafunc.parametrize("dialect", dialects, indirect=True, ids=[d.name for d in dialects])


@pytest.fixture(autouse=True)
def dialect(request: pytest.FixtureRequest) -> Iterator[api.Dialect]:
    with writing_dialect(request.param):
        yield request.param


# ------------------------------------------------------------------ after every case


@pytest.fixture
def gpu_ledger(cluster: Any) -> Ledger | None:
    """The emulator's GPU ledger on the local cluster; None elsewhere (real GPUs keep no ledger)."""
    return Ledger(ledger_path(Path(cluster.state_dir))) if cluster.is_local and cluster.state_dir else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    funcargs = getattr(item, "funcargs", {})
    if report.failed and report.when in ("setup", "call") and "kubectl" in funcargs:
        try:
            text = dump(funcargs["kubectl"], funcargs.get("dpctlr"), tail=80)
        except Exception as e:
            text = f"(diagnostics failed: {e})"
        report.sections.append(("dual-pods diagnostics", text))
    return report


@pytest.fixture(autouse=True)
def recipe_invariants(
    request: pytest.FixtureRequest, kubectl: Kubectl, dpctlr: Dpctlr, gpu_ledger: Ledger | None
) -> Iterator[None]:
    """After every case: nothing stuck Terminating (invariant 3) and, on the local cluster, never
    two awake servers on one GPU (invariant 1, from the emulator's GPU ledger) while it ran. The
    ledger is the whole cluster's, so only the violations recorded since the case began count."""
    seen = len(gpu_ledger.violations()) if gpu_ledger is not None else 0
    yield
    call = getattr(request.node, "report_call", None)
    if call is None or not call.passed:
        return  # the failure itself is the news; its report carries the diagnostics
    try:
        wait_for(
            lambda: not [name_of(p) for p in kubectl.pods() if deleting(p)],
            T,
            "no Pod of the test Terminating (a dual-pods finalizer left behind?)",
        )
        if gpu_ledger is not None:
            violations = gpu_ledger.violations()[seen:]
            assert violations == [], "two awake inference servers on one GPU:\n" + "\n".join(
                map(str, violations)
            )
        else:
            warnings.warn(f"invariant 1 not checked: the GPU ledger {NEEDS_SIMULATOR}", stacklevel=1)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{dump(kubectl, dpctlr, tail=80)}") from None


# ------------------------------------------------------------------ gpu-map, by the recipe's script


@dataclass
class GpuMapScript:
    """``hack/ensure-nodes-mapped.sh`` run against the test's namespace."""

    cluster: Any
    kubectl: Kubectl
    kubeconfig: Path

    def run(self) -> dict[str, dict[str, int]]:
        done = subprocess.run(
            ["bash", str(MAP_SCRIPT)],
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig), "KUBECTL": self.cluster.kubectl},
            capture_output=True,
            text=True,
            timeout=T_INSTALL,
            check=False,
        )
        assert done.returncode == 0, f"ensure-nodes-mapped.sh failed ({done.returncode}):\n{done.stderr}"
        return self.read()

    def read(self) -> dict[str, dict[str, int]]:
        cm = self.kubectl.get_json("configmap", api.GPU_MAP_NAME)
        return {node: json.loads(entry) for node, entry in (cm.get("data") or {}).items()}


@pytest.fixture
def gpu_map_script(cluster: Any, kubectl: Kubectl, tmp_path: Path) -> GpuMapScript:
    """The script, with a copy of the kubeconfig whose current namespace is the test's (the script
    works in the kubeconfig's current namespace, as the recipe runs it)."""
    copy = tmp_path / "kubeconfig"
    view = cluster.run_kubectl("config", "view", "--raw").stdout
    copy.write_text(view)
    copy.chmod(0o600)
    subprocess.run(
        [
            cluster.kubectl,
            "--kubeconfig",
            str(copy),
            "config",
            "set-context",
            "--current",
            f"--namespace={kubectl.namespace}",
        ],
        check=True,
        capture_output=True,
    )
    return GpuMapScript(cluster, kubectl, copy)


@pytest.fixture
def gpu_map(gpu_map_script: GpuMapScript) -> dict[str, dict[str, int]]:
    """``gpu-map`` filled by the recipe's script: ``{node: {GPU UUID: index}}``."""
    return gpu_map_script.run()


# ------------------------------------------------------------------ Nodes and GPUs


def schedulable_nodes(kubectl: Kubectl) -> list[dict[str, Any]]:
    nodes = kubectl.get_json("nodes")["items"]
    return [
        n
        for n in nodes
        if not n["spec"].get("unschedulable")
        and int(str(n["status"].get("allocatable", {}).get(api.GPU_RESOURCE, "0"))) > 0
        and any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
    ]


def free_gpus(cluster: Any, node: dict[str, Any]) -> int:
    """GPUs of a Node no live Pod (of any namespace) asks for, as the scheduler counts."""
    out = cluster.run_kubectl(
        "get", "pods", "-A", "--field-selector", f"spec.nodeName={name_of(node)}", "-o", "json"
    ).stdout
    used = sum(
        gpu_request(p)
        for p in json.loads(out)["items"]
        if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
    )
    return int(str(node["status"]["allocatable"][api.GPU_RESOURCE])) - used


@dataclass
class Gpus:
    cluster: Any
    kubectl: Kubectl
    controller: Dpctlr
    placeholders: int = 0

    def worker(self, min_free: int = 1) -> str:
        """A schedulable GPU Node that does not run the controller (so deleting or cordoning it
        leaves the controller alone), with at least ``min_free`` free GPUs."""
        pod = self.controller.pod()
        controller_node = pod["spec"].get("nodeName") if pod else None
        nodes = schedulable_nodes(self.kubectl)
        ranked = sorted(nodes, key=lambda n: (name_of(n) == controller_node, -free_gpus(self.cluster, n)))
        for node in ranked:
            if free_gpus(self.cluster, node) >= min_free:
                return name_of(node)
        raise AssertionError(f"no schedulable Node with {min_free} free GPUs: {[name_of(n) for n in nodes]}")

    def leave_free(self, node: str, free: int = 1) -> None:
        """Occupy a Node's GPUs with placeholder Pods until exactly ``free`` are left, so every
        requester pinned there gets the same GPU(s), as the recipe's Example 7 advises."""
        (obj,) = [n for n in self.kubectl.get_json("nodes")["items"] if name_of(n) == node]
        extra = free_gpus(self.cluster, obj) - free
        assert extra >= 0, f"{node} has fewer than {free} free GPUs"
        names = []
        for _ in range(extra):
            self.placeholders += 1
            name = f"gpu-placeholder-{self.placeholders}"
            self.kubectl.apply(placeholder_pod(name, node))
            names.append(name)
        wait_for(
            lambda: all(
                (p := self.kubectl.pod(n)) is not None and p.get("status", {}).get("phase") == "Running"
                for n in names
            ),
            T,
            f"{extra} placeholder Pods Running on {node}",
        )


@pytest.fixture
def gpus(cluster: Any, kubectl: Kubectl, dpctlr: Dpctlr) -> Gpus:
    return Gpus(cluster, kubectl, dpctlr)


@pytest.fixture
def cordon(cluster: Any) -> Iterator[Callable[[str], None]]:
    """``cordon(node)``: the recipe's ``kubectl cordon``; every cordoned Node is uncordoned after the test."""
    done: list[str] = []

    def do(node: str) -> None:
        done.append(node)
        cluster.run_kubectl("cordon", node)

    yield do
    for node in done:
        cluster.run_kubectl("uncordon", node, check=False)


@dataclass
class SimKubelet:
    """The simulated kubelet's admin API (``dpctl sim-kubelet ctl``)."""

    state_dir: Path

    def node(self, name: str, action: str) -> dict[str, Any]:
        return node_action(self.state_dir, name, action)


@pytest.fixture
def sim(cluster: Any) -> SimKubelet:
    skip_unless_local(cluster, "changing Nodes (kubelet ctl)")
    return SimKubelet(Path(cluster.state_dir))


# ------------------------------------------------------------------ the volume form's claims


@pytest.fixture
def claims(cluster: Any, kubectl: Kubectl) -> Iterator[list[str]]:
    """The claims the recipe's volume form names: ``vcp-local-<node>`` for each Node and
    ``vcp-cephfs-shared``. A Pod naming a missing or unbound claim stays Pending (the scheduler's
    VolumeBinding plugin), so each claim is pre-bound to its own hostPath PersistentVolume; no
    container here mounts anything, so what the volume holds does not matter."""
    ns = kubectl.namespace
    names = [SHARED_CLAIM] + [LOCAL_CLAIM_PREFIX + name_of(n) for n in kubectl.get_json("nodes")["items"]]
    volumes = []
    for claim in names:
        pv = f"{ns}-{claim}"
        volumes.append(pv)
        spec = {"accessModes": ["ReadWriteOnce"], "storageClassName": ""}
        kubectl.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": pv, "labels": {"dpctl.llm-d.ai/e2e": ns}},
                "spec": {
                    **spec,
                    "capacity": {"storage": "1Gi"},
                    "persistentVolumeReclaimPolicy": "Delete",
                    "hostPath": {"path": f"/tmp/dpctl-e2e/{pv}", "type": "DirectoryOrCreate"},
                    "claimRef": {"namespace": ns, "name": claim},
                },
            }
        )
        kubectl.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim},
                "spec": {**spec, "volumeName": pv, "resources": {"requests": {"storage": "1Gi"}}},
            }
        )
    wait_for(
        lambda: all(c["status"].get("phase") == "Bound" for c in kubectl.get_json("pvc")["items"]),
        T,
        f"claims {names} Bound",
    )
    yield names
    cluster.run_kubectl("delete", "pv", "-l", f"dpctl.llm-d.ai/e2e={ns}", "--wait=false", check=False)
