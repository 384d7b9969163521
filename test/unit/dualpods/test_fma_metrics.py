"""The launcher path's series by upstream's names and labels (launcher contract §10)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from dpctl.clients import inference, launcher
from dpctl.dualpods import metrics as m
from dpctl.dualpods.metrics import CURRENT_ISC, DualPodsMetrics


def test_http_calls_carry_upstreams_purpose_method_and_the_reconciles_isc() -> None:
    registry = CollectorRegistry()
    dual = DualPodsMetrics(registry, lambda: [], "ns1")
    token = CURRENT_ISC.set("isc-a")
    try:
        dual.observe_http(launcher.PURPOSE_CREATE, 201, 0.01)
        dual.observe_http(inference.PURPOSE_WAKE_UP, 200, 0.2)
        dual.observe_http("something upstream has no name for", 200, 0.1)
    finally:
        CURRENT_ISC.reset(token)
    labels = {"exported_namespace": "ns1", "isc_name": "isc-a"}
    count = registry.get_sample_value
    created = {"purpose": "create_instance", "method": "PUT", "status_code": "201", **labels}
    woken = {"purpose": "wake", "method": "POST", "status_code": "200", **labels}
    assert count("fma_http_latency_seconds_count", created) == 1
    assert count("fma_http_latency_seconds_count", woken) == 1
    families = [f for f in registry.collect() if f.name == "fma_http_latency_seconds"]
    assert sum(1 for s in families[0].samples if s.name.endswith("_count")) == 2


def test_duality_is_one_while_bound_zero_after_and_old_zeros_are_dropped() -> None:
    registry = CollectorRegistry()
    dual = DualPodsMetrics(registry, lambda: [], "ns1")
    pod = {
        "metadata": {
            "name": "launcher-a",
            "namespace": "ns1",
            "annotations": {"dual-pods.llm-d.ai/requester": "uid-a req-a"},
        },
        "spec": {"nodeSelector": {"kubernetes.io/hostname": "node-1"}},
    }
    series = {
        "exported_namespace": "ns1",
        "requester_name": "req-a",
        "exported_pod": "launcher-a",
        "exported_container": "inference-server",
        "instance_id": "Ii",
        "UUID": "GPU-0",
        "node": "node-1",
    }
    dual.duality(pod, "Ii", ["GPU-0"], True)
    assert registry.get_sample_value("fma_duality", series) == 1
    dual.duality(pod, "Ii", ["GPU-0"], False)
    assert registry.get_sample_value("fma_duality", series) == 0
    for i in range(m.MAX_UNBOUND_DUALITY_SERIES):
        dual.duality(pod, f"I{i}i", ["GPU-0"], False)
    assert registry.get_sample_value("fma_duality", series) is None  # the oldest zero went
