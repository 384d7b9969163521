"""The launcher-path scenario's objects, its tracking of launcher Pods, and its per-path figures."""

from __future__ import annotations

from bench import launcher
from bench.observe import PodTracker
from bench.run import Phase
from bench.workload import (
    ISC_PORTS,
    LAUNCHER_CONFIG_NAME,
    Timing,
    inference_server_config,
    isc_replica_set,
    launcher_config,
)
from dpctl import api
from dpctl.fma.v1alpha1 import InferenceServerConfigSpec, LauncherConfigSpec
from dpctl.podbuild.launcher import launcher_for_node, launcher_template

TIMING = Timing(3.0, 0.2, 0.1)


def test_the_objects_are_valid_and_each_isc_has_its_own_port() -> None:
    lc = launcher_config(2)
    LauncherConfigSpec.model_validate(lc["spec"])
    pod = launcher_for_node(
        launcher_template({**lc, "metadata": {**lc["metadata"], "uid": "u1", "namespace": "bench"}}), "node-1"
    )
    assert pod["metadata"]["labels"]["bench"] == "dual"  # the benchmark's watch sees launchers
    ports = set()
    for model in ISC_PORTS:
        isc = inference_server_config(model, TIMING)
        spec = InferenceServerConfigSpec.model_validate(isc["spec"])
        assert spec.launcher_config_name == LAUNCHER_CONFIG_NAME
        assert "--port" not in spec.model_server_config.options
        ports.add(spec.model_server_config.port)
    assert len(ports) == len(ISC_PORTS)
    rs = isc_replica_set(1, "b", 2, TIMING)
    template = rs["spec"]["template"]
    assert template["metadata"]["annotations"][api.INFERENCE_SERVER_CONFIG_ANNOTATION] == "isc-b"
    assert api.ORIGINAL.server_patch not in template["metadata"]["annotations"]
    assert template["spec"]["nodeSelector"] == {api.HOSTNAME_LABEL: "node-1"}


def _pod(name: str, uid: str, labels: dict[str, str], annotations: dict[str, str]) -> dict[str, object]:
    return {"metadata": {"name": name, "uid": uid, "labels": labels, "annotations": annotations}}


def test_the_tracker_follows_launcher_path_requesters_and_launchers() -> None:
    t = PodTracker()
    t._seen(_pod("l1-a-x", "r1", {"bench-set": "l1-a"}, {api.INFERENCE_SERVER_CONFIG_ANNOTATION: "isc-a"}))
    launcher_labels = {api.LAUNCHER_CONFIG_NAME_LABEL: "lc-bench", api.SLEEPING_LABEL: "false"}
    t._seen(_pod("launcher-1", "p1", launcher_labels, {api.REQUESTER_ANNOTATION: "r1 l1-a-x"}))
    assert [r.set for r in t.live_requesters({"l1-a"})] == ["l1-a"]
    assert [r.bound_to for r in t.launchers()] == ["r1"]
    assert not t.launchers_unbound_asleep()
    assert t.sleepers() == 0  # launchers are not the direct path's sleepers
    t._seen(_pod("launcher-1", "p1", {**launcher_labels, api.SLEEPING_LABEL: "true"}, {}))
    assert t.launchers_unbound_asleep()


def _phase(name: str, n: int, calls: dict[str, float], cpu_s: float, path: str) -> Phase:
    p = Phase(name, 0.0, 1.0, cpu_s=cpu_s, calls=calls)
    p.actuations = {path: [1.0] * n} if n else {}
    p.work = {f"fma_actuations_{path}": float(n)} if n else {"released": 4.0}
    return p


def test_writes_and_cpu_are_per_path_and_releases_apart() -> None:
    empty = {k: [(1.0, 0.0), (float("inf"), 0.0)] for k in ("create", "wake", "relay")}
    empty.update({f"fma_{p}": [(1.0, 0.0), (float("inf"), 0.0)] for p in ("cold", "warm", "hot")})
    after = {**empty, "fma_hot": [(1.0, 8.0), (float("inf"), 8.0)]}
    phases = [
        _phase("launcher_hot_up", 4, {"patch/pods/200": 12, "create/events/201": 8}, 0.1, "hot"),
        _phase("launcher_down2", 0, {"patch/pods/200": 12, "create/events/201": 4}, 0.12, ""),
        _phase(
            "launcher_hot2_up",
            4,
            {"patch/pods/200": 12, "create/events/201": 8, "get/pods/200": 9},
            0.1,
            "hot",
        ),
        _phase("launcher_warm_up", 4, {"patch/pods/200": 12, "patch/pods/422": 2}, 0.2, "warm"),
    ]
    out = launcher.summarise(phases, empty, after, launchers=4)
    hot = out["paths"]["hot"]
    assert (hot["actuations"], hot["api_writes_per_actuation"], hot["api_pod_writes_per_actuation"]) == (
        8,
        5.0,
        3.0,
    )
    assert hot["cpu_ms_per_actuation"] == 25.0
    assert hot["controller_paths_seen"] == {"hot": 8}
    assert hot["fma_actuation_s"]["count"] == 8
    assert out["paths"]["warm"]["api_writes_per_actuation"] == 3.5  # the 422 counts: a write sent
    assert out["release"]["releases"] == 4
    assert out["release"]["api_writes_per_release"] == 4.0
    assert out["cpu_ms_per_actuation"] == round(1000 * 0.4 / 12, 2)
