"""The launcher path's example manifests (deploy/examples/launcher/) are what the code accepts and
fit together: each InferenceServerConfig and the LauncherConfig parse as the CRDs' types, the
LauncherConfig builds a launcher Pod, the options pass the controller's checks, the routing
labels are allowed, every requester names an ISC that exists and that ISC names the
LauncherConfig, and the recipe and the demo use exactly these files.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from dpctl import api
from dpctl.fma.v1alpha1 import API_VERSION, InferenceServerConfigSpec, LauncherConfigSpec
from dpctl.podbuild.launcher import launcher_for_node, launcher_template
from dpctl.podbuild.routing import RoutingMetadata, options_problem, routing_problems

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "deploy" / "examples" / "launcher"
RECIPE = REPO / "docs" / "launcher-recipe.md"
DEMO = REPO / "hack" / "run-demo.sh"


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    docs = [d for p in sorted(EXAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text())]
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def launcher_pod() -> dict[str, Any]:
    (lc,) = by_kind("LauncherConfig").values()
    return launcher_for_node(launcher_template({**lc, "metadata": {**lc["metadata"], "uid": "u1"}}), "node-1")


def test_the_launcher_config_builds_a_launcher_pod() -> None:
    (lc,) = by_kind("LauncherConfig").values()
    assert lc["apiVersion"] == API_VERSION
    spec = LauncherConfigSpec.model_validate(lc["spec"])
    assert spec.max_instances >= 2  # the recipe's warm step keeps two instances in one launcher
    pod = launcher_pod()
    (server,) = [c for c in pod["spec"]["containers"] if c["name"] == api.INFERENCE_SERVER_CONTAINER]
    # Any image whose repository ends in /launcher runs dpctl's launcher on the local cluster.
    assert server["image"].rsplit(":", 1)[0].endswith("/launcher")
    assert pod["metadata"]["labels"][api.LAUNCHER_CONFIG_NAME_LABEL] == lc["metadata"]["name"]


def test_the_launchers_service_account_may_get_and_patch_pods() -> None:
    (lc,) = by_kind("LauncherConfig").values()
    account = lc["spec"]["podTemplate"]["spec"]["serviceAccountName"]
    assert account in by_kind("ServiceAccount")
    (binding,) = [
        b
        for b in by_kind("RoleBinding").values()
        if {"kind": "ServiceAccount", "name": account} in b["subjects"]
    ]
    role = by_kind("Role")[binding["roleRef"]["name"]]
    assert {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]} in role["rules"]


@pytest.mark.parametrize("name", sorted(by_kind("InferenceServerConfig")))
def test_each_isc_is_valid_and_names_the_launcher_config(name: str) -> None:
    isc = by_kind("InferenceServerConfig")[name]
    assert isc["apiVersion"] == API_VERSION
    spec = InferenceServerConfigSpec.model_validate(isc["spec"])
    assert spec.launcher_config_name in by_kind("LauncherConfig")
    server = spec.model_server_config
    assert options_problem(server.options) is None
    assert "--enable-sleep-mode" in server.options.split()
    meta = launcher_pod()["metadata"]
    routing = RoutingMetadata(server.labels, server.annotations)
    assert routing_problems(routing, meta["labels"], meta.get("annotations") or {}) == []


def test_the_iscs_use_different_ports() -> None:
    ports = [i["spec"]["modelServerConfig"]["port"] for i in by_kind("InferenceServerConfig").values()]
    assert len(ports) == len(set(ports)) >= 2


@pytest.mark.parametrize("name", sorted(by_kind("ReplicaSet")))
def test_each_requester_replicaset_names_an_isc_and_asks_for_a_gpu(name: str) -> None:
    rs = by_kind("ReplicaSet")[name]
    template = rs["spec"]["template"]
    assert rs["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    isc = template["metadata"]["annotations"][api.INFERENCE_SERVER_CONFIG_ANNOTATION]
    assert isc in by_kind("InferenceServerConfig")
    (container,) = template["spec"]["containers"]
    assert container["name"] == api.INFERENCE_SERVER_CONTAINER
    assert container["image"].rsplit(":", 1)[0].endswith("/requester")
    assert container["resources"]["limits"][api.GPU_RESOURCE] == "1"
    # The demo re-pins this exact line to the cluster's first Node.
    assert template["spec"]["nodeSelector"] == {api.HOSTNAME_LABEL: "node-1"}


def test_the_recipe_and_the_demo_use_existing_example_files() -> None:
    named = set(re.findall(r"deploy/examples/launcher/([\w.-]+\.yaml)", RECIPE.read_text()))
    named |= {f"{m}.yaml" for m in re.findall(r'"\$examples/([\w.-]+)\.yaml"', DEMO.read_text())}
    present = {p.name for p in EXAMPLES.glob("*.yaml")}
    assert named and named <= present
    assert present <= named, f"examples the recipe never uses: {sorted(present - named)}"
    assert "kubernetes.io/hostname: node-1" in DEMO.read_text()
