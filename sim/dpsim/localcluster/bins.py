"""Where the local cluster's binaries are: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kubectl and helm.

Owns the lookup order: ``$DPCTL_BINS`` (bin folders separated by ``os.pathsep``) when set, else the
version-keyed cache that ``hack/bins/build.sh`` fills, building whatever is missing by running that
script. The versions come from ``hack/versions.env``, the one place that pins them.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

ENV_BINS = "DPCTL_BINS"


class BinsError(RuntimeError):
    """The binaries are not where they should be, or building them failed."""


def repo_root() -> Path | None:
    """The source checkout this package runs from, if it is one (it has ``hack/bins/build.sh``)."""
    root = Path(__file__).resolve().parents[3]  # <checkout>/sim/dpsim/localcluster/bins.py
    return root if (root / "hack" / "bins" / "build.sh").is_file() else None


def read_versions(root: Path | None = None) -> dict[str, str]:
    """``hack/versions.env`` as a dict (K8S_VERSION, ETCD_VERSION, HELM_VERSION, PROMETHEUS_VERSION)."""
    root = root or repo_root()
    if root is None:
        raise BinsError("not running from a dpctl checkout: hack/versions.env is not there")
    out: dict[str, str] = {}
    for raw in (root / "hack" / "versions.env").read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip().strip("\"'")
    return out


@dataclass(frozen=True)
class Bins:
    """The folders holding each binary; helm, prometheus and promtool are optional (only tests
    and users need them, not the cluster)."""

    k8s_dir: Path
    etcd_dir: Path
    helm_dir: Path | None = None
    prometheus_dir: Path | None = None

    @property
    def etcd(self) -> Path:
        return self.etcd_dir / "etcd"

    @property
    def kube_apiserver(self) -> Path:
        return self.k8s_dir / "kube-apiserver"

    @property
    def kube_controller_manager(self) -> Path:
        return self.k8s_dir / "kube-controller-manager"

    @property
    def kube_scheduler(self) -> Path:
        return self.k8s_dir / "kube-scheduler"

    @property
    def kubectl(self) -> Path:
        return self.k8s_dir / "kubectl"

    @property
    def helm(self) -> Path | None:
        return self.helm_dir / "helm" if self.helm_dir else None

    @property
    def prometheus(self) -> Path | None:
        return self.prometheus_dir / "prometheus" if self.prometheus_dir else None

    @property
    def promtool(self) -> Path | None:
        return self.prometheus_dir / "promtool" if self.prometheus_dir else None

    def path_dirs(self) -> list[Path]:
        """The folders to put on PATH for kubectl and helm."""
        dirs = [self.k8s_dir] + ([self.helm_dir] if self.helm_dir else [])
        return list(dict.fromkeys(dirs))

    def env_value(self) -> str:
        """This set as a ``$DPCTL_BINS`` value, so a child process finds the same binaries."""
        optional = [d for d in (self.helm_dir, self.prometheus_dir) if d]
        dirs = [self.k8s_dir, self.etcd_dir, *optional]
        return os.pathsep.join(str(d) for d in dict.fromkeys(dirs))

    def missing(self) -> list[Path]:
        need = [
            self.etcd,
            self.kube_apiserver,
            self.kube_controller_manager,
            self.kube_scheduler,
            self.kubectl,
        ]
        return [p for p in need if not os.access(p, os.X_OK)]


def bins_from_dirs(dirs: list[Path]) -> Bins:
    """Find each binary in the first of ``dirs`` that has it."""

    def find(name: str) -> Path | None:
        return next((d for d in dirs if os.access(d / name, os.X_OK)), None)

    k8s = find("kube-apiserver")
    etcd = find("etcd")
    if k8s is None or etcd is None:
        raise BinsError(f"${ENV_BINS}={os.pathsep.join(map(str, dirs))} lacks kube-apiserver or etcd")
    bins = Bins(k8s, etcd, find("helm"), find("prometheus"))
    if bins.missing():
        raise BinsError(f"${ENV_BINS}: missing {', '.join(map(str, bins.missing()))}")
    return bins


def cache_dir() -> Path:
    """The cache build.sh builds into (same rule as the script: $DPCTL_CACHE, else XDG)."""
    if os.environ.get("DPCTL_CACHE"):
        return Path(os.environ["DPCTL_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "dpctl"


def cached_bins(root: Path | None = None) -> Bins:
    """Where build.sh puts (or has put) the pinned versions; they may not exist yet."""
    v = read_versions(root)
    cache = cache_dir()
    return Bins(
        cache / "k8s" / v["K8S_VERSION"] / "bin",
        cache / "etcd" / v["ETCD_VERSION"] / "bin",
        cache / "helm" / v["HELM_VERSION"] / "bin",
        cache / "prometheus" / v["PROMETHEUS_VERSION"] / "bin",
    )


def resolve_bins(*, build: bool = True) -> Bins:
    """The binaries to use: ``$DPCTL_BINS``, else the cache, running build.sh first when ``build``.

    build.sh's progress goes to our stderr (inherited); its stdout (the folders) is parsed.
    """
    if os.environ.get(ENV_BINS):
        return bins_from_dirs([Path(p) for p in os.environ[ENV_BINS].split(os.pathsep) if p])
    root = repo_root()
    if root is None:
        raise BinsError(
            f"set ${ENV_BINS}: not running from a dpctl checkout, so hack/bins/build.sh is absent"
        )
    cached = cached_bins(root)
    optional = [cached.helm, cached.prometheus, cached.promtool]
    if not cached.missing() and all(p is not None and p.exists() for p in optional):
        return cached
    if not build:
        raise BinsError(f"binaries missing ({', '.join(map(str, cached.missing()))}); run hack/bins/build.sh")
    proc = subprocess.run(
        ["bash", str(root / "hack" / "bins" / "build.sh")], stdout=subprocess.PIPE, text=True, check=False
    )
    if proc.returncode != 0:
        raise BinsError(f"hack/bins/build.sh failed with status {proc.returncode}")
    # Told apart by content, not by line order: the script's header and its build order disagree.
    return bins_from_dirs([Path(x) for x in proc.stdout.split()])
