"""The launcher path's CRDs as the chart installs them, against the real API server: the files are
what the types make from this API server's OpenAPI, ``kubectl explain`` reads them, good objects
are stored and bad ones refused with the field's name (launcher contract §1.1, §2.1–§2.3, A16).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from dpctl.fma import crdgen
from dpctl.fma.v1alpha1 import API_VERSION, KINDS
from e2e.deploy.chart import CHART, RELEASE, helm, install

if TYPE_CHECKING:
    from e2e.conftest import ClusterHandle

pytestmark = pytest.mark.timeout(600)

CRDS = CHART / "crds"


@pytest.fixture(scope="module")
def installed(cluster: ClusterHandle, node_viewer: str) -> Iterator[str]:
    """The chart installed in a namespace of its own, which brings the CRDs; that namespace."""
    ns = cluster.create_namespace("crds")
    install(cluster, ns, node_viewer)
    for kind in KINDS:
        cluster.run_kubectl("wait", "--for=condition=Established", f"crd/{kind.crd_name}", "--timeout=60s")
    yield ns
    helm(cluster, "uninstall", RELEASE, "--namespace", ns, "--wait", "--timeout", "2m", check=False)
    cluster.run_kubectl("delete", "namespace", ns, "--wait=false", check=False)


def apply(cluster: ClusterHandle, ns: str, obj: dict[str, Any]) -> tuple[int, str]:
    """``kubectl apply`` as a user types it (strict field validation): exit code, what it printed."""
    r = cluster.run_kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(obj), check=False)
    return r.returncode, r.stdout + r.stderr


def isc(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceServerConfig",
        "metadata": {"name": name},
        "spec": spec,
    }


def lcfg(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "LauncherConfig", "metadata": {"name": name}, "spec": spec}


def lpp(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "LauncherPopulationPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


LAUNCHER_POD = {
    "containers": [
        {
            "name": "inference-server",
            "image": "ghcr.io/llm-d-incubation/llm-d-fast-model-actuation/launcher:v0.1.0",
            "command": ["uvicorn", "launcher:app", "--host", "0.0.0.0", "--port", "8001"],
            "resources": {"limits": {"nvidia.com/gpu": 1, "cpu": "2", "memory": "8Gi"}},
        }
    ]
}
SELECTOR = {"labelSelector": {"matchLabels": {"nvidia.com/gpu.present": "true"}}}


def test_the_chart_s_crds_are_what_the_types_make_from_this_api_server(cluster: ClusterHandle) -> None:
    openapi = json.loads(cluster.run_kubectl("get", "--raw", "/openapi/v3/api/v1").stdout)
    for kind in KINDS:
        made = crdgen.render(crdgen.crd(kind, openapi["components"]["schemas"]))
        assert (CRDS / crdgen.file_name(kind)).read_text() == made, f"{kind.kind}: run `make crds`"


def test_kubectl_explain_reads_the_fields_by_their_short_names(
    cluster: ClusterHandle, installed: str
) -> None:
    port = cluster.run_kubectl("explain", "isc.spec.modelServerConfig.port").stdout
    assert "FIELD: port <integer>" in port and "vLLM instance" in port, port
    containers = cluster.run_kubectl("explain", "lcfg.spec.podTemplate.spec.containers").stdout
    assert "readinessProbe" in containers and "<[]Object>" in containers, containers
    counts = cluster.run_kubectl("explain", "lpp.spec.countForLauncher").stdout
    assert "launcherConfigName" in counts and "-required-" in counts, counts


def test_good_objects_are_stored_as_written(cluster: ClusterHandle, installed: str) -> None:
    ns = installed
    good = [
        isc(
            "opt-125m",
            launcherConfigName="lc-a",
            modelServerConfig={
                "port": 8005,
                "options": "--model facebook/opt-125m --enable-sleep-mode",
                "env_vars": {"VLLM_SERVER_DEV_MODE": "1"},
                "labels": {"model": "opt-125m"},
                "annotations": {"example.com/owner": "team-a"},
            },
        ),
        lcfg(
            "lc-a",
            maxInstances=2,
            podTemplate={"metadata": {"labels": {"tier": "gpu"}}, "spec": LAUNCHER_POD},
        ),
        lpp(
            "everywhere",
            enhancedNodeSelector={
                **SELECTOR,
                "allocatableResources": {"nvidia.com/gpu": {"min": 1, "max": "8"}},
            },
            countForLauncher=[{"launcherConfigName": "lc-a", "launcherCount": 1}],
        ),
    ]
    for obj in good:
        code, out = apply(cluster, ns, obj)
        assert code == 0, out
    stored = json.loads(cluster.run_kubectl("get", "isc", "opt-125m", "-n", ns, "-o", "json").stdout)
    assert stored["spec"] == good[0]["spec"]
    stored_lc = json.loads(cluster.run_kubectl("get", "lcfg", "lc-a", "-n", ns, "-o", "json").stdout)
    (container,) = stored_lc["spec"]["podTemplate"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1  # a Quantity may be a number


BAD = [
    pytest.param(
        isc("no-lc", modelServerConfig={"port": 8005}),
        "spec.launcherConfigName: Required value",
        id="isc-without-launcher-config",
    ),
    pytest.param(
        isc("port-0", launcherConfigName="lc", modelServerConfig={"port": 0}),
        "spec.modelServerConfig.port: Invalid value: 0: spec.modelServerConfig.port in body should be "
        "greater than or equal to 1",
        id="isc-port-0",
    ),
    pytest.param(
        isc("port-big", launcherConfigName="lc", modelServerConfig={"port": 70000}),
        "should be less than or equal to 65535",
        id="isc-port-70000",
    ),
    pytest.param(
        isc("typo", launcherConfigName="lc", modelServerConfig={"port": 8005, "option": "--x"}),
        'unknown field "spec.modelServerConfig.option"',
        id="isc-misspelt-field",
    ),
    pytest.param(
        lcfg("zero", maxInstances=0, podTemplate={"spec": LAUNCHER_POD}),
        "spec.maxInstances: Invalid value: 0: spec.maxInstances in body should be greater than or equal to 1",
        id="lc-max-instances-0",
    ),
    pytest.param(
        lcfg("no-max", podTemplate={"spec": LAUNCHER_POD}),
        "spec.maxInstances: Required value",
        id="lc-without-max-instances",
    ),
    pytest.param(
        lcfg("no-containers", maxInstances=1, podTemplate={"spec": {"restartPolicy": "Always"}}),
        "spec.podTemplate.spec.containers: Required value",
        id="lc-pod-without-containers",
    ),
    pytest.param(
        lpp(
            "twice",
            enhancedNodeSelector=SELECTOR,
            countForLauncher=[
                {"launcherConfigName": "lc-a", "launcherCount": 1},
                {"launcherConfigName": "lc-a", "launcherCount": 2},
            ],
        ),
        'spec.countForLauncher[1]: Duplicate value: {"launcherConfigName":"lc-a"}',
        id="lpp-duplicate-launcher-config-A16",
    ),
    pytest.param(
        lpp(
            "bad-quantity",
            enhancedNodeSelector={**SELECTOR, "allocatableResources": {"nvidia.com/gpu": {"min": "eight"}}},
            countForLauncher=[{"launcherConfigName": "lc-a", "launcherCount": 1}],
        ),
        'spec.enhancedNodeSelector.allocatableResources.nvidia.com/gpu.min: Invalid value: "eight"',
        id="lpp-min-not-a-quantity",
    ),
    pytest.param(
        lpp("no-selector", countForLauncher=[{"launcherConfigName": "lc-a", "launcherCount": 1}]),
        "spec.enhancedNodeSelector: Required value",
        id="lpp-without-selector",
    ),
]


@pytest.mark.parametrize(("obj", "message"), BAD)
def test_bad_objects_are_refused_naming_the_field(
    cluster: ClusterHandle, installed: str, obj: dict[str, Any], message: str
) -> None:
    code, out = apply(cluster, installed, obj)
    assert code != 0 and message in out, out
    got = cluster.run_kubectl(
        "get",
        obj["kind"].lower(),
        obj["metadata"]["name"],
        "-n",
        installed,
        "--ignore-not-found",
        "-o",
        "name",
    )
    assert got.stdout.strip() == "", f"stored despite the error: {got.stdout}"


def test_status_is_a_subresource_that_spec_writers_cannot_set(cluster: ClusterHandle, installed: str) -> None:
    ns = installed
    code, out = apply(
        cluster, ns, isc("with-status", launcherConfigName="lc", modelServerConfig={"port": 8006})
    )
    assert code == 0, out
    status = json.dumps({"status": {"observedGeneration": 1, "errors": ['LauncherConfig "lc" not found']}})
    cluster.run_kubectl("patch", "isc", "with-status", "-n", ns, "--type=merge", "-p", status)
    stored = json.loads(cluster.run_kubectl("get", "isc", "with-status", "-n", ns, "-o", "json").stdout)
    assert "status" not in stored or not stored["status"].get("errors"), stored
    cluster.run_kubectl(
        "patch", "isc", "with-status", "-n", ns, "--type=merge", "--subresource=status", "-p", status
    )
    stored = json.loads(cluster.run_kubectl("get", "isc", "with-status", "-n", ns, "-o", "json").stdout)
    assert stored["status"] == {"observedGeneration": 1, "errors": ['LauncherConfig "lc" not found']}
