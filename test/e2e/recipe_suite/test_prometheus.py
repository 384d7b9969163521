"""A real Prometheus scraping the chart-installed controller on the local cluster.

Through Prometheus's query API, after one cold and one hot actuation (recipe Example 7: a requester
gets a new runner, is scaled to zero, and its successor wakes the sleeper): the controller's target
is up with the ``namespace`` and ``pod`` labels the dashboard needs, the actuation counts per path
are one each, every expression of the Grafana dashboard (its variables substituted) is accepted,
and the core panels have data. The controller's ``/metrics`` passes ``promtool check metrics``, and
the chart's alert rules load with none firing. Then one cold actuation on the launcher path (the
recipe's example manifests), so the dashboard's launcher panels have data too.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dpctl import api
from dpsim.localcluster.bins import Bins
from e2e.deploy.chart import SELECTOR
from e2e.prometheus import JOB, Prometheus, running_prometheus, scrape_config
from e2e.recipe import Kubectl, ServerPatch, mkrs, name_of, pod_get, unique_name
from helpers import wait_for
from unit.deploy.test_dashboard import dashboard, expressions

from .conftest import CHART, METRICS_PORT, Dpctlr, Gpus, T, schedulable_nodes
from .steps import pair_ready, scale_to_zero_keeps_sleeper

# About images (or scraping), not the names on Pods: the recipe's dialect is enough.
ONE_DIALECT = True
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ALERTS = CHART / "files" / "alerts.yaml"
# Grafana's $__rate_interval is at least four scrape intervals; the test's window covers the run.
RATE_INTERVAL = "5m"
# Queries that may be empty after one cold and one hot actuation (and a launcher-path cold one): nothing was deleted for a
# reason, no status error, no failed call, no relist on 410, and no watch ended or restarted (the
# API server ends them after minutes; the test takes less).
MAY_BE_EMPTY = (
    "dpctl_runner_deletions_total",
    "dpctl_status_errors_total",
    'code!~"2.."',
    "informer_relists_on_gone_total",
    "informer_watch_restarts_total",
    "informer_watch_duration_seconds",
    # The launcher path's one cold actuation creates no launcher that fails.
    'success="false"',
)
EXAMPLES = Path(__file__).resolve().parents[3] / "deploy" / "examples" / "launcher"
UPSTREAM_CAMEL_CASE = ("fma_actuation_seconds ", "fma_actuation_seconds_created ")


@pytest.fixture
def prometheus(
    bins: Bins, cluster: Any, kubectl: Kubectl, dpctlr: Dpctlr, tmp_path: Path
) -> Iterator[Prometheus]:
    assert bins.prometheus is not None and bins.prometheus.exists(), "make bins builds prometheus"
    scrape = scrape_config(Path(cluster.kubeconfig), kubectl.namespace, SELECTOR)
    with running_prometheus(bins.prometheus, tmp_path, scrape, [ALERTS]) as prom:
        yield prom


def _value(sample: dict[str, Any]) -> float:
    return float(sample["value"][1])


def _controller_up(prom: Prometheus, namespace: str) -> list[dict[str, Any]]:
    up = prom.query(f'up{{job="{JOB}", namespace="{namespace}"}} == 1')
    return up if len(up) == 1 else []


def _actuations(prom: Prometheus, namespace: str) -> dict[str, float]:
    result = prom.query(f'sum by (path) (dpctl_actuation_seconds_count{{namespace="{namespace}"}})')
    return {s["metric"]["path"]: _value(s) for s in result}


def _launcher_actuations(prom: Prometheus, namespace: str) -> dict[str, float]:
    result = prom.query(f'sum by (path) (fma_actuation_seconds_count{{namespace="{namespace}"}})')
    return {s["metric"]["path"]: _value(s) for s in result}


def test_prometheus_scrapes_the_controller_and_the_dashboard_queries_work(
    bins: Bins,
    kubectl: Kubectl,
    dpctlr: Dpctlr,
    prometheus: Prometheus,
    gpu_map: dict[str, dict[str, int]],
    gpus: Gpus,
) -> None:
    ns = kubectl.namespace
    up = wait_for(lambda: _controller_up(prometheus, ns), T, "up == 1 for the controller in Prometheus")
    controller = dpctlr.pod()
    assert controller is not None
    assert up[0]["metric"]["pod"] == name_of(controller)

    # One cold actuation, then one hot (Example 7, exactly one GPU free so the sleeper is reused).
    node = gpus.worker()
    gpus.leave_free(node, 1)
    rs = unique_name()
    kubectl.apply(mkrs(rs, ServerPatch(), node_selector={api.HOSTNAME_LABEL: node}))
    req, runner = pair_ready(kubectl, rs)
    wait_for(lambda: _actuations(prometheus, ns) == {"cold": 1.0}, T, "one cold actuation in Prometheus")
    scale_to_zero_keeps_sleeper(kubectl, dpctlr, rs, req, runner)
    kubectl.scale(rs, 1)
    _, runner2 = pair_ready(kubectl, rs)
    assert runner2["metadata"]["uid"] == runner["metadata"]["uid"], "the sleeper was not reused"
    wait_for(
        lambda: _actuations(prometheus, ns) == {"cold": 1.0, "hot": 1.0},
        T,
        "one cold and one hot actuation in Prometheus",
    )
    binds = prometheus.query(f'sum(dpctl_binds_total{{namespace="{ns}"}})')
    assert [_value(s) for s in binds] == [1.0]

    # And one cold actuation on the launcher path, with the recipe's example manifests, on the
    # other Node (this one's free GPU is the direct pair's).
    other = next(name_of(n) for n in schedulable_nodes(kubectl) if name_of(n) != node)
    for name in ("launcher-rbac.yaml", "lc.yaml", "isc.yaml"):
        kubectl.run("apply", "-f", str(EXAMPLES / name))
    launcher_rs = yaml.safe_load((EXAMPLES / "requester-rs.yaml").read_text())
    launcher_rs["spec"]["template"]["spec"]["nodeSelector"] = {api.HOSTNAME_LABEL: other}
    kubectl.apply(launcher_rs)
    wait_for(
        lambda: _launcher_actuations(prometheus, ns) == {"cold": 1.0},
        T,
        "one cold launcher-path actuation in Prometheus",
    )
    # rate() needs two samples of the series: the scrape after the one that first showed it.
    launcher_rate = f'rate(fma_actuation_seconds_count{{namespace="{ns}"}}[{RATE_INTERVAL}])'
    wait_for(lambda: prometheus.query(launcher_rate), T, "two scrapes of the launcher-path actuation")

    # Every dashboard expression, its variables substituted, is accepted; the core ones have data.
    empty = []
    for title, expr, _ in expressions(dashboard()):
        query = expr.replace("$namespace", ns).replace("$__rate_interval", RATE_INTERVAL)
        if not prometheus.query(query) and not any(m in expr for m in MAY_BE_EMPTY):
            empty.append(f"{title}: {query}")
    assert empty == [], "core dashboard queries with no data:\n" + "\n".join(empty)

    # promtool's lint of the exposition the controller serves.
    text = pod_get(kubectl, controller, METRICS_PORT, "/metrics", direct=dpctlr.cluster.is_local)
    assert bins.promtool is not None
    checked = subprocess.run(
        [str(bins.promtool), "check", "metrics"], input=text, capture_output=True, timeout=60, check=False
    )
    said = f"{checked.stdout.decode()}{checked.stderr.decode()}"
    # Lint problems (exit 3) other than upstream's camelCase label instancesDeleted, which
    # fma_actuation_seconds keeps so that upstream's dashboards read dpctl's series.
    unexpected = [
        line
        for line in said.splitlines()
        if line.strip() and not (line.startswith(UPSTREAM_CAMEL_CASE) and "'snake_case'" in line)
    ]
    assert checked.returncode in (0, 3) and unexpected == [], f"promtool check metrics:\n{said}"

    # The chart's alert rules loaded, evaluate without error, and none fires on a healthy run.
    groups = prometheus.api("rules", type="alert")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert {r["name"] for r in rules} == {
        "DpctlControllerDown",
        "DpctlActuationErrors",
        "DpctlSleeperLimitEvictions",
        "DpctlStatusErrorsRising",
    }
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
    assert prometheus.api("alerts")["alerts"] == []
