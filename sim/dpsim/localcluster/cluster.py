"""The whole local cluster: a :class:`ControlPlane` plus the simulated kubelet, and what e2e needs
created in it before tests run.

Owns the definition of "Ready" (control plane ready, and N nodes Ready with ``nvidia.com/gpu``
allocatable), the kubelet subprocess's command line, the choice of network (the cluster's own
network namespace, see ``netns``, or the host's loopback), the cluster-scoped setup (the
Node-viewer ClusterRole the controller's chart binds), ``<state_dir>/env.sh``, and how a
kubeconfig is recognised as belonging to a dpctl local cluster.
"""

from __future__ import annotations

import dataclasses
import fcntl
import importlib.util
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final

import yaml

from dpctl.kube import objects
from dpsim.kubelet.ips import LOOPBACK, NETNS, AddressPlan
from dpsim.localcluster import netns
from dpsim.localcluster.bins import Bins
from dpsim.localcluster.controlplane import (
    CLUSTER_MARKER_KIND,
    KUBECONFIG_CLUSTER,
    ControlPlane,
    ControlPlaneError,
    ControlPlaneSettings,
)
from dpsim.localcluster.pki import write_file
from dpsim.localcluster.procs import Child, WaitTimeout, poll_until, stop_children
from dpsim.pythonpath import with_our_packages

KUBELET = "sim-kubelet"
KUBELET_MODULE = "dpsim.kubelet.main"
GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_GPU_PRODUCT = "NVIDIA-L40S"
# The recipe's NodeViewClusterRole: get/list/watch on Nodes, bound by the controller's chart.
NODE_VIEWER_CLUSTER_ROLE = "dpctl-node-viewer"
# "netns": the cluster's own network namespace or fail; "loopback": the host's loopback; "auto":
# the namespace where it can be made, else loopback with a warning saying why.
NETWORK_ENV: Final = "DPCTL_CLUSTER_NETWORK"
NETWORKS: Final = ("auto", "netns", "loopback")
DEFAULT_NETWORK: Final = "auto"


def network_choice(value: str | None) -> str:
    """The network a cluster asks for: ``value`` (the setting or ``$DPCTL_CLUSTER_NETWORK``), or
    the default when unset."""
    choice = value or DEFAULT_NETWORK
    if choice not in NETWORKS:
        raise ControlPlaneError(f"{NETWORK_ENV} must be one of {', '.join(NETWORKS)}, not {choice!r}")
    return choice


def kubelet_available() -> bool:
    """Whether this checkout has the simulated kubelet (written separately from the control plane)."""
    try:
        return importlib.util.find_spec(KUBELET_MODULE) is not None
    except ModuleNotFoundError:
        return False


def kubelet_args(
    python: str,
    *,
    kubeconfig: Path,
    state_dir: Path,
    nodes: int,
    gpus: int,
    gpu_product: str,
    ca_cert: Path,
    ca_key: Path,
    kubelet_port: int | None = None,
    address_block: int = 0,
    network: netns.PodNetwork | None = None,
    host_netns: Path | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The kubelet's command line; with ``network``, run inside that namespace."""
    argv = [
        python,
        "-m",
        "dpctl",
        "sim-kubelet",
        "--kubeconfig",
        str(kubeconfig),
        "--state-dir",
        str(state_dir),
        "--nodes",
        str(nodes),
        "--gpus",
        str(gpus),
        "--gpu-product",
        gpu_product,
        "--ca-cert",
        str(ca_cert),
        "--ca-key",
        str(ca_key),
        *(["--kubelet-port", str(kubelet_port)] if kubelet_port else []),
        *(["--address-block", str(address_block)] if address_block else []),
        *(["--network", NETNS.name] if network else []),
        *(["--host-netns", str(host_netns)] if network and host_netns else []),
        *extra,
    ]
    return network.enter(argv) if network else argv


def node_viewer_cluster_role() -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": NODE_VIEWER_CLUSTER_ROLE, "labels": {"app.kubernetes.io/managed-by": "dpctl"}},
        "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}],
    }


def ready_gpu_nodes(node_list: dict[str, Any], gpus: int) -> list[str]:
    """Names of the nodes that are Ready and offer exactly ``gpus`` allocatable GPUs."""
    out = []
    for node in node_list.get("items", []):
        status = node.get("status", {})
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", [])
        )
        if ready and str(status.get("allocatable", {}).get(GPU_RESOURCE)) == str(gpus):
            out.append(objects.name(node))
    return out


def is_local_kubeconfig(path: Path) -> bool:
    """Whether ``path`` is the admin kubeconfig of a dpctl local cluster (running or not)."""
    try:
        marker = json.loads((path.resolve().parent / "cluster.json").read_text())
        if marker.get("kind") == CLUSTER_MARKER_KIND:
            return True
    except (OSError, ValueError):
        pass
    try:
        cfg = yaml.safe_load(path.read_text())
        return any(c.get("name") == KUBECONFIG_CLUSTER for c in cfg.get("clusters", []))
    except (OSError, yaml.YAMLError, AttributeError):
        return False


def env_sh(kubeconfig: Path, path_dirs: Sequence[Path]) -> str:
    """Shell lines that point kubectl and helm at the cluster: ``. env.sh`` or ``eval "$(...)"``."""
    path = ":".join(shlex.quote(str(d)) for d in path_dirs)
    return (
        "# Written by dpctl local-cluster. Use: . <this file>\n"
        f"export KUBECONFIG={shlex.quote(str(kubeconfig))}\n"
        f'export PATH={path}:"$PATH"\n'
    )


class LocalCluster:
    """The control plane plus ``nodes`` simulated GPU nodes, each with ``gpus`` GPUs.

    ``kubelet=False`` (or ``nodes=0``) runs the control plane alone. Like :class:`ControlPlane`,
    synchronous; the kubelet is a child process with the same no-orphan guarantees.
    """

    def __init__(
        self,
        state_dir: Path | str,
        bins: Bins,
        *,
        nodes: int = 2,
        gpus: int = 4,
        gpu_product: str = DEFAULT_GPU_PRODUCT,
        kubelet: bool = True,
        kubelet_extra_args: Sequence[str] = (),
        python: str = sys.executable,
        settings: ControlPlaneSettings | None = None,
        kubelet_stop_timeout: float = 45.0,
        kubelet_port: int | None = None,
        network: str | None = None,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.bins = bins
        self.nodes = nodes
        self.gpus = gpus
        self.gpu_product = gpu_product
        self.with_kubelet = kubelet and nodes > 0
        self.kubelet_extra_args = list(kubelet_extra_args)
        self.python = python
        self.control_plane = ControlPlane(self.state_dir, bins, settings)
        # Longer than the control plane's: the kubelet first stops every container with its grace
        # period (capped by its --max-grace, 30 s by default).
        self.kubelet_stop_timeout = kubelet_stop_timeout
        # Not 10250: every local cluster's node N has the same 127.x address, so a second cluster on
        # the machine (`up` plus a pytest session) would fail to bind its kubelet endpoints.
        self.kubelet_port = kubelet_port
        self.kubelet: Child | None = None
        self.ready_seconds: float | None = None
        self._address_blocks: AddressBlocks | None = None
        self.network_choice = network_choice(network or os.environ.get(NETWORK_ENV))
        # The namespace in use (None: loopback), and a sentence saying which network and why.
        self.network: netns.PodNetwork | None = None
        self.network_note = ""

    @property
    def kubeconfig(self) -> Path:
        return self.control_plane.kubeconfig

    @property
    def env_file(self) -> Path:
        return self.state_dir / "env.sh"

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, timeout: float = 300.0) -> LocalCluster:
        """Start everything and wait until Ready; on failure nothing is left running."""
        if self.with_kubelet and not kubelet_available():
            raise ControlPlaneError(
                f"the simulated kubelet ({KUBELET_MODULE}) is not in this checkout; run with nodes=0"
            )
        began = time.monotonic()
        try:
            if self.with_kubelet:
                self._reserve_network()
            self.control_plane.start(timeout)
            self._setup()
            if self.with_kubelet:
                self._start_kubelet(began + timeout - time.monotonic())
        except BaseException:
            self.stop()
            raise
        self.ready_seconds = time.monotonic() - began
        write_file(self.env_file, env_sh(self.kubeconfig, self.bins.path_dirs()).encode())
        return self

    def stop(self) -> None:
        """Kubelet first (it is an API client), then the control plane. Idempotent."""
        if self.kubelet is not None:
            stop_children([self.kubelet], self.kubelet_stop_timeout)
            self.kubelet = None
        self.control_plane.stop()
        # After the API server, which listens on the veth pair; before the block's lock goes.
        if self.network is not None:
            netns.remove(self.network)
            self.network = None
        if self._address_blocks is not None:
            self._address_blocks.release()
            self._address_blocks = None

    def dead(self) -> list[Child]:
        """Processes that were started and have exited since."""
        dead = self.control_plane.dead()
        if self.kubelet is not None and not self.kubelet.running():
            dead.append(self.kubelet)
        return dead

    def children(self) -> list[Child]:
        return self.control_plane.children() + ([self.kubelet] if self.kubelet else [])

    def pids(self) -> dict[str, int]:
        return {c.name: c.pid for c in self.children()}

    def _setup(self) -> None:
        self.control_plane.admin().create(
            "/apis/rbac.authorization.k8s.io/v1/clusterroles", node_viewer_cluster_role(), exist_ok=True
        )

    def _reserve_network(self) -> None:
        """Address blocks, and the namespace unless loopback is asked for or it cannot be made."""
        made = self._make_netns() if self.network_choice != "loopback" else "asked for"
        if not isinstance(made, str):
            self._address_blocks, net = made
            self.network = net
            settings = dataclasses.replace(self.control_plane.settings, apiserver_address=net.host_address)
            self.control_plane.settings = settings
            self.network_note = (
                f"pods in network namespace {net.name} ({', '.join(net.networks())}), "
                f"API server on {net.host_address}"
            )
            return
        if self.network_choice == "netns":
            raise ControlPlaneError(f"no network namespace for the local cluster: {made}")
        self._address_blocks = AddressBlocks.reserve(-(-self.nodes // LOOPBACK.nodes_per_block), LOOPBACK)
        self.network_note = f"pods on loopback ({made}): Services get no endpoints"
        if self.network_choice == "auto":
            warnings.warn(
                f"local cluster: no network namespace, {self.network_note}", RuntimeWarning, stacklevel=3
            )

    def _make_netns(self) -> tuple[AddressBlocks, netns.PodNetwork] | str:
        """The namespace and the blocks it routes, or why there is none."""
        why = netns.unavailable()
        if why is not None:
            return why
        if self.nodes > NETNS.max_nodes:
            return f"{self.nodes} nodes, more than the namespace's range holds ({NETNS.max_nodes})"
        try:
            blocks = AddressBlocks.reserve(-(-self.nodes // NETNS.nodes_per_block), NETNS)
        except ControlPlaneError as e:
            return str(e)
        net = netns.PodNetwork(blocks.first, len(blocks))
        try:
            netns.create(net)
        except (netns.NetnsError, OSError, subprocess.SubprocessError) as e:
            blocks.release()
            return str(e)
        return blocks, net

    def _start_kubelet(self, timeout: float) -> None:
        cp = self.control_plane
        assert self._address_blocks is not None
        argv = kubelet_args(
            self.python,
            kubeconfig=cp.kubeconfig,
            state_dir=self.state_dir,
            nodes=self.nodes,
            gpus=self.gpus,
            gpu_product=self.gpu_product,
            ca_cert=cp.pki.ca_crt,
            ca_key=cp.pki.ca_key,
            kubelet_port=self.kubelet_port or _free_port(),
            address_block=self._address_blocks.first,
            network=self.network,
            # This process outlives the kubelet (PDEATHSIG), so its namespace path stays valid.
            host_netns=Path(f"/proc/{os.getpid()}/ns/net"),
            extra=self.kubelet_extra_args,
        )
        self.kubelet = Child(
            KUBELET, argv, log_path=cp.layout.log(KUBELET), pid_dir=cp.layout.pids, env=python_env()
        )
        admin = cp.admin()
        seen = ["no node yet"]

        def check() -> bool | None:
            assert self.kubelet is not None
            if not self.kubelet.running():
                raise ControlPlaneError(self.kubelet.exit_message())
            try:
                ready = ready_gpu_nodes(admin.get("/api/v1/nodes", timeout=5.0), self.gpus)
            except OSError as e:
                seen[0] = f"{type(e).__name__}: {e}"
                return None
            seen[0] = f"{len(ready)} of {self.nodes} Ready with {self.gpus} {GPU_RESOURCE}: {ready}"
            return True if len(ready) >= self.nodes else None

        try:
            poll_until(check, max(0.0, timeout), f"{self.nodes} GPU nodes Ready", describe=lambda: seen[0])
        except WaitTimeout as e:
            raise ControlPlaneError(f"{e}\nlast log lines of {KUBELET}:\n{self.kubelet.log_tail()}") from None


class AddressBlocks:
    """Consecutive blocks of pod and node addresses of a plan, held for one cluster's lifetime.

    Every local cluster on this machine shares the plan's range (and the host's routes to it);
    each kubelet takes its own block of node addresses so two clusters (a developer's ``up`` and
    a test session) never hand out the same pod IP. The reservation is an exclusive lock on a
    file per block, which the OS drops when the holder dies, so a crashed cluster never leaks its
    block (and the next holder may remove what it left, such as its network namespace).
    """

    def __init__(self, first: int, files: list[IO[bytes]]) -> None:
        self.first = first
        self._files = files

    def __len__(self) -> int:
        return len(self._files)

    @classmethod
    def reserve(cls, count: int, plan: AddressPlan) -> AddressBlocks:
        # Per plan: their blocks are different addresses (and sizes).
        name = "dpctl-address-blocks" if plan is LOOPBACK else f"dpctl-{plan.name}-address-blocks"
        lock_dir = Path(tempfile.gettempdir()) / name
        lock_dir.mkdir(mode=0o1777, exist_ok=True)
        for first in range(0, plan.blocks - count + 1):
            files: list[IO[bytes]] = []
            for block in range(first, first + count):
                f = (lock_dir / f"{block}.lock").open("ab")
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    f.close()
                    break
                files.append(f)
            if len(files) == count:
                return cls(first, files)
            for held in files:
                held.close()
        raise ControlPlaneError(f"every block of {plan.name} addresses is taken by other local clusters")

    def release(self) -> None:
        for f in self._files:
            f.close()
        self._files = []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def python_env() -> dict[str, str]:
    """Our environment with dpctl and dpsim importable, whatever the child's working directory."""
    env = dict(os.environ)
    env["PYTHONPATH"] = with_our_packages(env.get("PYTHONPATH"))
    return env
