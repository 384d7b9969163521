"""`dpctl status` against a real namespace: a bound pair and a sleeper, as JSON, as a kubectl
plugin's table, and with the namespace taken from the kubeconfig context.

The controller runs as a plain process (``start_controller``). One ReplicaSet is brought up and
scaled to 0, leaving its runner asleep; a second one, with a different server-patch so the
sleeper is not reused, then gets a new runner on the same Node. On the launcher path, the recipe's
example manifests: a launcher bound to its requester, with its instance.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dpctl import api
from dpctl.fma.v1alpha1 import KINDS
from dpctl.status.fleet import FleetReport
from e2e.deploy.chart import CHART
from e2e.recipe import (
    Kubectl,
    ServerPatch,
    bound_runner_of,
    is_ready,
    mkrs,
    requesters_of,
    unique_name,
)
from helpers import wait_for

from .conftest import dump

pytestmark = pytest.mark.e2e

TIMEOUT = 90
DPCTL = Path(sys.executable).with_name("dpctl")
PLUGIN_DIR = Path(__file__).resolve().parents[3] / "hack"
EXAMPLES = Path(__file__).resolve().parents[3] / "deploy" / "examples" / "launcher"


def _pair(kubectl: Kubectl, rs: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    pods = kubectl.pods()
    reqs = [r for r in requesters_of(pods, rs) if not r["metadata"].get("deletionTimestamp")]
    if len(reqs) != 1:
        return None
    runner = bound_runner_of(pods, reqs[0])
    return (dict(reqs[0]), dict(runner)) if runner is not None else None


def _ready_pair(kubectl: Kubectl, rs: str) -> tuple[dict[str, Any], dict[str, Any]]:
    req, runner = wait_for(lambda: _pair(kubectl, rs), TIMEOUT, f"a bound pair of {rs}")
    wait_for(lambda: is_ready(kubectl.pod(runner["metadata"]["name"])), TIMEOUT, "runner Ready")
    wait_for(lambda: is_ready(kubectl.pod(req["metadata"]["name"])), TIMEOUT, "requester Ready")
    return req, runner


def _asleep_and_unbound(kubectl: Kubectl, name: str) -> bool:
    pod = kubectl.pod(name)
    if pod is None:
        return False
    meta = pod["metadata"]
    return (
        api.REQUESTER_ANNOTATION not in (meta.get("annotations") or {})
        and (meta.get("labels") or {}).get(api.SLEEPING_LABEL) == "true"
    )


def _owned_by(pods: list[dict[str, Any]], rs: str) -> list[dict[str, Any]]:
    return [p for p in pods if any(o.get("name") == rs for o in p["metadata"].get("ownerReferences") or [])]


def _dpctl(*args: str, path_first: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    if path_first is not None:
        env["PATH"] = os.pathsep.join([str(path_first), str(DPCTL.parent), env.get("PATH", "")])
    return subprocess.run(list(args), capture_output=True, text=True, env=env, timeout=60, check=False)


def _status_json(kubectl: Kubectl, cluster: Any) -> subprocess.CompletedProcess[str]:
    """``dpctl status -o json`` of the test's namespace."""
    return _dpctl(
        str(DPCTL), "status", "-n", kubectl.namespace, "--kubeconfig", str(cluster.kubeconfig), "-o", "json"
    )


def test_status_shows_a_bound_pair_and_a_sleeper(
    cluster: Any,
    kubectl: Kubectl,
    gpu_map: dict[str, dict[str, int]],
    start_controller: Any,
    tmp_path: Path,
) -> None:
    controller = start_controller(2)
    on_node_1 = {api.HOSTNAME_LABEL: "node-1"}
    sleepy, busy = unique_name("sleepy"), unique_name("busy")
    try:
        kubectl.apply(mkrs(sleepy, ServerPatch(extra_env={"ROLE": "sleepy"}), node_selector=on_node_1))
        _, sleeper = _ready_pair(kubectl, sleepy)
        sleeper_name = sleeper["metadata"]["name"]
        kubectl.scale(sleepy, 0)
        wait_for(lambda: _asleep_and_unbound(kubectl, sleeper_name), TIMEOUT, f"{sleeper_name} asleep")
        kubectl.apply(mkrs(busy, ServerPatch(), node_selector=on_node_1))
        req, runner = _ready_pair(kubectl, busy)
        req_name, runner_name = req["metadata"]["name"], runner["metadata"]["name"]
        assert runner_name != sleeper_name

        done = _status_json(kubectl, cluster)
        assert done.returncode == 0, done.stderr
        report = FleetReport.model_validate_json(done.stdout)
        assert report.namespace == kubectl.namespace and report.gpu_map_found and report.nodes_readable
        assert report.errors == ()
        (node,) = [n for n in report.nodes if n.name == "node-1"]
        assert node.found and node.ready and not node.cordoned and node.gpu_map_entry == "ok"
        # Every GPU of the map is listed, with gpu-map's index for each UUID.
        assert {g.uuid: g.index for g in node.gpus} == gpu_map["node-1"]

        (held,) = [g for g in node.gpus if g.requester is not None]
        uuids = (kubectl.pod(req_name) or req)["metadata"]["annotations"][api.ACCELERATORS_ANNOTATION]
        assert held.uuid == uuids
        assert held.requester is not None and (held.requester.name, held.requester.ready) == (req_name, True)
        assert held.runner is not None
        assert (held.runner.name, held.runner.ready, held.runner.sleeping) == (runner_name, True, False)

        (with_sleeper,) = [g for g in node.gpus if sleeper_name in [s.name for s in g.sleepers]]
        (asleep,) = with_sleeper.sleepers
        assert asleep.sleeping and not asleep.terminating and asleep.last_used is not None
        assert asleep.last_used <= report.generated_at

        # As a kubectl plugin, the table; the namespace flag after the subcommand, as kubectl passes it.
        table = _dpctl(
            cluster.kubectl,
            "dpctl",
            "status",
            "--kubeconfig",
            str(cluster.kubeconfig),
            f"--namespace={kubectl.namespace}",
            path_first=PLUGIN_DIR,
        )
        assert table.returncode == 0, table.stderr
        rows = [line.split() for line in table.stdout.splitlines()]
        (gpu_row,) = [r for r in rows if req_name in r]
        assert gpu_row[:3] == ["node-1", str(held.index), held.uuid]
        assert gpu_row[3:8] == [req_name, "true", runner_name, "true", "awake"]
        assert any(sleeper_name + "(" in cell for r in rows for cell in r)

        # Without -n, the kubeconfig context's namespace, like kubectl.
        scoped, ns = tmp_path / "kubeconfig", kubectl.namespace
        scoped.write_text(Path(cluster.kubeconfig).read_text())
        subprocess.run(
            [
                cluster.kubectl,
                "--kubeconfig",
                str(scoped),
                "config",
                "set-context",
                "--current",
                f"--namespace={ns}",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        defaulted = _dpctl(str(DPCTL), "status", "--kubeconfig", str(scoped), "-o", "yaml")
        assert defaulted.returncode == 0, defaulted.stderr
        assert f"namespace: {ns}\n" in defaulted.stdout
    except AssertionError:
        print(dump(kubectl, controller))
        raise


def test_status_shows_a_launcher_its_requester_and_its_instances(
    cluster: Any, kubectl: Kubectl, gpu_map: dict[str, dict[str, int]], start_controller: Any
) -> None:
    """The launcher path with the recipe's example manifests: once the pair is bound and served,
    the report has the launcher, its requester and its awake instance on the requester's GPU."""
    if cluster.state_dir is None:
        pytest.skip("needs the local cluster (the simulated launcher image)")
    cluster.run_kubectl("apply", "--server-side", "-f", str(CHART / "crds"))  # as the chart installs them
    for kind in KINDS:
        cluster.run_kubectl("wait", "--for=condition=Established", f"crd/{kind.crd_name}", "--timeout=60s")
    for name in ("launcher-rbac.yaml", "lc.yaml", "isc.yaml", "requester-rs.yaml"):
        kubectl.run("apply", "-f", str(EXAMPLES / name))
    controller = start_controller(2)  # after the CRDs: it looks for them when it starts
    try:
        req = wait_for(
            lambda: next((p for p in _owned_by(kubectl.pods(), "granite-2b") if is_ready(p)), None),
            TIMEOUT,
            "the example requester Ready",
        )
        req_name = req["metadata"]["name"]
        done = _status_json(kubectl, cluster)
        assert done.returncode == 0, done.stderr
        report = FleetReport.model_validate_json(done.stdout)
        assert report.errors == ()
        (launcher,) = report.launchers
        assert (launcher.launcher_config, launcher.node, launcher.api) == ("vllm-launcher", "node-1", "ok")
        assert launcher.requester is not None and launcher.requester.name == req_name
        assert launcher.instance_id == req["metadata"]["labels"][api.INSTANCE_LABEL]
        (instance,) = launcher.instances
        uuid = req["metadata"]["annotations"][api.ACCELERATORS_ANNOTATION]
        assert (instance.id, instance.isc, instance.port, instance.state, instance.bound) == (
            launcher.instance_id,
            "granite-2b",
            8005,
            "awake",
            True,
        )
        assert instance.gpu_uuids == (uuid,) and instance.gpu_indices == (gpu_map["node-1"][uuid],)
        (held,) = [g for n in report.nodes for g in n.gpus if g.uuid == uuid]
        assert held.runner is not None and held.runner.name == launcher.name
    except AssertionError:
        print(dump(kubectl, controller))
        raise
    finally:
        kubectl.run("delete", "rs", "granite-2b", "--ignore-not-found", check=False)
