"""The recipe's Examples 1, 2 and 7 with ``dpctl controller`` running as a plain process.

The full recipe suite installs the controller with the chart (test/e2e/recipe_suite); these cases
show the controller itself works on a real control plane, and also check the strategic merge
patch agrees with the API server's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from dpctl import api
from dpctl.api import LogMsg
from dpctl.podbuild.smp import strategic_merge_patch
from dpsim.localcluster import kubehttp
from e2e.recipe import (
    Kubectl,
    ServerPatch,
    bound_pair,
    cuda_visible_devices,
    is_ready,
    is_sleeping,
    mkrs,
    runners,
    status_errors,
    unique_name,
)
from helpers import wait_for

from .conftest import dump

pytestmark = pytest.mark.e2e

TIMEOUT = 90


def test_example_1_cycle_and_example_7_sleep_and_wake(
    cluster: Any, kubectl: Kubectl, gpu_map: dict[str, dict[str, int]], ledger: Any, start_controller: Any
) -> None:
    controller = start_controller(2)
    rs = unique_name()
    # Example 7 pins the requester where few GPUs are free; the simulated device plugin then hands
    # the same (lowest free) GPU to the next requester there.
    kubectl.apply(mkrs(rs, ServerPatch(), node_selector={api.HOSTNAME_LABEL: "node-1"}))
    try:
        req, runner = wait_for(lambda: bound_pair(kubectl, rs), TIMEOUT, "a requester and its bound runner")
        assert runner["metadata"]["name"] == req["metadata"]["name"] + api.RUNNER_NAME_SUFFIX
        uuids = wait_for(
            lambda: (
                (kubectl.pod(req["metadata"]["name"]) or {})
                .get("metadata", {})
                .get("annotations", {})
                .get(api.ACCELERATORS_ANNOTATION)
            ),
            TIMEOUT,
            "the accelerators annotation on the requester",
        ).split(",")
        expected = ",".join(str(gpu_map["node-1"][u]) for u in uuids)
        assert cuda_visible_devices(runner) == expected
        # Runner Ready first, then the requester: the relay follows the runner.
        wait_for(lambda: is_ready(kubectl.pod(runner["metadata"]["name"])), TIMEOUT, "runner Ready")
        wait_for(lambda: is_ready(kubectl.pod(req["metadata"]["name"])), TIMEOUT, "requester Ready")
        running = kubectl.pod(runner["metadata"]["name"])
        assert running is not None and running["spec"]["nodeName"] == req["spec"]["nodeName"] == "node-1"
        assert status_errors(kubectl.pod(req["metadata"]["name"]) or req) == []
        assert "Application startup complete" in kubectl.run("logs", runner["metadata"]["name"])
        assert controller.count(LogMsg.RELAYED_READINESS) >= 1

        # Scale to 0: the requester goes, the runner stays, asleep, unbound, without finalizer.
        kubectl.scale(rs, 0)
        wait_for(lambda: kubectl.pod(req["metadata"]["name"]) is None, TIMEOUT, "the requester gone")
        sleeper = kubectl.pod(runner["metadata"]["name"])
        assert sleeper is not None and not sleeper["metadata"].get("finalizers")
        assert api.REQUESTER_ANNOTATION not in sleeper["metadata"]["annotations"]
        assert sleeper["metadata"]["labels"][api.SLEEPING_LABEL] == "true"
        assert is_sleeping(kubectl, sleeper)
        wait_for(lambda: controller.count(LogMsg.END_OF_LIFE) >= 1, 30, "End of life in the log")
        assert controller.count(LogMsg.UNBOUND_RUNNER) == 1
        relayed_before = controller.count(LogMsg.RELAYED_READINESS)

        # Example 7: back to 1 replica: a new requester on the same GPU wakes the same runner.
        kubectl.scale(rs, 1)
        req2, runner2 = wait_for(lambda: bound_pair(kubectl, rs), TIMEOUT, "a new requester bound")
        assert req2["metadata"]["name"] != req["metadata"]["name"]
        assert runner2["metadata"]["uid"] == runner["metadata"]["uid"]
        wait_for(lambda: is_ready(kubectl.pod(req2["metadata"]["name"])), TIMEOUT, "new requester Ready")
        assert not is_sleeping(kubectl, kubectl.pod(runner["metadata"]["name"]) or runner2)
        assert len(runners(kubectl.pods())) == 1
        assert controller.count(LogMsg.BOUND_RUNNER) == 1
        wait_for(lambda: controller.count(LogMsg.RELAYED_READINESS) > relayed_before, 30, "a new relay")
        assert controller.count(LogMsg.CREATED_RUNNER) == 1
        found = [line for line in controller.log().splitlines() if LogMsg.FOUND_GPUS in line]
        assert len(found) == 2 and all(uuids[0] in line for line in found)
        assert ledger.violations() == []
    except AssertionError:
        print(dump(kubectl, controller))
        raise


def test_example_2_runner_deletion_is_reflected(
    kubectl: Kubectl, gpu_map: dict[str, dict[str, int]], ledger: Any, start_controller: Any
) -> None:
    controller = start_controller(2)
    rs = unique_name()
    kubectl.apply(mkrs(rs, ServerPatch()))
    try:
        req, runner = wait_for(lambda: bound_pair(kubectl, rs), TIMEOUT, "a bound pair")
        wait_for(lambda: is_ready(kubectl.pod(req["metadata"]["name"])), TIMEOUT, "requester Ready")
        kubectl.run("delete", "pod", runner["metadata"]["name"], "--wait=false")
        wait_for(
            lambda: (
                kubectl.pod(req["metadata"]["name"]) is None
                and kubectl.pod(runner["metadata"]["name"]) is None
            ),
            TIMEOUT,
            "both the runner and its requester gone",
        )
        req2, runner2 = wait_for(lambda: bound_pair(kubectl, rs), TIMEOUT, "the replacement's pair")
        assert {req2["metadata"]["name"], runner2["metadata"]["name"]}.isdisjoint(
            {req["metadata"]["name"], runner["metadata"]["name"]}
        )
        wait_for(lambda: is_ready(kubectl.pod(req2["metadata"]["name"])), TIMEOUT, "replacement Ready")
        assert ledger.violations() == []
    except AssertionError:
        print(dump(kubectl, controller))
        raise


SMP_CASES = Path(__file__).resolve().parents[2] / "unit" / "podbuild" / "smp_cases.yaml"


def _cases(errors: bool) -> list[Any]:
    cases = yaml.safe_load(SMP_CASES.read_text())
    return [pytest.param(c, id=c["name"]) for c in cases if ("error" in c) == errors]


def _api(cluster: Any) -> kubehttp.KubeHTTP:
    return kubehttp.KubeHTTP.from_kubeconfig(Path(cluster.kubeconfig))


def _template(
    api_: kubehttp.KubeHTTP, ns: str, name: str, template: dict[str, Any], dry_run: bool
) -> dict[str, Any]:
    body = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": template}
    query = "?dryRun=All" if dry_run else ""
    out: dict[str, Any] = api_.call("POST", f"/api/v1/namespaces/{ns}/podtemplates{query}", body)
    return out


def _patch(api_: kubehttp.KubeHTTP, ns: str, name: str, patch: Any) -> kubehttp.Response:
    # fieldValidation=Ignore: the server drops leftover directive keys while decoding, as we do.
    return api_.request(
        "PATCH",
        f"/api/v1/namespaces/{ns}/podtemplates/{name}?dryRun=All&fieldValidation=Ignore",
        {"template": patch},
        content_type="application/strategic-merge-patch+json",
    )


@pytest.mark.parametrize("case", _cases(errors=False))
def test_strategic_merge_patch_agrees_with_the_api_server(
    cluster: Any, namespace: str, case: dict[str, Any]
) -> None:
    """Replay a unit case on a real API server: a PodTemplate carries the same patch strategies
    as a Pod but may change freely. Both results are compared after the server's defaulting."""
    api_ = _api(cluster)
    name = "smp-" + case["name"][:50].lower().replace("_", "-")
    created = _template(api_, namespace, name, case["original"], dry_run=False)
    served = _patch(api_, namespace, name, case["patch"])
    assert served.ok, served.body
    ours = strategic_merge_patch(created["template"], case["patch"])
    ours_defaulted = _template(api_, namespace, name + "-ours", ours, dry_run=True)["template"]
    expected_defaulted = _template(api_, namespace, name + "-exp", case["expected"], dry_run=True)["template"]
    assert ours_defaulted == served.body["template"], _diff("dpctl", ours_defaulted, served.body["template"])
    assert expected_defaulted == served.body["template"], _diff(
        "unit golden", expected_defaulted, served.body["template"]
    )


def _diff(who: str, ours: Any, server: Any, path: str = "") -> str:
    """Where ``ours`` and the server's result differ, as paths."""
    if isinstance(ours, dict) and isinstance(server, dict):
        keys = sorted(set(ours) | set(server))
        return "; ".join(
            _diff(who, ours.get(k), server.get(k), f"{path}.{k}")
            for k in keys
            if ours.get(k) != server.get(k)
        )
    if isinstance(ours, list) and isinstance(server, list) and len(ours) == len(server):
        pairs = enumerate(zip(ours, server, strict=True))
        return "; ".join(_diff(who, a, b, f"{path}[{i}]") for i, (a, b) in pairs if a != b)
    return f"{path}: {who} has {ours!r}, the API server has {server!r}"


@pytest.mark.parametrize("case", _cases(errors=True))
def test_strategic_merge_patch_errors_are_errors_on_the_api_server(
    cluster: Any, namespace: str, case: dict[str, Any]
) -> None:
    api_ = _api(cluster)
    name = "smp-" + case["name"][:50].lower().replace("_", "-")
    _template(api_, namespace, name, case["original"], dry_run=False)
    served = _patch(api_, namespace, name, case["patch"])
    assert not served.ok, f"the API server accepted a patch dpctl refuses: {served.body}"
