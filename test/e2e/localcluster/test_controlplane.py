"""The control plane with the real binaries: it comes up ready, RBAC and admission are on,
the KCM works, the fault helpers work, and teardown leaves no process behind.

Also measures (printed, and kept as junit properties) the time to Ready and the idle memory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from dpsim.localcluster import kubehttp
from dpsim.localcluster.bins import Bins, read_versions
from dpsim.localcluster.controlplane import COMPONENTS, ControlPlane, Ports
from dpsim.localcluster.procs import proc_start_ticks
from helpers import wait_for

pytestmark = pytest.mark.e2e

IDLE_SECONDS = float(os.environ.get("DPCTL_E2E_IDLE_SECONDS") or 30)


@pytest.fixture(scope="module")
def control_plane(bins: Bins, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    cp = ControlPlane(tmp_path_factory.mktemp("cp"), bins)
    try:
        cp.start()
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="module")
def admin(control_plane: ControlPlane) -> kubehttp.KubeHTTP:
    return control_plane.admin()


def new_namespace(admin: kubehttp.KubeHTTP) -> str:
    name = f"cp-{uuid.uuid4().hex[:8]}"
    admin.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


def has_default_sa(admin: kubehttp.KubeHTTP, ns: str) -> bool:
    return admin.request("GET", f"/api/v1/namespaces/{ns}/serviceaccounts/default").ok


def rss_bytes(pids: list[int]) -> int:
    return sum(psutil.Process(p).memory_info().rss for p in pids)


def test_all_components_run_and_answer(control_plane: ControlPlane, admin: kubehttp.KubeHTTP) -> None:
    assert set(control_plane.pids()) == set(COMPONENTS)
    assert admin.get("/readyz") == "ok"
    verbose = admin.get("/readyz?verbose")
    assert "[+]poststarthook/rbac/bootstrap-roles ok" in verbose
    assert "[+]etcd ok" in verbose
    ctx = kubehttp.tls_context(control_plane.ca_file)  # their serving certs chain to our CA
    for port in (control_plane.ports.controller_manager, control_plane.ports.scheduler):
        assert kubehttp.request(f"https://127.0.0.1:{port}/healthz", context=ctx).body == "ok"
    assert kubehttp.request(f"{control_plane.etcd_url}/health").body["health"] == "true"
    marker = json.loads(control_plane.layout.cluster_json.read_text())
    assert marker["server"] == control_plane.server


def test_kubectl_version_is_the_pinned_one(control_plane: ControlPlane, bins: Bins) -> None:
    want = read_versions()["K8S_VERSION"]
    out = subprocess.run(
        [str(bins.kubectl), "--kubeconfig", str(control_plane.kubeconfig), "version", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    versions = json.loads(out.stdout)
    assert versions["clientVersion"]["gitVersion"] == want
    assert versions["serverVersion"]["gitVersion"] == want


def test_namespaces_get_their_default_service_account(admin: kubehttp.KubeHTTP) -> None:
    ns = new_namespace(admin)
    wait_for(lambda: has_default_sa(admin, ns), 30, f"ServiceAccount {ns}/default")
    wait_for(
        lambda: admin.request("GET", f"/api/v1/namespaces/{ns}/configmaps/kube-root-ca.crt").ok,
        30,
        f"ConfigMap {ns}/kube-root-ca.crt",
    )


def test_rbac_applies_to_a_token_from_the_token_request_api(
    control_plane: ControlPlane, admin: kubehttp.KubeHTTP
) -> None:
    ns = new_namespace(admin)
    base = f"/api/v1/namespaces/{ns}"
    admin.create(f"{base}/serviceaccounts", {"metadata": {"name": "reader"}})
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}"
    admin.create(
        f"{rbac}/roles",
        {
            "metadata": {"name": "cm-reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        },
    )
    admin.create(
        f"{rbac}/rolebindings",
        {
            "metadata": {"name": "reader-cm"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}],
        },
    )
    tr = admin.create(
        f"{base}/serviceaccounts/reader/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 600},
        },
    )
    sa = kubehttp.KubeHTTP.with_token(control_plane.server, control_plane.ca_file, tr["status"]["token"])

    who = sa.create(
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    assert who["status"]["userInfo"]["username"] == f"system:serviceaccount:{ns}:reader"
    assert sa.request("GET", "/api/v1/secrets").status == 403  # cluster-wide: not granted
    assert sa.request("GET", f"{base}/secrets").status == 403
    assert sa.request("GET", f"{base}/pods").status == 403
    # What the RoleBinding grants; RBAC may take a moment to see a fresh binding.
    wait_for(lambda: sa.request("GET", f"{base}/configmaps").ok, 10, "the RoleBinding to take effect")
    assert sa.request("GET", "/api/v1/namespaces/default/configmaps").status == 403  # only its namespace
    bad = kubehttp.KubeHTTP.with_token(control_plane.server, control_plane.ca_file, "not-a-token")
    assert bad.request("GET", f"{base}/configmaps").status == 401


def test_compact_etcd_drops_history(control_plane: ControlPlane, admin: kubehttp.KubeHTTP) -> None:
    new_namespace(admin)  # makes sure there is history before the current revision
    revision = control_plane.compact_etcd()
    assert revision >= 2
    old = kubehttp.request(
        f"{control_plane.etcd_url}/v3/kv/range", "POST", {"key": "AA==", "revision": str(revision - 1)}
    )
    assert "compacted" in json.dumps(old.body)
    assert control_plane.etcd_revision() >= revision


def test_expire_resource_versions_gives_410(control_plane: ControlPlane, admin: kubehttp.KubeHTTP) -> None:
    ns = new_namespace(admin)
    cm = admin.create(f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "c"}, "data": {"k": "v"}})
    old_rv = cm["metadata"]["resourceVersion"]
    base = f"/api/v1/namespaces/{ns}/configmaps"
    admin.create(base, {"metadata": {"name": "later"}})  # so old_rv is below the compacted revision
    assert control_plane.expire_resource_versions() > int(old_rv)
    watch = admin.request("GET", f"{base}?watch=1&resourceVersion={old_rv}&timeoutSeconds=5", timeout=15)
    event = json.loads(watch.body.splitlines()[0]) if isinstance(watch.body, str) else watch.body
    assert event["type"] == "ERROR" and event["object"]["code"] == 410, event
    listed = admin.request("GET", f"{base}?resourceVersion={old_rv}&resourceVersionMatch=Exact")
    assert listed.status == 410, listed.body
    assert admin.request("GET", base).ok  # a fresh list works: clients recover by re-listing


def test_restart_apiserver(control_plane: ControlPlane, admin: kubehttp.KubeHTTP) -> None:
    before = control_plane.pids()
    port = control_plane.ports.apiserver
    control_plane.restart_apiserver()
    after = control_plane.pids()
    assert after["kube-apiserver"] != before["kube-apiserver"]
    assert proc_start_ticks(before["kube-apiserver"]) is None
    assert {k: v for k, v in after.items() if k != "kube-apiserver"} == {
        k: v for k, v in before.items() if k != "kube-apiserver"
    }
    assert control_plane.ports.apiserver == port
    assert admin.get("/readyz") == "ok"
    # The KCM reconnected by itself: it still makes ServiceAccounts.
    ns = new_namespace(admin)
    wait_for(lambda: has_default_sa(admin, ns), 60, f"ServiceAccount {ns}/default after the restart")


def test_measure_startup_and_idle_memory(
    bins: Bins,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A fresh control plane of its own: time to Ready, then RSS of all four at idle."""
    began = time.monotonic()
    with ControlPlane(tmp_path / "measure", bins).start() as cp:
        ready = time.monotonic() - began
        pids = list(cp.pids().values())
        at_ready = rss_bytes(pids)
        # "Idle" = after the KCM's start-up burst of controllers settles. A measurement window, not
        # synchronisation: nothing is awaited, we only let time pass before reading RSS again.
        time.sleep(IDLE_SECONDS)
        idle = {name: psutil.Process(pid).memory_info().rss for name, pid in cp.pids().items()}
    total = sum(idle.values())
    record_property("control_plane_ready_seconds", round(ready, 2))
    record_property("control_plane_idle_rss_mib", round(total / 2**20))
    with capsys.disabled():
        per = ", ".join(f"{n} {v / 2**20:.0f}" for n, v in idle.items())
        print(
            f"\ncontrol plane: Ready in {ready:.1f}s (start() says {cp.ready_seconds:.1f}s); "
            f"RSS at Ready {at_ready / 2**20:.0f} MiB, after {IDLE_SECONDS:g} s idle {total / 2**20:.0f} MiB ({per})",
            file=sys.stderr,
        )
    assert ready < 120
    assert total < 3 * 2**30


def test_start_picks_new_ports_when_one_is_taken(
    bins: Bins, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_pick = Ports.pick
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        picks = iter([dataclasses.replace(real_pick(), apiserver=taken)])
        monkeypatch.setattr(Ports, "pick", staticmethod(lambda: next(picks, None) or real_pick()))
        with ControlPlane(tmp_path / "retry", bins).start() as cp:
            assert cp.ports.apiserver != taken
            assert cp.admin().get("/readyz") == "ok"
        log = (tmp_path / "retry" / "logs" / "kube-apiserver.log").read_text()
        assert "address already in use" in log


def test_teardown_leaves_no_process(control_plane: ControlPlane) -> None:
    """Runs last in this module: stops the shared control plane and checks every pid is gone."""
    pids = control_plane.pids()
    ticks = {name: proc_start_ticks(pid) for name, pid in pids.items()}
    assert all(t is not None for t in ticks.values())
    control_plane.stop()
    for name, pid in pids.items():
        assert proc_start_ticks(pid) != ticks[name], f"{name} (pid {pid}) survived stop()"
    assert list(control_plane.layout.pids.iterdir()) == []
    state = str(control_plane.state_dir)
    leftovers = [
        p.info
        for p in psutil.process_iter(["pid", "cmdline"])
        if any(state in a for a in p.info["cmdline"] or [])
    ]
    assert leftovers == []
    control_plane.stop()  # idempotent
