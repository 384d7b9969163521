"""Services route to the dual pods as a user's would: to awake runners only, and to the controller.

How users route to vLLM: a Service selecting the runners' model labels. vLLM's ``/health``
answers while asleep, so a sleeping runner stays Ready; the controller's
``dual-pods.llm-d.ai/sleeping`` label is what keeps it out, and the Service here selects on it as
a user's must. Requesters carry no model labels and are never endpoints.

Endpoints come from the controller-manager's EndpointSlice controller, which refuses loopback
addresses: these tests need the local cluster's network namespace (see docs/local-cluster.md)
and skip, saying so, on a local cluster that fell back to loopback.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from dpctl import api
from dpsim.localcluster.bins import Bins
from e2e.deploy.chart import RELEASE
from e2e.prometheus import JOB, running_prometheus, service_scrape_config
from e2e.recipe import Kubectl, ServerPatch, is_sleeping, mkrs, name_of, unique_name
from helpers import wait_for

from .conftest import CHART, METRICS_PORT, Dpctlr, Gpus, T
from .steps import assert_pair, pair_ready, scale_to_zero_keeps_sleeper

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
ONE_DIALECT = True  # routing does not depend on the annotation names

SERVICE = "granite"
MODEL_LABELS = {"model-reg": "ibm-granite", "model-repo": "granite-3.3-2b-instruct"}
SERVER_PORT = 8000


@pytest.fixture(autouse=True)
def _routable(dpctlr: Dpctlr) -> None:
    local = dpctlr.cluster.local
    if local is not None and local.network is None:
        pytest.skip(f"the local cluster has no network namespace: {local.network_note}")


def model_service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": SERVICE},
        "spec": {
            "selector": {**MODEL_LABELS, api.SLEEPING_LABEL: "false"},
            "ports": [{"name": "http", "port": SERVER_PORT, "targetPort": SERVER_PORT}],
        },
    }


def ready_endpoints(kubectl: Kubectl, service: str) -> set[str]:
    """The addresses of the Service's ready endpoints, from all its EndpointSlices."""
    slices = kubectl.get_json("endpointslices", "-l", f"kubernetes.io/service-name={service}")["items"]
    return {
        address
        for s in slices
        for ep in s.get("endpoints") or []
        if (ep.get("conditions") or {}).get("ready")
        for address in ep["addresses"]
    }


def endpoints_become(kubectl: Kubectl, service: str, want: set[str], what: str) -> None:
    wait_for(lambda: ready_endpoints(kubectl, service) == want, T, f"{service}'s ready endpoints: {what}")


def through_service(kubectl: Kubectl, path: str) -> list[Mapping[str, Any]]:
    """GET ``path`` on every ready endpoint of the model Service, as a client would pick one."""
    answers: list[Mapping[str, Any]] = []
    for address in sorted(ready_endpoints(kubectl, SERVICE)):
        with urllib.request.urlopen(f"http://{address}:{SERVER_PORT}{path}", timeout=10) as resp:
            answers.append({"address": address, **json.loads(resp.read())})
    return answers


def test_a_model_service_routes_to_the_awake_runner_only_across_a_sleep_and_a_wake(
    kubectl: Kubectl, dpctlr: Dpctlr, gpu_map: dict[str, dict[str, int]], gpus: Gpus
) -> None:
    node = gpus.worker()
    gpus.leave_free(node, 1)  # so the second requester gets the same GPU, and wakes the sleeper
    kubectl.apply(model_service())
    rs = unique_name()
    kubectl.apply(mkrs(rs, ServerPatch(), node_selector={api.HOSTNAME_LABEL: node}))
    req, runner = pair_ready(kubectl, rs)
    assert_pair(req, runner, gpu_map)
    runner_ip, req_ip = runner["status"]["podIP"], req["status"]["podIP"]

    endpoints_become(kubectl, SERVICE, {runner_ip}, "the bound runner")
    answers = through_service(kubectl, api.IS_SLEEPING_PATH)
    assert answers == [{"address": runner_ip, "is_sleeping": False}]
    assert req_ip not in ready_endpoints(kubectl, SERVICE)

    # Unbound: asleep, still Ready (vLLM's /health answers), and out of the Service.
    sleeper = scale_to_zero_keeps_sleeper(kubectl, dpctlr, rs, req, runner)
    assert is_sleeping(kubectl, sleeper)
    endpoints_become(kubectl, SERVICE, set(), "none while the only runner sleeps")
    assert through_service(kubectl, api.IS_SLEEPING_PATH) == []

    # A new requester on the same GPU: the sleeper is woken and bound, and back in the Service.
    kubectl.scale(rs, 1)
    req2, runner2 = pair_ready(kubectl, rs)
    assert runner2["metadata"]["uid"] == runner["metadata"]["uid"]
    endpoints_become(kubectl, SERVICE, {runner_ip}, "the woken runner")
    assert through_service(kubectl, api.IS_SLEEPING_PATH) == [{"address": runner_ip, "is_sleeping": False}]
    assert req2["status"]["podIP"] not in ready_endpoints(kubectl, SERVICE)
    assert name_of(runner2) == name_of(runner)


def test_the_charts_metrics_service_has_the_controller_as_its_endpoint(
    kubectl: Kubectl, dpctlr: Dpctlr
) -> None:
    pod = dpctlr.pod()
    assert pod is not None
    service = f"{RELEASE}-metrics"
    endpoints_become(kubectl, service, {pod["status"]["podIP"]}, "the controller Pod")
    (address,) = ready_endpoints(kubectl, service)
    with urllib.request.urlopen(f"http://{address}:{METRICS_PORT}/metrics", timeout=10) as resp:
        assert b"workqueue_adds_total" in resp.read()


def test_prometheus_discovers_the_controller_through_the_charts_service(
    bins: Bins, cluster: Any, kubectl: Kubectl, dpctlr: Dpctlr, tmp_path: Path
) -> None:
    assert bins.prometheus is not None and bins.prometheus.exists(), "make bins builds prometheus"
    pod = dpctlr.pod()
    assert pod is not None
    scrape = service_scrape_config(Path(cluster.kubeconfig), kubectl.namespace, f"{RELEASE}-metrics")
    with running_prometheus(bins.prometheus, tmp_path, scrape, [CHART / "files" / "alerts.yaml"]) as prom:
        query = f'up{{job="{JOB}", namespace="{kubectl.namespace}"}} == 1'
        (up,) = wait_for(
            lambda: prom.query(query), T, "up == 1 for the controller, found through its Service"
        )
    assert up["metric"]["pod"] == name_of(pod)
    assert up["metric"]["instance"] == f"{pod['status']['podIP']}:{METRICS_PORT}"
