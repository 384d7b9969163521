"""The Grafana dashboard deploy/grafana/dpctl-dashboard.json cannot drift from the code.

The series and labels are read from the code itself: fresh ``Metrics`` and ``DualPodsMetrics``
on one registry, each hook used once (so labelled series have a sample that shows their labels),
then ``registry.collect()``. Every PromQL expression may name only those series, filter and group
only by their labels (or the target labels Prometheus adds when scraping), and every series the
code registers must be on some panel. The dashboard's own structure is checked too: a Prometheus
``${datasource}`` variable used by every panel, unique ids, a schema version Grafana 10/11 loads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from dpctl import api
from dpctl.clients import launcher as launcherclient
from dpctl.dualpods.metrics import DualPodsMetrics
from dpctl.metrics import Metrics
from dpctl.workqueue.metrics import UnfinishedWork

from ..dualpods.fakes import requester


def launcher() -> dict[str, Any]:
    """A launcher Pod bound to req-a, as far as fma_duality's labels read it."""
    return {
        "metadata": {
            "name": "launcher-lc-a-x1",
            "namespace": "ns1",
            "labels": {api.LAUNCHER_CONFIG_NAME_LABEL: "lc-a"},
            "annotations": {api.REQUESTER_ANNOTATION: "uid-a req-a"},
        },
        "spec": {"nodeName": "node-1"},
    }


DASHBOARD = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "dpctl-dashboard.json"

# Added by Prometheus at scrape time (by the prometheus-operator for the chart's ServiceMonitor).
TARGET_LABELS = frozenset({"namespace", "job", "instance", "pod", "service"})
FUNCTIONS = frozenset({"histogram_quantile", "rate", "increase", "sum", "max", "min", "avg", "count"})
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset"})
# Suffixes a family's samples carry, by type, for families without samples.
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}


@cache
def registered() -> dict[str, frozenset[str] | None]:
    """Every exposed series name and its label names (None: unknown, the family had no sample)."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    dual = DualPodsMetrics(registry, lambda: [])
    _use_every_hook(metrics, dual)
    series: dict[str, frozenset[str] | None] = {}
    for family in registry.collect():
        for name in [family.name + s for s in SUFFIXES.get(family.type, ("",))]:
            series.setdefault(name, None)
        for sample in family.samples:
            series[sample.name] = frozenset(sample.labels)
    return series


def _use_every_hook(metrics: Metrics, dual: DualPodsMetrics) -> None:
    metrics.register("q", lambda: UnfinishedWork(1.0, 1.0))
    metrics.set_depth("q", 1)
    metrics.inc_adds("q")
    metrics.observe_queue_latency("q", 0.1)
    metrics.observe_work_duration("q", 0.1)
    metrics.inc_retries("q")
    metrics.observe_list_duration("pods", 0.1)
    metrics.observe_watch_duration("pods", 60)
    metrics.inc_watch_restarts("pods")
    metrics.inc_relists_gone("pods")
    metrics.inc_events("pods", "ADDED")
    metrics.observe_api("get", "pods", 200, 0.01)
    metrics.observe_api_wait(0.01)
    metrics.observe_http("query the requester's GPUs", 200, 0.01)
    for what in ("bind", "wake", "sleep", "eviction"):
        dual.count(what)
    dual.runner_deleted("sleeper-limit")
    dual.status_error("GpuMap")
    dual.actuated("cold", requester())
    # The launcher path's series (fma_*).
    dual.actuated("warm", requester(), "isc-a", 1)
    dual.launcher_created("lc-a", 0.5, True)
    dual.duality(launcher(), "I1i", ["GPU-node-1-0"], True)
    dual.observe_http(launcherclient.PURPOSE_LIST, 200, 0.01)


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in doc["panels"]:
        yield panel
        yield from panel.get("panels") or []


def expressions(doc: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(panel title, expr, legendFormat) of every query."""
    for panel in panels(doc):
        for target in panel.get("targets") or []:
            yield panel["title"], target["expr"], target.get("legendFormat", "")


class Parsed:
    """What one PromQL expression references: series with their matcher labels, grouping labels."""

    def __init__(self, expr: str) -> None:
        text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values and regexes
        text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors such as [$__rate_interval]
        self.grouping: set[str] = set()
        for clause in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", text):
            self.grouping |= {label.strip() for label in clause.split(",") if label.strip()}
        text = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", text)
        self.series: list[tuple[str, set[str]]] = []
        self.unknown_functions: list[str] = []
        for m in re.finditer(r"([A-Za-z_:][\w:]*)\s*(\{([^}]*)\})?\s*(\()?", text):
            name, matchers, is_call = m.group(1), m.group(3), m.group(4)
            if is_call and matchers is None:
                if name not in FUNCTIONS:
                    self.unknown_functions.append(name)
            elif name not in KEYWORDS:
                labels = set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers or ""))
                self.series.append((name, labels))


def test_the_dashboard_is_grafana_json_with_a_prometheus_datasource_variable() -> None:
    doc = dashboard()
    assert 36 <= doc["schemaVersion"] <= 41
    assert doc["uid"] and doc["title"]
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(doc)]
    assert len(ids) == len(set(ids))
    for panel in panels(doc):
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        targets = panel["targets"]
        assert targets, panel["title"]
        assert len({t["refId"] for t in targets}) == len(targets), panel["title"]
        assert all(t["datasource"] == panel["datasource"] for t in targets), panel["title"]


@pytest.mark.parametrize(("title", "expr", "legend"), list(expressions(dashboard())))
def test_every_expression_references_only_what_the_code_registers(title: str, expr: str, legend: str) -> None:
    series = registered()
    parsed = Parsed(expr)
    assert parsed.unknown_functions == [], f"{title}: unexpected functions (add to FUNCTIONS if real)"
    assert parsed.series, f"{title}: no series in {expr}"
    common: set[str] | None = None
    for name, matcher_labels in parsed.series:
        assert name in series, f"{title}: {name} is not a series the code registers"
        labels = series[name]
        assert labels is not None, f"{title}: {name} has no sample; use its hook in _use_every_hook()"
        assert matcher_labels <= labels | TARGET_LABELS, (
            f"{title}: {name} has no label {matcher_labels - labels - TARGET_LABELS}"
        )
        common = set(labels) if common is None else common & labels
    assert common is not None
    assert parsed.grouping <= common | TARGET_LABELS, f"{title}: cannot group by {parsed.grouping - common}"
    legend_labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
    shown = parsed.grouping if parsed.grouping else common | TARGET_LABELS
    assert legend_labels <= shown, f"{title}: legend uses {legend_labels - shown}, not in the result"


def test_template_variable_queries_reference_registered_series() -> None:
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
        assert m, f"${variable['name']}: unexpected query {query}"
        labels = registered().get(m.group(1))
        assert labels is not None, f"${variable['name']}: {m.group(1)} is not registered"
        assert m.group(2) in labels | TARGET_LABELS


def test_every_registered_family_is_on_the_dashboard() -> None:
    used = {name for _, expr, _ in expressions(dashboard()) for name, _ in Parsed(expr).series}
    families = {_family(name) for name in registered()}
    missing = families - {_family(name) for name in used}
    assert not missing, f"series without a panel: {sorted(missing)}"


def _family(series: str) -> str:
    for suffix in ("_bucket", "_count", "_sum", "_created", "_total"):
        if series.endswith(suffix):
            return series[: -len(suffix)]
    return series
