"""The launcher-path scenario of ``make bench`` (``--scenario launcher``): cold, warm and hot
actuations through launcher Pods (launcher contract §2.4–§4) on the hollow cluster.

Objects (``bench.workload``): one LauncherConfig (``maxInstances`` 2, the ``*/launcher`` image,
which the simulated kubelet runs as ``dpctl launcher`` with vLLM emulators as its instances),
InferenceServerConfigs ``isc-a`` (port 8005) and ``isc-b`` (port 8006), and one ReplicaSet of
requesters per node and ISC (``l<k>-a``, ``l<k>-b``) on the first ``--launcher-nodes`` nodes,
every GPU of those filled. No populator exists yet,
so no launcher is made in advance: the first round is **cold** (the controller creates a bound
launcher for each requester). Then, each round a measured window:

1. ``launcher_cold_up``: ``l<k>-a`` created: a launcher created per requester (cold);
2. ``launcher_down1``: scaled to 0: routing labels off, instances asleep, launchers unbound;
3. ``launcher_hot_up``: scaled back: each requester binds the launcher whose sleeping instance
   has its instance ID (same ISC, same GPU) and wakes it (hot);
4. ``launcher_down2``;
5. ``launcher_warm_up``: ``l<k>-b`` (the other ISC, another port): no launcher holds that
   instance, each has room (1 of 2 instances, none on port 8006), so a new instance is PUT into
   an unbound launcher beside the sleeping one (warm);
6. ``launcher_down3``;
7. ``launcher_hot2_up``: ``l<k>-a`` again, now beside ``isc-b`` sleepers: hot.

Each up-window's path is checked against the controller's own ``fma_actuation_seconds{path}``
counts (``controller_work`` of the phase: ``fma_actuations_<path>``).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bench import report
from bench.workload import (
    ISC_PORTS,
    inference_server_config,
    isc_replica_set,
    launcher_config,
    launcher_set_name,
)
from dpctl.fma.v1alpha1 import API_VERSION, INFERENCE_SERVER_CONFIG, KINDS, LAUNCHER_CONFIG
from dpctl.kube import REPLICASETS, ApiError, Kube
from dpctl.kube.request import Resource

if TYPE_CHECKING:
    from bench.run import Bench, Phase

ROOT = Path(__file__).resolve().parents[1]
CRD_DIR = ROOT / "deploy" / "helm" / "dpctlr" / "crds"
CRDS = Resource("apiextensions.k8s.io/v1", "customresourcedefinitions", namespaced=False)
ISCS = Resource(API_VERSION, INFERENCE_SERVER_CONFIG.plural, namespaced=True)
LCS = Resource(API_VERSION, LAUNCHER_CONFIG.plural, namespaced=True)
ROLES = Resource("rbac.authorization.k8s.io/v1", "roles", namespaced=True)
ROLEBINDINGS = Resource("rbac.authorization.k8s.io/v1", "rolebindings", namespaced=True)
MAX_INSTANCES = 2
# The up-windows and the path each is meant to take.
UP_PATHS = {
    "launcher_cold_up": "cold",
    "launcher_hot_up": "hot",
    "launcher_warm_up": "warm",
    "launcher_hot2_up": "hot",
}
STEPS = ("create", "wake", "relay")


async def install_crds(kube: Kube, timeout: float = 60.0) -> None:
    """The chart's CRDs (before the controller starts, so that its ISC and LC informers list them)."""
    for path in sorted(CRD_DIR.glob("*.yaml")):
        try:
            await kube.create(CRDS, yaml.safe_load(path.read_text()))
        except ApiError as e:
            if not e.conflict:
                raise
    deadline = time.monotonic() + timeout
    for kind in KINDS:
        while True:
            crd = await kube.get(CRDS, kind.crd_name)
            conditions = (crd.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {kind.crd_name} not Established after {timeout:g} s")
            await asyncio.sleep(0.2)


async def setup(bench: Bench, kube: Kube, namespace: str) -> None:
    """The LauncherConfig, both ISCs, and the notifier sidecar's rights (get and patch its Pod)."""
    await _create(
        kube,
        ROLES,
        namespace,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "launcher-notifier"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]}],
        },
    )
    await _create(
        kube,
        ROLEBINDINGS,
        namespace,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "launcher-notifier"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "launcher-notifier"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
        },
    )
    await _create(kube, LCS, namespace, launcher_config(MAX_INSTANCES))
    for model in ISC_PORTS:
        await _create(kube, ISCS, namespace, inference_server_config(model, bench.timing))


async def _create(kube: Kube, res: Resource, namespace: str, body: dict[str, Any]) -> None:
    try:
        await kube.create(res, body, namespace)
    except ApiError as e:
        if not e.conflict:
            raise


async def _scale(bench: Bench, kube: Kube, namespace: str, replicas: dict[str, int], model: str) -> None:
    """Sets to these sizes, created (with ``model``'s ISC) when new."""

    async def one(name: str, count: int) -> None:
        if bench.replicas.get(name, 0) == count and name in bench.created:
            return
        bench.replicas[name] = count
        if name not in bench.created:
            bench.created.add(name)
            node = int(name[1:].split("-", maxsplit=1)[0])
            await kube.create(REPLICASETS, isc_replica_set(node, model, count, bench.timing), namespace)
            return
        await kube.patch(REPLICASETS, name, {"spec": {"replicas": count}}, namespace, patch_type="merge")

    await asyncio.gather(*(one(name, count) for name, count in replicas.items()))


def _added(bench: Bench) -> dict[str, list[tuple[float, float]]]:
    assert bench.controller is not None
    m = bench.controller.metrics()
    out = {step: report.histogram(m, "dpctl_controller_added_seconds", {"step": step}) for step in STEPS}
    for path in ("cold", "warm", "hot"):
        out[f"fma_{path}"] = _fma(m, path)
    return out


def _fma(m: report.Samples, path: str) -> list[tuple[float, float]]:
    total: dict[float, float] = {}
    for labels, value in m.get("fma_actuation_seconds_bucket", []):
        if labels.get("path") == path:
            total[float(labels["le"])] = total.get(float(labels["le"]), 0.0) + value
    return sorted(total.items())


async def scenario(bench: Bench, kube: Kube, namespace: str) -> dict[str, Any]:
    """The rounds of the module docstring; returns the scenario's own figures (``summary``)."""
    n, g = bench.args.launcher_nodes, bench.args.gpus_per_node
    total = n * g
    await setup(bench, kube, namespace)
    before = _added(bench)
    began = len(bench.phases)
    sets_a = {launcher_set_name(k, "a") for k in range(1, n + 1)}
    sets_b = {launcher_set_name(k, "b") for k in range(1, n + 1)}

    async def up(name: str, model: str) -> None:
        phase = bench.begin(name)
        sets = sets_a if model == "a" else sets_b
        await _scale(bench, kube, namespace, {s: g for s in sets}, model)
        await bench.all_ready(total, name, sets)
        await bench.events_settled()
        bench.end(phase, path=UP_PATHS[name])

    async def down(name: str, sets: set[str]) -> None:
        phase = bench.begin(name)
        released = len(bench.tracker.live_requesters(sets))
        await _scale(bench, kube, namespace, {s: 0 for s in sets}, "")
        await bench.wait(
            lambda: not bench.tracker.existing_requesters(sets) and bench.tracker.launchers_unbound_asleep(),
            f"launcher-path requesters gone and their launchers unbound and asleep ({name})",
        )
        await bench.events_settled()
        bench.end(phase).work["released"] = released

    await up("launcher_cold_up", "a")
    await down("launcher_down1", sets_a)
    await up("launcher_hot_up", "a")
    await down("launcher_down2", sets_a)
    await up("launcher_warm_up", "b")
    await down("launcher_down3", sets_b)
    await up("launcher_hot2_up", "a")
    after = _added(bench)
    out = summarise(bench.phases[began:], before, after, len(bench.tracker.launchers()))
    return {"nodes": n, "gpus_per_node": g, "requesters_per_round": total, **out}


def summarise(
    phases: list[Phase],
    before: dict[str, list[tuple[float, float]]],
    after: dict[str, list[tuple[float, float]]],
    launchers: int,
) -> dict[str, Any]:
    """Per path: end-to-end actuation (the benchmark's watch), the controller's fma_actuation_seconds,
    API writes per actuation (all and Pods only), controller CPU per actuation; per step the
    controller-added latency over the scenario; and what each release (scale-down) cost."""
    by_path: dict[str, list[Phase]] = {}
    for p in phases:
        if p.name in UP_PATHS:
            by_path.setdefault(UP_PATHS[p.name], []).append(p)
    out: dict[str, Any] = {"launchers": launchers, "max_instances": MAX_INSTANCES, "paths": {}}
    for path, ps in by_path.items():
        n = sum(len(v) for p in ps for v in p.actuations.values())
        calls: dict[str, float] = {}
        for p in ps:
            for k, v in p.calls.items():
                calls[k] = calls.get(k, 0.0) + v
        cpu = sum(p.cpu_s for p in ps)
        seen = {
            k: sum(int(p.work.get(f"fma_actuations_{k}", 0)) for p in ps) for k in ("cold", "warm", "hot")
        }
        fma = report.hist_p50_p99(report.bucket_delta(after[f"fma_{path}"], before[f"fma_{path}"]))
        out["paths"][path] = {
            "actuations": n,
            "controller_paths_seen": {k: v for k, v in seen.items() if v},
            "actuation_s": report.p50_p99(
                [x for p in ps for v in p.actuations.values() for x in v], digits=2
            ),
            "fma_actuation_s": {"p50": fma["p50"], "p99": fma["p99"], "count": fma["count"]},
            "api_writes_per_actuation": round(report.writes(calls) / n, 2) if n else None,
            "api_pod_writes_per_actuation": round(report.writes(calls, ["pods"]) / n, 2) if n else None,
            "api_writes": {
                k: int(v) for k, v in sorted(calls.items()) if k.split("/")[0] in report.WRITE_VERBS
            },
            "cpu_ms_per_actuation": round(1000 * cpu / n, 2) if n else None,
            # Writes answered 409/422 (counted in the writes above: they were sent).
            "api_conflicts": int(report.conflicts(calls)),
        }
    ups = [p for ps in by_path.values() for p in ps]
    n_up = sum(len(v) for p in ups for v in p.actuations.values())
    out["cpu_ms_per_actuation"] = round(1000 * sum(p.cpu_s for p in ups) / n_up, 2) if n_up else None
    downs = [p for p in phases if p.name not in UP_PATHS]
    released = int(sum(p.work.get("released", 0) for p in downs))
    down_calls: dict[str, float] = {}
    for p in downs:
        for k, v in p.calls.items():
            down_calls[k] = down_calls.get(k, 0.0) + v
    out["release"] = {
        "releases": released,
        "api_writes": {
            k: int(v) for k, v in sorted(down_calls.items()) if k.split("/")[0] in report.WRITE_VERBS
        },
        "api_writes_per_release": round(report.writes(down_calls) / released, 2) if released else None,
        "api_pod_writes_per_release": round(report.writes(down_calls, ["pods"]) / released, 2)
        if released
        else None,
        "cpu_ms_per_release": round(1000 * sum(p.cpu_s for p in downs) / released, 2) if released else None,
    }
    out["added_latency_ms"] = {
        step: report.hist_p50_p99(report.bucket_delta(after[step], before[step]), scale=1000)
        for step in STEPS
    }
    return out
