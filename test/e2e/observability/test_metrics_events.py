"""What an operator sees of one cold and one hot actuation: ``/metrics``, Events and ``/readyz``.

One controller process (``--metrics-port``, bound on 127.0.0.1) runs as a ServiceAccount with the
chart's rights, except that at first it may not read ConfigMaps. That holds its ``gpu-map``
cache unsynced for as long as the test likes, so "not ready before the caches synced" is checked
on a state the test controls, not on a race it hopes to win: from the first moment the port
answers, ``/readyz`` says 503 naming the ``gpu-map`` cache, ``/healthz`` says 200 (a controller
waiting for RBAC must not be restarted), and the log has no "Caches synced" line. Then the right
is granted and ``/readyz`` turns 200; every probe that was made after "Caches synced" was
logged answered 200, and the line follows the first 200 within seconds.

Then the recipe's Example 7 flow (requester pinned to one Node; ReplicaSet scaled 1 → 0 → 1, so
the new requester gets the same GPU and the sleeping runner is woken) and, after each step, the
metrics and Events it must have produced: exactly one actuation observed per path, binds, wakes
and sleeps counted once, the population gauges right, the workqueue, informer, API and HTTP
series present and counting; Events ``CreatedRunner`` and ``WokeSleeper`` on the requesters and
``Unbound`` on the runner, reported by ``dual-pods-controller``.

Last, a controller restarted in the middle of a cold actuation (runner created, not yet ready)
must not observe an actuation it did not do, though it is the one that relays the readiness.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from dpctl import api
from dpctl.api import LogMsg
from dpctl.clients.inference import PURPOSE_SLEEP, PURPOSE_WAKE_UP
from dpctl.clients.requester import PURPOSE_ACCELERATORS, PURPOSE_BECOME_READY
from e2e.dualpods.conftest import ControllerProcess, dump
from e2e.recipe import Kubectl, ServerPatch, bound_runner_of, is_ready, mkrs, requesters_of, unique_name
from helpers import wait_for

from .conftest import (
    COMPONENT,
    LISTEN_HOST,
    Samples,
    controller_events,
    get,
    scrape,
    total,
    value,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

TIMEOUT = 120
SA = "dpctl-observed"
NODE_VIEWER = "dpctl-node-viewer"
SYNCED = "Caches synced"
NODE = "node-1"


def _apply(kubectl: Kubectl, *objs: dict[str, Any]) -> None:
    kubectl.run("apply", "-f", "-", input=yaml.safe_dump_all(objs))


def _service_account_kubeconfig(cluster: Any, kubectl: Kubectl, path: Path) -> Path:
    """A kubeconfig for the ServiceAccount ``SA`` (a TokenRequest token), as a Pod would have."""
    ns = kubectl.namespace
    token = kubectl.run("create", "token", SA, "--duration=2h").strip()
    cfg = json.loads(
        cluster.run_kubectl("config", "view", "--raw", "--minify", "--flatten", "-o", "json").stdout
    )
    c = cfg["clusters"][0]["cluster"]
    cluster_entry: dict[str, Any] = {"server": c["server"]}
    if "certificate-authority-data" in c:
        cluster_entry["certificate-authority-data"] = c["certificate-authority-data"]
    else:
        cluster_entry["certificate-authority-data"] = base64.b64encode(
            Path(c["certificate-authority"]).read_bytes()
        ).decode()
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster_entry}],
                "users": [{"name": SA, "user": {"token": token}}],
                "contexts": [{"name": SA, "context": {"cluster": "c", "user": SA, "namespace": ns}}],
                "current-context": SA,
            }
        )
    )
    return path


def _grant_all_but_configmaps(cluster: Any, kubectl: Kubectl) -> str:
    """The chart's Role and Node binding for ``SA``, without ConfigMaps; the ClusterRoleBinding's name."""
    ns = kubectl.namespace
    if cluster.run_kubectl("get", "clusterrole", NODE_VIEWER, check=False).returncode != 0:
        cluster.run_kubectl("create", "clusterrole", NODE_VIEWER, "--verb=get,list,watch", "--resource=nodes")
    crb = f"{ns}-{SA}"
    _apply(
        kubectl,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SA}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": SA},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["pods"],
                    "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
                },
                {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
            ],
        },
        _binding("RoleBinding", SA, "Role", SA, ns),
    )
    cluster.run_kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(_binding("ClusterRoleBinding", crb, "ClusterRole", NODE_VIEWER, ns)),
    )
    return crb


def _grant_configmaps(kubectl: Kubectl) -> None:
    _apply(
        kubectl,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": f"{SA}-configmaps"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}],
        },
        _binding("RoleBinding", f"{SA}-configmaps", "Role", f"{SA}-configmaps", kubectl.namespace),
    )


def _binding(kind: str, name: str, role_kind: str, role: str, ns: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": ns}],
    }


def _gpu_holders_elsewhere(cluster: Any, ns: str, node: str) -> list[str]:
    """Pods of other namespaces holding GPUs of ``node`` (an earlier test's, still terminating)."""
    out = cluster.run_kubectl(
        "get", "pods", "-A", f"--field-selector=spec.nodeName={node}", "-o", "json"
    ).stdout
    return [
        f"{p['metadata']['namespace']}/{p['metadata']['name']}"
        for p in json.loads(out)["items"]
        if p["metadata"]["namespace"] != ns
        and any(
            api.GPU_RESOURCE in ((c.get("resources") or {}).get("limits") or {})
            for c in p["spec"]["containers"]
        )
    ]


def _pair(kubectl: Kubectl, rs: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    pods = kubectl.pods()
    reqs = [r for r in requesters_of(pods, rs) if not r["metadata"].get("deletionTimestamp")]
    if len(reqs) != 1:
        return None
    runner = bound_runner_of(pods, reqs[0])
    return (dict(reqs[0]), dict(runner)) if runner is not None else None


def _counts(s: Samples) -> dict[str, float]:
    """The dual-pods series the flow moves, by short name."""
    return {
        "cold": value(s, "dpctl_actuation_seconds_count", path="cold"),
        "hot": value(s, "dpctl_actuation_seconds_count", path="hot"),
        "binds": value(s, "dpctl_binds_total"),
        "wakes": value(s, "dpctl_wakes_total"),
        "sleeps": value(s, "dpctl_sleeps_total"),
        "evictions": value(s, "dpctl_sleeper_evictions_total"),
        "runner_deletions": total(s, "dpctl_runner_deletions_total"),
        "status_errors": total(s, "dpctl_status_errors_total"),
        "requesters": value(s, "dpctl_requesters"),
        "bound": value(s, "dpctl_runners_bound"),
        "sleeping": value(s, "dpctl_runners_sleeping"),
    }


def _settled(port: int, want: dict[str, float]) -> dict[str, float]:
    """Wait until the scraped counts are exactly ``want`` (they only move forward), then return them."""
    last: dict[str, float] = {}

    def check() -> bool:
        nonlocal last
        last = _counts(scrape(port))
        return last == want

    try:
        wait_for(check, 60, f"metrics {want}")
    except AssertionError as e:
        raise AssertionError(f"{e}\nlast scraped: {last}") from None
    return last


def _event(kubectl: Kubectl, reason: str, about: dict[str, Any]) -> dict[str, Any]:
    found: list[dict[str, Any]] = wait_for(
        lambda: controller_events(kubectl, reason, about),
        60,
        f"a {reason} Event about {about['metadata']['name']}",
    )
    assert len(found) == 1, found
    ev = found[0]
    assert ev["involvedObject"]["name"] == about["metadata"]["name"]
    assert ev["involvedObject"]["kind"] == "Pod"
    assert ev["type"] == "Normal"
    assert ev["reportingComponent"] == COMPONENT
    assert ev["source"]["component"] == COMPONENT
    return ev


def test_readyz_metrics_and_events_of_a_cold_then_a_hot_actuation(
    cluster: Any,
    kubectl: Kubectl,
    gpu_map: dict[str, dict[str, int]],
    ledger: Any,
    start_controller: Any,
    metrics_port: int,
    tmp_path: Path,
) -> None:
    crb = _grant_all_but_configmaps(cluster, kubectl)
    sa_kubeconfig = _service_account_kubeconfig(cluster, kubectl, tmp_path / "sa.kubeconfig")
    controller: ControllerProcess | None = None
    base = f"http://{LISTEN_HOST}:{metrics_port}"
    try:
        controller = start_controller(2, f"--metrics-port={metrics_port}", f"--kubeconfig={sa_kubeconfig}")
        proc = controller

        # ---- /readyz: 503 from the first answer while a cache cannot sync (held by RBAC)
        probes: list[tuple[float, bool, int]] = []  # (time, synced logged before the probe, status)

        def probe() -> tuple[int, str] | None:
            logged = SYNCED in proc.log()
            answer = get(f"{base}/readyz")
            if answer is not None:
                probes.append((time.monotonic(), logged, answer[0]))
            assert proc.proc is not None and proc.proc.poll() is None, "the controller exited"
            return answer

        first = wait_for(probe, 60, "the metrics port to answer")
        assert first[0] == 503 and "gpu-map" in first[1], first

        def refused_twice() -> bool:
            probe()
            refused = value(
                scrape(metrics_port),
                "dpctl_api_request_duration_seconds_count",
                verb="list",
                resource="configmaps",
                code="403",
            )
            return refused >= 2

        wait_for(refused_twice, 60, "two refused lists of the gpu-map ConfigMap")
        assert get(f"{base}/healthz") == (200, "ok")  # waiting for RBAC is not a reason to restart
        held = list(probes)
        assert all(status == 503 for _, _, status in held), held
        assert SYNCED not in proc.log()
        assert "caches not synced: gpu-map" in (get(f"{base}/readyz") or (0, ""))[1]

        _grant_configmaps(kubectl)
        wait_for(lambda: (probe() or (0, ""))[0] == 200, 90, "/readyz 200 once the gpu-map cache syncs")
        wait_for(lambda: SYNCED in proc.log(), 30, f"{SYNCED!r} logged after the first 200")
        flips = [i for i in range(1, len(probes)) if probes[i][2] != probes[i - 1][2]]
        assert len(flips) == 1, f"/readyz went 503 → 200 more than once: {probes}"
        # A probe made after the line was logged never answered 503.
        assert not [p for p in probes if p[1] and p[2] != 200], probes

        # ---- cold actuation
        # Example 7 relies on the device plugin giving the next requester on the Node the GPU
        # just freed (the lowest free one): no other GPU of the Node may come free meanwhile.
        wait_for(
            lambda: not _gpu_holders_elsewhere(cluster, kubectl.namespace, NODE),
            TIMEOUT,
            f"no other namespace's Pods holding GPUs of {NODE}",
        )
        rs = unique_name()
        kubectl.apply(mkrs(rs, ServerPatch(), node_selector={api.HOSTNAME_LABEL: NODE}))
        req1, runner = wait_for(lambda: _pair(kubectl, rs), TIMEOUT, "a requester and its bound runner")
        wait_for(lambda: is_ready(kubectl.pod(req1["metadata"]["name"])), TIMEOUT, "the requester Ready")
        cold = _settled(
            metrics_port,
            {
                "cold": 1,
                "hot": 0,
                "binds": 0,
                "wakes": 0,
                "sleeps": 0,
                "evictions": 0,
                "runner_deletions": 0,
                "status_errors": 0,
                "requesters": 1,
                "bound": 1,
                "sleeping": 0,
            },
        )
        assert cold["cold"] == 1
        _event(kubectl, "CreatedRunner", req1)

        # ---- scale to 0: the runner is put to sleep and unbound
        kubectl.scale(rs, 0)
        wait_for(lambda: kubectl.pod(req1["metadata"]["name"]) is None, TIMEOUT, "the requester gone")
        _settled(
            metrics_port,
            {**cold, "sleeps": 1, "requesters": 0, "bound": 0, "sleeping": 1},
        )
        _event(kubectl, "Unbound", runner)

        # ---- hot actuation: the new requester gets the same GPU; the sleeper is woken
        kubectl.scale(rs, 1)
        req2, runner2 = wait_for(lambda: _pair(kubectl, rs), TIMEOUT, "the new requester bound")
        assert req2["metadata"]["uid"] != req1["metadata"]["uid"]
        gpus = [
            (kubectl.pod(r["metadata"]["name"]) or r)["metadata"]["annotations"].get(
                api.ACCELERATORS_ANNOTATION
            )
            for r in (req1, req2)
        ]
        assert runner2["metadata"]["uid"] == runner["metadata"]["uid"], f"a cold start; GPUs: {gpus}"
        wait_for(lambda: is_ready(kubectl.pod(req2["metadata"]["name"])), TIMEOUT, "the new requester Ready")
        _settled(
            metrics_port,
            {
                **cold,
                "hot": 1,
                "binds": 1,
                "wakes": 1,
                "sleeps": 1,
                "requesters": 1,
                "bound": 1,
                "sleeping": 0,
            },
        )
        woke = _event(kubectl, "WokeSleeper", req2)
        assert runner["metadata"]["name"] in woke["message"]
        assert not controller_events(kubectl, "CreatedRunner", req2)

        # ---- the generic series are there and counting
        s = scrape(metrics_port)
        for path in ("cold", "hot"):
            assert value(s, "dpctl_actuation_seconds_sum", path=path) > 0
            assert value(s, "dpctl_actuation_seconds_bucket", path=path, le="+Inf") == 1
        assert value(s, "workqueue_adds_total", name="dualpods") > 0
        assert value(s, "workqueue_work_duration_seconds_count", name="dualpods") > 0
        assert value(s, "workqueue_queue_duration_seconds_count", name="dualpods") > 0
        assert value(s, "workqueue_depth", name="dualpods") == 0
        for informer in ("pods", "gpu-map", "nodes"):
            assert value(s, "informer_list_duration_seconds_count", informer=informer) >= 1, informer
        assert total(s, "informer_events_total", informer="pods") > 0
        api_calls = "dpctl_api_request_duration_seconds_count"
        assert value(s, api_calls, verb="create", resource="pods", code="201") == 1  # one runner, ever
        assert value(s, api_calls, verb="patch", resource="pods", code="200") > 0
        assert value(s, api_calls, verb="list", resource="pods", code="200") >= 1
        assert value(s, api_calls, verb="create", resource="events", code="201") >= 3
        http_calls = "dpctl_http_request_duration_seconds_count"
        for purpose, at_least in (
            (PURPOSE_ACCELERATORS, 2),  # once per requester
            (PURPOSE_BECOME_READY, 2),
            (PURPOSE_SLEEP, 1),
            (PURPOSE_WAKE_UP, 1),
        ):
            assert value(s, http_calls, purpose=purpose, code="200") >= at_least, purpose
        assert ledger.violations() == []
    except AssertionError:
        print(dump(kubectl, controller))
        raise
    finally:
        cluster.run_kubectl("delete", "clusterrolebinding", crb, "--ignore-not-found", check=False)


def test_a_controller_restarted_mid_actuation_observes_nothing(
    kubectl: Kubectl, gpu_map: dict[str, dict[str, int]], start_controller: Any, metrics_port: int
) -> None:
    """The actuation histogram counts what this process did: a controller restarted after the
    runner was created, before the readiness was relayed, finds a bound pair (all its soft state
    gone) and relays readiness, but observes no actuation; nor does it count a bind or a wake."""
    controller = start_controller(2, f"--metrics-port={metrics_port}")
    try:
        rs = unique_name()
        # A slow model load keeps the runner unready across the restart.
        kubectl.apply(
            mkrs(rs, ServerPatch(startup_delay_s=8.0), node_selector={api.HOSTNAME_LABEL: "node-2"})
        )
        req, runner = wait_for(lambda: _pair(kubectl, rs), TIMEOUT, "the runner created")
        assert controller.count(LogMsg.RELAYED_READINESS) == 0, "the runner got ready before the restart"
        controller.restart()
        wait_for(lambda: controller.count(SYNCED) == 2, 60, "the restarted controller's caches synced")
        wait_for(lambda: is_ready(kubectl.pod(req["metadata"]["name"])), TIMEOUT, "the requester Ready")
        s = scrape(metrics_port)
        relayed_by_restarted = controller.log().split(SYNCED)[-1].count(LogMsg.RELAYED_READINESS)
        print(f"readiness relayed by the restarted controller: {relayed_by_restarted}")
        assert relayed_by_restarted == 1, "the runner got ready before the restarted controller saw it"
        assert _counts(s) == {
            "cold": 0,
            "hot": 0,
            "binds": 0,
            "wakes": 0,
            "sleeps": 0,
            "evictions": 0,
            "runner_deletions": 0,
            "status_errors": 0,
            "requesters": 1,
            "bound": 1,
            "sleeping": 0,
        }
        assert (
            value(s, "dpctl_api_request_duration_seconds_count", verb="create", resource="pods", code="201")
            == 0
        )
        assert (kubectl.pod(runner["metadata"]["name"]) or {}).get("metadata", {}).get("uid") == runner[
            "metadata"
        ]["uid"]
    except AssertionError:
        print(dump(kubectl, controller))
        raise
