"""A real Prometheus (``make bins`` builds it) scraping the local cluster, for e2e tests.

It discovers Pods with ``kubernetes_sd_configs`` ``role: pod`` through the cluster's kubeconfig,
keeps the containers' ports named ``metrics`` of the chart-installed controller, and relabels the
``namespace`` and ``pod`` target labels the way prometheus-operator does (the dashboard's queries
select by ``namespace``); or, as a ServiceMonitor does, ``role: endpoints`` of the chart's
Service (``service_scrape_config``: it needs Services with endpoints, see docs/local-cluster.md). It also loads the chart's alert rules. This module owns its start, its
config and its HTTP query API; the tests own what they ask.
"""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from helpers import wait_for

JOB = "dpctl"  # the alert rules select the controller by job=~".*dpctl.*"
SCRAPE_INTERVAL = "1s"  # so a test sees a change within seconds


def scrape_config(kubeconfig: Path, namespace: str, selector: str) -> dict[str, Any]:
    """The scrape job, as docs/metrics.md shows it for plain Prometheus (plus the kubeconfig)."""
    return {
        "job_name": JOB,
        "scrape_interval": SCRAPE_INTERVAL,
        "kubernetes_sd_configs": [
            {
                "role": "pod",
                "kubeconfig_file": str(kubeconfig),
                "namespaces": {"names": [namespace]},
                "selectors": [{"role": "pod", "label": selector}],
            }
        ],
        "relabel_configs": [
            {
                "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                "regex": "metrics",
                "action": "keep",
            },
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        ],
    }


def service_scrape_config(kubeconfig: Path, namespace: str, service: str) -> dict[str, Any]:
    """The scrape job a ServiceMonitor of the chart's Service makes: its endpoints' port ``metrics``."""
    return {
        "job_name": JOB,
        "scrape_interval": SCRAPE_INTERVAL,
        "kubernetes_sd_configs": [
            {"role": "endpoints", "kubeconfig_file": str(kubeconfig), "namespaces": {"names": [namespace]}}
        ],
        "relabel_configs": [
            {"source_labels": ["__meta_kubernetes_service_name"], "regex": service, "action": "keep"},
            {"source_labels": ["__meta_kubernetes_endpoint_port_name"], "regex": "metrics", "action": "keep"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        ],
    }


@dataclass(frozen=True)
class Prometheus:
    """A running Prometheus and its query API."""

    url: str
    log: Path

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>``'s ``data``; an AssertionError with Prometheus's words otherwise."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as err:
            body = json.loads(err.read() or b"{}")
        if body.get("status") != "success":
            raise AssertionError(
                f"Prometheus refused {path} {params}: {body.get('errorType')}: {body.get('error')}"
            )
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (a scalar or string result is an AssertionError)."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", f"{expr}: a {data['resultType']}, not a vector"
        result: list[dict[str, Any]] = data["result"]
        return result

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as resp:
                return int(resp.status) == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_prometheus(
    binary: Path, workdir: Path, scrape: dict[str, Any], rule_files: list[Path]
) -> Iterator[Prometheus]:
    """Prometheus on a free loopback port with one scrape job; stopped (and waited for) after."""
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"evaluation_interval": SCRAPE_INTERVAL},
                "rule_files": [str(f) for f in rule_files],
                "scrape_configs": [scrape],
            }
        )
    )
    port = _free_port()
    log = workdir / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    prom = Prometheus(f"http://127.0.0.1:{port}", log)
    try:
        wait_for(lambda: proc.poll() is not None or prom.ready(), 60, "Prometheus to be ready")
        assert proc.poll() is None, f"Prometheus exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
