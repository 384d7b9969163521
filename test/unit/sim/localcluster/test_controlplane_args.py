"""Command lines and config files of the local control plane and the kubelet, built without running
anything: the flags that make a loopback control plane work (and the traps they avoid) are there."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from dpsim.localcluster import cluster as lc
from dpsim.localcluster import controlplane as cp
from dpsim.localcluster import netns
from dpsim.localcluster.bins import Bins
from dpsim.localcluster.controlplane import ControlPlaneError

BINS = Bins(Path("/opt/k8s/bin"), Path("/opt/etcd/bin"), Path("/opt/helm/bin"))
PORTS = cp.Ports(
    etcd_client=12379, etcd_peer=12380, apiserver=16443, controller_manager=10257, scheduler=10259
)


@pytest.fixture
def layout(tmp_path: Path) -> cp.Layout:
    return cp.Layout(tmp_path / "state")


def flags(argv: list[str]) -> dict[str, str]:
    """--name=value flags as a dict; fails on a repeated flag (pflag would keep only the last)."""
    out: dict[str, str] = {}
    for arg in argv[1:]:
        assert arg.startswith("--") and "=" in arg, f"not --flag=value: {arg}"
        name, _, value = arg[2:].partition("=")
        assert name not in out, f"--{name} given twice"
        out[name] = value
    return out


def all_args(layout: cp.Layout, settings: cp.ControlPlaneSettings) -> dict[str, list[str]]:
    return {
        cp.ETCD: cp.etcd_args(BINS, layout, PORTS, settings),
        cp.APISERVER: cp.apiserver_args(BINS, layout, PORTS, settings),
        cp.CONTROLLER_MANAGER: cp.controller_manager_args(BINS, layout, PORTS, settings),
        cp.SCHEDULER: cp.scheduler_args(BINS, layout, PORTS, settings),
    }


def test_binaries_come_from_bins(layout: cp.Layout) -> None:
    argv = all_args(layout, cp.ControlPlaneSettings())
    assert argv[cp.ETCD][0] == "/opt/etcd/bin/etcd"
    for name in (cp.APISERVER, cp.CONTROLLER_MANAGER, cp.SCHEDULER):
        assert argv[name][0] == f"/opt/k8s/bin/{name}"


def test_etcd(layout: cp.Layout) -> None:
    f = flags(cp.etcd_args(BINS, layout, PORTS, cp.ControlPlaneSettings(etcd_quota_backend_bytes=1 << 30)))
    assert f["listen-client-urls"] == f["advertise-client-urls"] == "http://127.0.0.1:12379"
    assert f["listen-peer-urls"] == f["initial-advertise-peer-urls"] == "http://127.0.0.1:12380"
    assert f["initial-cluster"] == f"{f['name']}=http://127.0.0.1:12380"
    assert f["unsafe-no-fsync"] == "true"
    assert f["quota-backend-bytes"] == str(1 << 30)
    assert f["log-level"] == "warn"
    assert f["data-dir"] == str(layout.etcd_data)


def test_apiserver(layout: cp.Layout) -> None:
    f = flags(cp.apiserver_args(BINS, layout, PORTS, cp.ControlPlaneSettings()))
    p = layout.pki
    assert f["etcd-servers"] == "http://127.0.0.1:12379"
    assert f["secure-port"] == "16443"
    assert f["bind-address"] == "127.0.0.1"
    # The two traps of an offline loopback apiserver.
    assert f["advertise-address"] == "127.0.0.1"
    assert f["endpoint-reconciler-type"] == "none"
    assert f["authorization-mode"] == "Node,RBAC"
    # Admission stays on: nothing default-on (ServiceAccount above all) is disabled.
    assert "disable-admission-plugins" not in f and "admission-control" not in f
    assert f["service-cluster-ip-range"] == "10.0.0.0/24"
    assert f["client-ca-file"] == str(p.ca_crt)
    assert (f["tls-cert-file"], f["tls-private-key-file"]) == (str(p.apiserver_crt), str(p.apiserver_key))
    # TokenRequest works: an issuer, a signing key and the matching public key.
    assert f["service-account-issuer"].startswith("https://")
    assert f["service-account-signing-key-file"] == str(p.sa_key)
    assert f["service-account-key-file"] == str(p.sa_pub)
    assert f["kubelet-client-certificate"] == str(p.kubelet_client_crt)
    assert f["kubelet-client-key"] == str(p.kubelet_client_key)
    assert f["kubelet-certificate-authority"] == str(p.ca_crt)
    assert f["kubelet-preferred-address-types"].startswith("InternalIP")
    assert f["requestheader-client-ca-file"] == str(p.front_proxy_ca_crt)
    assert f["proxy-client-cert-file"] == str(p.front_proxy_client_crt)


def test_controller_manager(layout: cp.Layout) -> None:
    settings = cp.ControlPlaneSettings(
        node_monitor_period=0.5, node_monitor_grace_period=20, node_startup_grace_period=90
    )
    f = flags(cp.controller_manager_args(BINS, layout, PORTS, settings))
    kc = str(layout.controller_manager_kubeconfig)
    assert f["kubeconfig"] == f["authentication-kubeconfig"] == f["authorization-kubeconfig"] == kc
    assert f["use-service-account-credentials"] == "true"
    assert f["controllers"] == "*"
    assert f["leader-elect"] == "false"
    assert f["root-ca-file"] == str(layout.pki.ca_crt)
    assert f["service-account-private-key-file"] == str(layout.pki.sa_key)
    assert f["secure-port"] == "10257"
    assert f["node-monitor-period"] == "500ms"
    assert f["node-monitor-grace-period"] == "20s"
    assert f["node-startup-grace-period"] == "90s"


def test_controller_manager_default_grace_is_upstreams(layout: cp.Layout) -> None:
    f = flags(cp.controller_manager_args(BINS, layout, PORTS, cp.ControlPlaneSettings()))
    assert f["node-monitor-grace-period"] == "50s"


def test_scheduler_and_its_config(layout: cp.Layout) -> None:
    f = flags(cp.scheduler_args(BINS, layout, PORTS, cp.ControlPlaneSettings()))
    assert f["config"] == str(layout.scheduler_config)
    assert f["secure-port"] == "10259"
    cfg = cp.scheduler_config(layout)
    assert cfg["kind"] == "KubeSchedulerConfiguration"
    assert cfg["apiVersion"] == "kubescheduler.config.k8s.io/v1"
    assert cfg["leaderElection"] == {"leaderElect": False}
    assert cfg["clientConnection"]["kubeconfig"] == str(layout.scheduler_kubeconfig)


def test_every_path_is_absolute(layout: cp.Layout) -> None:
    for argv in all_args(layout, cp.ControlPlaneSettings()).values():
        for name, value in flags(argv).items():
            if name.endswith(("-file", "-dir", "kubeconfig", "certificate", "-key", "config")):
                assert Path(value).is_absolute(), f"--{name}={value}"


def test_every_file_is_under_the_state_dir(layout: cp.Layout) -> None:
    """Nothing is written or read outside it (the KCM's flexvolume dir defaults to /usr/libexec)."""
    for argv in all_args(layout, cp.ControlPlaneSettings()).values():
        for name, value in flags(argv).items():
            if value.startswith("/"):
                assert Path(value).is_relative_to(layout.state_dir), f"--{name}={value}"
    assert Path(cp.scheduler_config(layout)["clientConnection"]["kubeconfig"]).is_relative_to(
        layout.state_dir
    )


def test_extra_args_come_last(layout: cp.Layout) -> None:
    settings = cp.ControlPlaneSettings(extra_args={cp.APISERVER: ["--max-requests-inflight=0"]})
    argv = all_args(layout, settings)
    assert argv[cp.APISERVER][-1] == "--max-requests-inflight=0"
    assert "--max-requests-inflight=0" not in argv[cp.CONTROLLER_MANAGER]


def test_verbosity(layout: cp.Layout) -> None:
    argv = all_args(layout, cp.ControlPlaneSettings(verbosity=4))
    for name in (cp.APISERVER, cp.CONTROLLER_MANAGER, cp.SCHEDULER):
        assert flags(argv[name])["v"] == "4"


@pytest.mark.parametrize(
    ("seconds", "expected"), [(5, "5s"), (50.0, "50s"), (0.5, "500ms"), (1.25, "1250ms"), (0, "0s")]
)
def test_go_duration(seconds: float, expected: str) -> None:
    assert cp.go_duration(seconds) == expected


def test_kubeconfig_uses_absolute_paths(layout: cp.Layout) -> None:
    p = layout.pki
    doc = cp.kubeconfig("https://127.0.0.1:16443", p.ca_crt, p.admin_crt, p.admin_key, "dpctl-admin")
    # What kubectl reads; a YAML round trip keeps it intact.
    doc = yaml.safe_load(yaml.safe_dump(doc))
    assert doc["current-context"] == cp.KUBECONFIG_CLUSTER
    cluster = doc["clusters"][0]["cluster"]
    assert cluster == {"server": "https://127.0.0.1:16443", "certificate-authority": str(p.ca_crt)}
    user = doc["users"][0]["user"]
    assert user == {"client-certificate": str(p.admin_crt), "client-key": str(p.admin_key)}
    assert all(Path(v).is_absolute() for v in (*user.values(), cluster["certificate-authority"]))


def test_ports_pick_distinct_free_loopback_ports() -> None:
    ports = cp.Ports.pick()
    values = list(ports.__dict__.values())
    assert len(set(values)) == 5
    for port in values:  # free right now: we can bind each
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_apiserver_listens_where_the_settings_say(layout: cp.Layout) -> None:
    settings = cp.ControlPlaneSettings(apiserver_address="198.19.255.1")
    f = flags(cp.apiserver_args(BINS, layout, PORTS, settings))
    assert (f["bind-address"], f["advertise-address"]) == ("198.19.255.1", "198.19.255.1")
    assert f["etcd-servers"] == "http://127.0.0.1:12379"  # etcd stays on loopback


def kubelet_args(**kw: Any) -> list[str]:
    return lc.kubelet_args(
        "/venv/bin/python",
        kubeconfig=Path("/s/admin.kubeconfig"),
        state_dir=Path("/s"),
        nodes=2,
        gpus=4,
        gpu_product="NVIDIA-L40S",
        ca_cert=Path("/s/pki/ca.crt"),
        ca_key=Path("/s/pki/ca.key"),
        **kw,
    )


def test_kubelet_args_in_a_network_namespace() -> None:
    net = netns.PodNetwork(block=2)
    argv = kubelet_args(address_block=2, network=net, host_netns=Path("/proc/7/ns/net"))
    assert argv[:3] == ["nsenter", "--net=/run/netns/dpctl-b2", "--"]
    pairs = dict(zip(argv[7::2], argv[8::2], strict=True))
    assert (pairs["--network"], pairs["--host-netns"], pairs["--address-block"]) == (
        "netns",
        "/proc/7/ns/net",
        "2",
    )


def test_without_a_namespace_auto_falls_back_to_loopback_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(netns, "unavailable", lambda: "not running as root")
    cluster = lc.LocalCluster(tmp_path, BINS, nodes=2, network="auto")
    with pytest.warns(RuntimeWarning, match="not running as root"):
        cluster._reserve_network()
    try:
        assert cluster.network is None
        assert cluster.network_note == "pods on loopback (not running as root): Services get no endpoints"
        assert cluster.control_plane.settings.apiserver_address == "127.0.0.1"
    finally:
        cluster.stop()
    with pytest.raises(ControlPlaneError, match=r"no network namespace.*not running as root"):
        lc.LocalCluster(tmp_path, BINS, nodes=2, network="netns")._reserve_network()


def test_network_choice() -> None:
    assert lc.network_choice(None) == lc.DEFAULT_NETWORK
    assert lc.network_choice("loopback") == "loopback"
    with pytest.raises(ControlPlaneError, match=lc.NETWORK_ENV):
        lc.network_choice("host")


def test_kubelet_args() -> None:
    argv = kubelet_args(kubelet_port=20250)
    assert argv[:4] == ["/venv/bin/python", "-m", "dpctl", "sim-kubelet"]
    pairs = dict(zip(argv[4::2], argv[5::2], strict=True))
    assert pairs == {
        "--kubeconfig": "/s/admin.kubeconfig",
        "--state-dir": "/s",
        "--nodes": "2",
        "--gpus": "4",
        "--gpu-product": "NVIDIA-L40S",
        "--ca-cert": "/s/pki/ca.crt",
        "--ca-key": "/s/pki/ca.key",
        "--kubelet-port": "20250",
    }


def node(name: str, ready: str, gpus: str | None) -> dict[str, object]:
    alloc = {"cpu": "8"} | ({lc.GPU_RESOURCE: gpus} if gpus is not None else {})
    return {
        "metadata": {"name": name},
        "status": {"conditions": [{"type": "Ready", "status": ready}], "allocatable": alloc},
    }


def test_ready_gpu_nodes() -> None:
    nodes = {
        "items": [
            node("a", "True", "4"),
            node("b", "False", "4"),
            node("c", "True", None),
            node("d", "True", "2"),
            node("e", "True", "4"),
        ]
    }
    assert lc.ready_gpu_nodes(nodes, 4) == ["a", "e"]


def test_node_viewer_cluster_role() -> None:
    role = lc.node_viewer_cluster_role()
    assert role["metadata"]["name"] == "dpctl-node-viewer"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}]


def test_env_sh_quotes_paths() -> None:
    text = lc.env_sh(Path("/a b/admin.kubeconfig"), [Path("/k8s/bin"), Path("/helm/bin")])
    assert "export KUBECONFIG='/a b/admin.kubeconfig'\n" in text
    assert 'export PATH=/k8s/bin:/helm/bin:"$PATH"\n' in text


def test_is_local_kubeconfig(tmp_path: Path) -> None:
    local = tmp_path / "local"
    local.mkdir()
    (local / "admin.kubeconfig").write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
    (local / "cluster.json").write_text(json.dumps({"kind": cp.CLUSTER_MARKER_KIND}))
    assert lc.is_local_kubeconfig(local / "admin.kubeconfig")
    foreign = tmp_path / "foreign.kubeconfig"
    foreign.write_text(yaml.safe_dump({"clusters": [{"name": "prod", "cluster": {}}]}))
    assert not lc.is_local_kubeconfig(foreign)
    assert not lc.is_local_kubeconfig(tmp_path / "absent")
