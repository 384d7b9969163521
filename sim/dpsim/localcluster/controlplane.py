"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler as child processes of the caller.

Owns their command lines (pure functions, unit-tested), the files they need under ``state_dir``
(PKI, kubeconfigs, scheduler config, etcd data), the start order with a readiness wait per step,
and the teardown. The API is synchronous: start and stop are a handful of blocking waits and an
``async`` caller can run them in ``asyncio.to_thread`` (safe: see :class:`procs._Spawner`).

``state_dir`` layout::

    pki/                  CA, certificates, service-account keys      (kept across restarts)
    admin.kubeconfig      cluster-admin (O=system:masters), absolute paths to the PEMs
    kubeconfigs/          the KCM's and the scheduler's own users
    kube-scheduler.yaml   KubeSchedulerConfiguration (leader election off)
    etcd/                 etcd's data                                  (wiped at each start)
    logs/<component>.log  each component's stdout and stderr
    pids/<component>      "pid start_ticks" of each running process, for cleanup after a crash
    cluster.json          marker + endpoints, so tools can tell a dpctl local cluster
"""

from __future__ import annotations

import atexit
import base64
import dataclasses
import json
import os
import shutil
import socket
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from dpsim.localcluster import kubehttp
from dpsim.localcluster.bins import Bins
from dpsim.localcluster.pki import PKIPaths, ensure_pki, write_file
from dpsim.localcluster.procs import Child, WaitTimeout, poll_until, stop_children

ETCD = "etcd"
APISERVER = "kube-apiserver"
CONTROLLER_MANAGER = "kube-controller-manager"
SCHEDULER = "kube-scheduler"
COMPONENTS = (ETCD, APISERVER, CONTROLLER_MANAGER, SCHEDULER)

CLUSTER_MARKER_KIND = "dpctl-local-cluster"
KUBECONFIG_CLUSTER = "dpctl-local"
LOOPBACK = "127.0.0.1"


class ControlPlaneError(RuntimeError):
    """A component failed to start or died; the message carries the end of its log."""


@dataclass(frozen=True)
class Ports:
    """The loopback TCP ports of one control plane."""

    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int

    @classmethod
    def pick(cls) -> Ports:
        """Free ports chosen by the kernel (bind to port 0). All sockets stay open until every port
        is chosen, so the five are distinct; another process could still take one before the
        component binds it, which start() reports as that component exiting early."""
        with ExitStack() as stack:
            ports = []
            for _ in range(5):
                s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                s.bind((LOOPBACK, 0))
                ports.append(s.getsockname()[1])
        return cls(*ports)


@dataclass(frozen=True)
class ControlPlaneSettings:
    """What a caller may tune. Durations are seconds."""

    # Node lifecycle: how often the KCM looks at nodes, and how long a silent node stays Ready.
    # 50 s grace is the upstream default since 1.32; fault tests shorten it.
    node_monitor_period: float = 5.0
    node_monitor_grace_period: float = 50.0
    node_startup_grace_period: float = 60.0
    etcd_quota_backend_bytes: int = 2 * 1024**3
    service_cluster_ip_range: str = "10.0.0.0/24"
    service_account_issuer: str = "https://kubernetes.default.svc.cluster.local"
    # Where the API server listens and what its kubeconfigs name; the rest stays on loopback.
    # A local cluster with a network namespace sets its veth pair's host end (see ``netns``).
    apiserver_address: str = LOOPBACK
    # klog -v for the three Kubernetes components; 0 keeps idle logs nearly silent.
    verbosity: int = 0
    # Appended after our flags, per component name; pflag lets a later flag win.
    extra_args: Mapping[str, Sequence[str]] = field(default_factory=dict)
    start_timeout: float = 180.0
    # Per teardown step (clients, apiserver, etcd) before SIGKILL.
    stop_timeout: float = 15.0


@dataclass(frozen=True)
class Layout:
    """The paths of one control plane under its state dir (see the module docstring)."""

    state_dir: Path

    @property
    def pki(self) -> PKIPaths:
        return PKIPaths(self.state_dir / "pki")

    @property
    def etcd_data(self) -> Path:
        return self.state_dir / "etcd"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pids(self) -> Path:
        return self.state_dir / "pids"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "admin.kubeconfig"

    @property
    def controller_manager_kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfigs" / "kube-controller-manager.kubeconfig"

    @property
    def scheduler_kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfigs" / "kube-scheduler.kubeconfig"

    @property
    def scheduler_config(self) -> Path:
        return self.state_dir / "kube-scheduler.yaml"

    @property
    def apiserver_cert_dir(self) -> Path:
        return self.state_dir / "apiserver"

    @property
    def flex_volume_dir(self) -> Path:
        return self.state_dir / "kube-controller-manager" / "flexvolume"

    @property
    def cluster_json(self) -> Path:
        return self.state_dir / "cluster.json"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"


def go_duration(seconds: float) -> str:
    """Seconds as a Go duration flag value: 5 -> "5s", 0.5 -> "500ms"."""
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _extra(settings: ControlPlaneSettings, component: str) -> list[str]:
    return list(settings.extra_args.get(component, ()))


def etcd_args(bins: Bins, layout: Layout, ports: Ports, settings: ControlPlaneSettings) -> list[str]:
    peer = f"http://{LOOPBACK}:{ports.etcd_peer}"
    client = f"http://{LOOPBACK}:{ports.etcd_client}"
    return [
        str(bins.etcd),
        "--name=dpctl",
        f"--data-dir={layout.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        # An explicit peer port (not etcd's 2380 default) so two local clusters can run side by side.
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=dpctl={peer}",
        # Throwaway test data: skipping fsync makes every API write much faster.
        "--unsafe-no-fsync=true",
        f"--quota-backend-bytes={settings.etcd_quota_backend_bytes}",
        "--log-level=warn",
        *_extra(settings, ETCD),
    ]


def apiserver_args(bins: Bins, layout: Layout, ports: Ports, settings: ControlPlaneSettings) -> list[str]:
    p = layout.pki
    return [
        str(bins.kube_apiserver),
        f"--etcd-servers=http://{LOOPBACK}:{ports.etcd_client}",
        f"--bind-address={settings.apiserver_address}",
        # Without it the apiserver looks for a default route to pick an address and, on a machine
        # with no network, exits ("Unable to find suitable network address").
        f"--advertise-address={settings.apiserver_address}",
        # The default `lease` reconciler would write 127.0.0.1 into Endpoints default/kubernetes,
        # which validation rejects as loopback, over and over.
        "--endpoint-reconciler-type=none",
        f"--secure-port={ports.apiserver}",
        f"--cert-dir={layout.apiserver_cert_dir}",
        f"--tls-cert-file={p.apiserver_crt}",
        f"--tls-private-key-file={p.apiserver_key}",
        f"--client-ca-file={p.ca_crt}",
        "--authorization-mode=Node,RBAC",
        # Added to the default-on set (NamespaceLifecycle, ServiceAccount, LimitRanger, ...), as a
        # production cluster does.
        "--enable-admission-plugins=NodeRestriction",
        "--allow-privileged=true",
        f"--service-cluster-ip-range={settings.service_cluster_ip_range}",
        f"--service-account-issuer={settings.service_account_issuer}",
        f"--service-account-key-file={p.sa_pub}",
        f"--service-account-signing-key-file={p.sa_key}",
        f"--kubelet-client-certificate={p.kubelet_client_crt}",
        f"--kubelet-client-key={p.kubelet_client_key}",
        # The simulated kubelet serves a certificate from our CA for its InternalIP; verify it.
        f"--kubelet-certificate-authority={p.ca_crt}",
        # Simulated node names do not resolve; their 127.x InternalIPs do.
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        f"--requestheader-client-ca-file={p.front_proxy_ca_crt}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={p.front_proxy_client_crt}",
        f"--proxy-client-key-file={p.front_proxy_client_key}",
        f"--v={settings.verbosity}",
        *_extra(settings, APISERVER),
    ]


def controller_manager_args(
    bins: Bins, layout: Layout, ports: Ports, settings: ControlPlaneSettings
) -> list[str]:
    p = layout.pki
    kc = layout.controller_manager_kubeconfig
    return [
        str(bins.kube_controller_manager),
        f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
        f"--bind-address={LOOPBACK}",
        f"--secure-port={ports.controller_manager}",
        f"--tls-cert-file={p.controller_manager_serving_crt}",
        f"--tls-private-key-file={p.controller_manager_serving_key}",
        "--leader-elect=false",
        # Each controller acts as its own ServiceAccount, so RBAC bites controllers as in production.
        "--use-service-account-credentials=true",
        "--controllers=*",
        f"--root-ca-file={p.ca_crt}",
        f"--service-account-private-key-file={p.sa_key}",
        f"--cluster-signing-cert-file={p.ca_crt}",
        f"--cluster-signing-key-file={p.ca_key}",
        f"--node-monitor-period={go_duration(settings.node_monitor_period)}",
        f"--node-monitor-grace-period={go_duration(settings.node_monitor_grace_period)}",
        f"--node-startup-grace-period={go_duration(settings.node_startup_grace_period)}",
        # Its default is under /usr/libexec, which the KCM would otherwise create on the host.
        f"--flex-volume-plugin-dir={layout.flex_volume_dir}",
        f"--v={settings.verbosity}",
        *_extra(settings, CONTROLLER_MANAGER),
    ]


def scheduler_args(bins: Bins, layout: Layout, ports: Ports, settings: ControlPlaneSettings) -> list[str]:
    p = layout.pki
    kc = layout.scheduler_kubeconfig
    return [
        str(bins.kube_scheduler),
        f"--config={layout.scheduler_config}",
        f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
        f"--bind-address={LOOPBACK}",
        f"--secure-port={ports.scheduler}",
        f"--tls-cert-file={p.scheduler_serving_crt}",
        f"--tls-private-key-file={p.scheduler_serving_key}",
        f"--v={settings.verbosity}",
        *_extra(settings, SCHEDULER),
    ]


def scheduler_config(layout: Layout) -> dict[str, Any]:
    return {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": str(layout.scheduler_kubeconfig)},
        # One scheduler, no HA: electing a leader only adds a lease write loop and a start delay.
        "leaderElection": {"leaderElect": False},
    }


def kubeconfig(server: str, ca: Path, cert: Path, key: Path, user: str) -> dict[str, Any]:
    """A kubeconfig with absolute paths, so it works from any working directory."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": KUBECONFIG_CLUSTER, "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": KUBECONFIG_CLUSTER, "context": {"cluster": KUBECONFIG_CLUSTER, "user": user}}],
        "current-context": KUBECONFIG_CLUSTER,
    }


ArgsFn = Callable[[Bins, Layout, Ports, ControlPlaneSettings], list[str]]


def _component_env(component: str) -> dict[str, str]:
    env = dict(os.environ)
    if component == ETCD:
        # etcd reads any ETCD_<FLAG> variable as a flag; a stray one from the user's shell must not.
        env = {k: v for k, v in env.items() if not k.startswith("ETCD_")}
    return env


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler under ``state_dir``.

    Usage: ``with ControlPlane(dir, bins).start() as cp: ...`` or call :meth:`start` and
    :meth:`stop`. After start: :attr:`server`, :attr:`kubeconfig`, :attr:`ports`,
    :attr:`etcd_url`, :attr:`ca_file`, :attr:`ready_seconds`.
    """

    def __init__(
        self,
        state_dir: Path | str,
        bins: Bins,
        settings: ControlPlaneSettings | None = None,
        *,
        ports: Ports | None = None,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.bins = bins
        self.settings = settings or ControlPlaneSettings()
        self.layout = Layout(self.state_dir)
        self._fixed_ports = ports
        self._ports: Ports | None = None
        self._children: dict[str, Child] = {}
        self.ready_seconds: float | None = None
        self._atexit_registered = False

    # --- endpoints ----------------------------------------------------------------------------

    @property
    def ports(self) -> Ports:
        if self._ports is None:
            raise RuntimeError("the control plane has not been started")
        return self._ports

    @property
    def server(self) -> str:
        return f"https://{self.settings.apiserver_address}:{self.ports.apiserver}"

    @property
    def etcd_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.etcd_client}"

    @property
    def kubeconfig(self) -> Path:
        return self.layout.kubeconfig

    @property
    def ca_file(self) -> Path:
        return self.layout.pki.ca_crt

    @property
    def pki(self) -> PKIPaths:
        return self.layout.pki

    def admin(self) -> kubehttp.KubeHTTP:
        """A client for the API server as the cluster admin."""
        p = self.layout.pki
        return kubehttp.KubeHTTP.with_cert(self.server, p.ca_crt, p.admin_crt, p.admin_key)

    def pids(self) -> dict[str, int]:
        return {name: c.pid for name, c in self._children.items()}

    def children(self) -> list[Child]:
        return list(self._children.values())

    def dead(self) -> list[Child]:
        """Components that were started and have exited since."""
        return [c for c in self._children.values() if not c.running()]

    # --- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, timeout: float | None = None) -> ControlPlane:
        """Start all four in order, each ready before the next; on any failure stop what started."""
        if self._children:
            raise RuntimeError("already started")
        timeout = self.settings.start_timeout if timeout is None else timeout
        began = time.monotonic()
        deadline = began + timeout
        if not self._atexit_registered:
            # A normal interpreter exit without stop() still shuts the components down gracefully.
            atexit.register(self.stop)
            self._atexit_registered = True
        attempts = 1 if self._fixed_ports else 3
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(deadline)
                break
            except ControlPlaneError as e:
                self._stop_children()
                # Another process may take a port between Ports.pick() and the bind: pick again.
                if attempt == attempts or "address already in use" not in str(e):
                    self.stop()
                    raise
            except BaseException:
                self.stop()
                raise
        self.ready_seconds = time.monotonic() - began
        self._write_marker()
        return self

    def _start_once(self, deadline: float) -> None:
        self._prepare()
        self._start_etcd(deadline)
        self._start_apiserver(deadline)
        self._spawn(CONTROLLER_MANAGER, controller_manager_args)
        self._spawn(SCHEDULER, scheduler_args)
        ctx = kubehttp.tls_context(self.ca_file)
        self._wait_http(
            CONTROLLER_MANAGER, LOOPBACK, self.ports.controller_manager, "/healthz", ctx, deadline
        )
        self._wait_http(SCHEDULER, LOOPBACK, self.ports.scheduler, "/healthz", ctx, deadline)
        # The ServiceAccount controller making `default` proves the KCM is up, authorized and
        # talking to the apiserver; pods need it (ServiceAccount admission) anyway.
        self._wait_api_object(
            "/api/v1/namespaces/default/serviceaccounts/default",
            "ServiceAccount default/default",
            deadline,
            watch=CONTROLLER_MANAGER,
        )

    def stop(self) -> None:
        """Stop in reverse start order: clients of the apiserver, then the apiserver, then etcd.

        Idempotent. Each step waits ``settings.stop_timeout`` and then SIGKILLs; nothing is left.
        """
        self._stop_children()
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False

    def _stop_children(self) -> None:
        for step in ([SCHEDULER, CONTROLLER_MANAGER], [APISERVER], [ETCD]):
            group = [self._children.pop(n) for n in step if n in self._children]
            if group:
                stop_children(group, self.settings.stop_timeout)

    def restart_apiserver(self, timeout: float | None = None) -> None:
        """Stop the apiserver (SIGTERM, like a rolling restart) and start it on the same port.

        Clients see their connections and watches drop; the KCM and scheduler reconnect by themselves.
        """
        timeout = self.settings.start_timeout if timeout is None else timeout
        child = self._children.pop(APISERVER, None)
        if child is not None:
            stop_children([child], self.settings.stop_timeout)
        self._start_apiserver(time.monotonic() + timeout)
        self._write_marker()  # the new pid

    def etcd_revision(self, timeout: float = kubehttp.DEFAULT_TIMEOUT) -> int:
        """etcd's current revision, read through its HTTP gRPC gateway (no etcdctl needed)."""
        body = {"key": base64.b64encode(b"\0").decode(), "limit": 1}
        resp = kubehttp.request(f"{self.etcd_url}/v3/kv/range", "POST", body, timeout=timeout)
        if not resp.ok:
            raise ControlPlaneError(f"etcd range: HTTP {resp.status}: {resp.body}")
        return int(resp.body["header"]["revision"])

    def compact_etcd(self, timeout: float = kubehttp.DEFAULT_TIMEOUT) -> int:
        """Compact etcd's history up to the current revision; returns that revision.

        Requests from an older resourceVersion that *reach etcd* then fail with 410 Gone. Measured
        on 1.36: the apiserver's watch cache still serves watches and exact-RV lists from before the
        compaction, so this alone does not expire clients; :meth:`expire_resource_versions` does.
        """
        revision = self.etcd_revision(timeout)
        body = {"revision": str(revision), "physical": True}
        resp = kubehttp.request(f"{self.etcd_url}/v3/kv/compaction", "POST", body, timeout=timeout)
        if not resp.ok:
            raise ControlPlaneError(f"etcd compaction at {revision}: HTTP {resp.status}: {resp.body}")
        return revision

    def expire_resource_versions(self, timeout: float | None = None) -> int:
        """Make every resourceVersion issued so far too old, as after a long partition.

        Compacts etcd, then restarts the apiserver so its watch cache starts over from now: a watch
        from an older resourceVersion then gets an ``ERROR`` event with code 410 (Expired), a list
        with ``resourceVersionMatch=Exact`` from one gets HTTP 410. Returns the compacted revision.
        """
        revision = self.compact_etcd()
        self.restart_apiserver(timeout)
        return revision

    # --- internals ----------------------------------------------------------------------------

    def _prepare(self) -> None:
        layout = self.layout
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ensure_pki(layout.pki.dir)
        # Fresh data each start: objects from an earlier run (nodes, pods) would only confuse tests.
        shutil.rmtree(layout.etcd_data, ignore_errors=True)
        layout.etcd_data.mkdir(mode=0o700)
        self._ports = self._fixed_ports or Ports.pick()
        p = layout.pki
        docs = {
            layout.kubeconfig: kubeconfig(self.server, p.ca_crt, p.admin_crt, p.admin_key, "dpctl-admin"),
            layout.controller_manager_kubeconfig: kubeconfig(
                self.server,
                p.ca_crt,
                p.controller_manager_crt,
                p.controller_manager_key,
                "system:kube-controller-manager",
            ),
            layout.scheduler_kubeconfig: kubeconfig(
                self.server, p.ca_crt, p.scheduler_crt, p.scheduler_key, "system:kube-scheduler"
            ),
            layout.scheduler_config: scheduler_config(layout),
        }
        for path, doc in docs.items():
            write_file(path, yaml.safe_dump(doc, sort_keys=False).encode(), private=True)

    def _spawn(self, name: str, args_fn: ArgsFn) -> Child:
        argv: list[str] = args_fn(self.bins, self.layout, self.ports, self.settings)
        child = Child(
            name, argv, log_path=self.layout.log(name), pid_dir=self.layout.pids, env=_component_env(name)
        )
        self._children[name] = child
        return child

    def _alive_or_raise(self, name: str) -> None:
        child = self._children[name]
        if not child.running():
            raise ControlPlaneError(child.exit_message())

    def _start_etcd(self, deadline: float) -> None:
        self._spawn(ETCD, etcd_args)
        self._wait_http(ETCD, LOOPBACK, self.ports.etcd_client, "/health", None, deadline)

    def _start_apiserver(self, deadline: float) -> None:
        self._spawn(APISERVER, apiserver_args)
        p = self.layout.pki
        ctx = kubehttp.tls_context(p.ca_crt, p.admin_crt, p.admin_key)
        self._wait_http(
            APISERVER, self.settings.apiserver_address, self.ports.apiserver, "/readyz", ctx, deadline
        )

    def _wait_http(
        self, name: str, host: str, port: int, path: str, ctx: ssl.SSLContext | None, deadline: float
    ) -> None:
        """Poll ``path`` on ``host:port`` until HTTP 200 (and etcd's health says true)."""
        scheme = "https" if ctx else "http"
        url = f"{scheme}://{host}:{port}{path}"
        last = ["no answer yet"]

        def check() -> bool | None:
            self._alive_or_raise(name)
            try:
                resp = kubehttp.request(url, context=ctx, timeout=5.0)
            except OSError as e:
                last[0] = f"{type(e).__name__}: {e}"
                return None
            last[0] = f"HTTP {resp.status}: {str(resp.body)[:500]}"
            if resp.status != 200:
                return None
            if name == ETCD and not (isinstance(resp.body, dict) and resp.body.get("health") == "true"):
                return None
            return True

        self._wait(check, deadline, f"{name} {url}", lambda: last[0], name)

    def _wait_api_object(self, path: str, what: str, deadline: float, *, watch: str) -> None:
        admin = self.admin()
        last = ["not found yet"]

        def check() -> bool | None:
            self._alive_or_raise(watch)
            self._alive_or_raise(APISERVER)
            try:
                resp = admin.request("GET", path, timeout=5.0)
            except OSError as e:
                last[0] = f"{type(e).__name__}: {e}"
                return None
            last[0] = f"HTTP {resp.status}"
            return True if resp.ok else None

        self._wait(check, deadline, what, lambda: last[0], watch)

    def _wait(
        self, check: Callable[[], bool | None], deadline: float, what: str, last: Callable[[], str], name: str
    ) -> None:
        try:
            poll_until(check, max(0.0, deadline - time.monotonic()), what, describe=last)
        except WaitTimeout as e:
            tail = self._children[name].log_tail()
            raise ControlPlaneError(f"{e}\nlast log lines of {name}:\n{tail}") from None

    def _write_marker(self) -> None:
        doc = {
            "kind": CLUSTER_MARKER_KIND,
            "server": self.server,
            "etcd": self.etcd_url,
            "kubeconfig": str(self.kubeconfig),
            "ports": dataclasses.asdict(self.ports),
            "pids": self.pids(),
            "owner_pid": os.getpid(),
        }
        write_file(self.layout.cluster_json, (json.dumps(doc, indent=2) + "\n").encode())
