"""Session fixtures for end-to-end tests: the cluster under test and the tools to drive it.

``cluster`` (session) is a :class:`ClusterHandle`:

* ``KUBECONFIG`` set and not a dpctl local cluster: that cluster is used as is (``is_local`` False,
  nothing started or stopped);
* otherwise a fresh :class:`LocalCluster` is started in a temporary state dir (or
  ``$DPCTL_E2E_STATE_DIR``) with ``$DPCTL_E2E_NODES`` (2) nodes of ``$DPCTL_E2E_GPUS`` (4) GPUs of
  ``$DPCTL_E2E_GPU_PRODUCT``, and torn down at session end, also on failure and Ctrl-C (SIGTERM
  too). ``$DPCTL_E2E_REUSE=1`` instead reuses a running local cluster that ``KUBECONFIG`` names.

While it lives, ``KUBECONFIG`` points at it and kubectl/helm are first on ``PATH``.
Images from a loopback registry (``PODMAN_IMAGES``) run as real containers under podman, with the
configuration ``make image-tools`` writes. ``bins`` (session) gives the binaries; ``namespace`` (function) a fresh namespace whose ``default``
ServiceAccount exists, deleted afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import pytest

# test/helpers.py is shared by every test tree; `test` itself is not importable (stdlib shadows it).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dpsim.localcluster import kubehttp
from dpsim.localcluster.bins import Bins, BinsError, resolve_bins
from dpsim.localcluster.cluster import (
    DEFAULT_GPU_PRODUCT,
    LocalCluster,
    is_local_kubeconfig,
)
from e2e.deploy.chart import NODE_VIEWER
from helpers import wait_for


@dataclass(frozen=True)
class ClusterHandle:
    """The cluster under test, local or foreign."""

    kubeconfig: Path
    kubectl: str
    helm: str | None
    state_dir: Path | None  # None for a foreign cluster
    is_local: bool
    local: LocalCluster | None = None  # set when this session started it (fault tests need it)

    def run_kubectl(
        self, *args: str, timeout: float = 60, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.kubectl, "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            input=input,
        )

    def create_namespace(self, prefix: str = "e2e") -> str:
        """A fresh namespace, ready for pods (its `default` ServiceAccount exists)."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.run_kubectl("create", "namespace", name)
        wait_for(
            lambda: (
                self.run_kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0
            ),
            60,
            f"ServiceAccount {name}/default",
        )
        return name


# Images from a registry on loopback (the image tests' own, test/e2e/recipe_suite/test_images.py)
# run as real containers under podman; every other image stays a process of the simulated kubelet.
PODMAN_IMAGES = "127.0.0.1:"


def podman_config() -> dict[str, Path]:
    """The files hack/images/setup.sh writes for podman (``make image-tools``), by variable."""
    cache = Path(
        os.environ.get("DPCTL_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dpctl"
    )
    return {
        "CONTAINERS_CONF": cache / "containers" / "containers.conf",
        "CONTAINERS_REGISTRIES_CONF": cache / "containers" / "registries.conf",
    }


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def _on_path(monkeypatch: pytest.MonkeyPatch, dirs: list[Path]) -> None:
    monkeypatch.setenv("PATH", os.pathsep.join([*map(str, dirs), os.environ.get("PATH", "")]))


@pytest.fixture(scope="session")
def bins() -> Iterator[Bins]:
    """The pinned binaries (built when missing), with kubectl and helm first on PATH."""
    try:
        found = resolve_bins(build=True)
    except BinsError as e:
        pytest.fail(f"no Kubernetes binaries: {e}")
    with pytest.MonkeyPatch.context() as mp:
        _on_path(mp, found.path_dirs())
        yield found


@pytest.fixture(scope="session")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterHandle]:
    env_kc = [Path(p) for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if env_kc and not is_local_kubeconfig(env_kc[0]):
        handle, found_bins = _foreign(env_kc[0])
        with pytest.MonkeyPatch.context() as mp:
            if found_bins is not None:
                _on_path(mp, found_bins.path_dirs())
            yield handle
        return
    found: Bins = request.getfixturevalue("bins")
    if env_kc and os.environ.get("DPCTL_E2E_REUSE") == "1":
        try:
            kubehttp.KubeHTTP.from_kubeconfig(env_kc[0]).get("/readyz", timeout=5.0)
        except (OSError, kubehttp.HTTPError) as e:
            pytest.fail(f"DPCTL_E2E_REUSE=1 but {env_kc[0]} does not answer: {e}")
        yield ClusterHandle(env_kc[0], str(found.kubectl), _str(found.helm), env_kc[0].parent, True)
        return
    state_dir = Path(os.environ.get("DPCTL_E2E_STATE_DIR") or tmp_path_factory.mktemp("local-cluster"))
    local = LocalCluster(
        state_dir,
        found,
        nodes=_env_int("DPCTL_E2E_NODES", 2),
        gpus=_env_int("DPCTL_E2E_GPUS", 4),
        gpu_product=os.environ.get("DPCTL_E2E_GPU_PRODUCT") or DEFAULT_GPU_PRODUCT,
        kubelet_extra_args=["--podman-images", PODMAN_IMAGES],
    )
    # Teardown runs on failures and Ctrl-C (pytest finalises fixtures then); make SIGTERM behave as
    # Ctrl-C so it does too. A SIGKILL of pytest is covered by the children's PDEATHSIG.
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if previous in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with pytest.MonkeyPatch.context() as mp:
            # The kubelet's podman calls read these (the image tests' podman and make too).
            for name, path in podman_config().items():
                mp.setenv(name, str(path))
            local.start()
            mp.setenv("KUBECONFIG", str(local.kubeconfig))
            yield ClusterHandle(
                local.kubeconfig, str(found.kubectl), _str(found.helm), local.state_dir, True, local
            )
    finally:
        local.stop()
        if previous in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _str(p: Path | None) -> str | None:
    return str(p) if p else None


def _foreign(kubeconfig: Path) -> tuple[ClusterHandle, Bins | None]:
    """A cluster we did not start: tools from the cache when built (never building: a foreign
    cluster's user may have their own), else whatever PATH has."""
    try:
        found: Bins | None = resolve_bins(build=False)
    except BinsError:
        found = None
    kubectl = str(found.kubectl) if found else shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("KUBECONFIG names a foreign cluster but there is no kubectl (build: hack/bins/build.sh)")
    helm = _str(found.helm) if found else shutil.which("helm")
    return ClusterHandle(kubeconfig, kubectl, helm, None, False), found


@pytest.fixture(scope="session")
def node_viewer(cluster: ClusterHandle) -> Iterator[str]:
    """The recipe's NodeViewClusterRole (the local cluster has it; elsewhere made for the session)."""
    made = False
    if cluster.run_kubectl("get", "clusterrole", NODE_VIEWER, check=False).returncode != 0:
        cluster.run_kubectl("create", "clusterrole", NODE_VIEWER, "--verb=get,list,watch", "--resource=nodes")
        made = True
    yield NODE_VIEWER
    if made:
        cluster.run_kubectl("delete", "clusterrole", NODE_VIEWER, "--ignore-not-found", check=False)


@pytest.fixture
def namespace(cluster: ClusterHandle) -> Iterator[str]:
    """A fresh namespace, ready for pods (its `default` ServiceAccount exists); deleted afterwards."""
    name = cluster.create_namespace()
    yield name
    cluster.run_kubectl("delete", "namespace", name, "--wait=false", check=False)
