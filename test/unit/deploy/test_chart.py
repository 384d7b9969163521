"""The Helm chart deploy/helm/dpctlr: rendered output against golden files, and the properties
that matter on their own (least-privilege RBAC, hardened security context, the controller's
command line), so a golden regenerated without a careful look still cannot hide a regression.

Needs only the helm binary: ``$HELM``, else the pinned one in the cache (built by
hack/bins/build.sh when missing). ``UPDATE_GOLDEN=1`` rewrites the golden files.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "deploy" / "helm" / "dpctlr"
GOLDEN = Path(__file__).resolve().parent / "golden"
RELEASE = "dpctlr"
NAMESPACE = "dpctl-system"

# name -> --set arguments; each has a golden file <name>.yaml.
VALUE_SETS: dict[str, list[str]] = {
    "defaults": [],
    "recipe": [
        "Image=quay.io/x/fma/dual-pods-controller:b699bc6",
        "NodeViewClusterRole=vcp-node-viewer",
        "SleeperLimit=1",
    ],
    "replicas2": ["Replicas=2", "NodeViewClusterRole=dpctl-node-viewer"],
    "servicemonitor": [
        "ServiceMonitor.Enabled=true",
        "ServiceMonitor.Interval=15s",
        "ServiceMonitor.Labels.release=prometheus",
    ],
    "prometheusrule": ["PrometheusRule.Enabled=true", "PrometheusRule.Labels.release=prometheus"],
}


def _versions() -> dict[str, str]:
    out = {}
    for line in (REPO / "hack" / "versions.env").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            out[key.strip()] = value.strip()
    return out


@cache
def helm() -> str:
    """The helm binary: $HELM, the cached pinned build, or what hack/bins/build.sh builds."""
    if os.environ.get("HELM"):
        return os.environ["HELM"]
    version = _versions()["HELM_VERSION"]
    cache_root = Path(
        os.environ.get("DPCTL_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dpctl"
    )
    cached = cache_root / "helm" / version / "bin" / "helm"
    if os.access(cached, os.X_OK):
        return str(cached)
    built = subprocess.run(
        [str(REPO / "hack" / "bins" / "build.sh")], capture_output=True, text=True, check=True, timeout=3600
    )
    for line in built.stdout.splitlines():
        if line.rstrip("/").endswith(f"/helm/{version}/bin"):
            return str(Path(line) / "helm")
    pytest.fail(f"hack/bins/build.sh printed no helm folder:\n{built.stdout}\n{built.stderr}")


def run_helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm(), *args], capture_output=True, text=True, check=check, timeout=120)


def sets(values: list[str]) -> list[str]:
    return [arg for v in values for arg in ("--set", v)]


def template_text(values: list[str]) -> str:
    return run_helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *sets(values)).stdout


def render(values: list[str]) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(template_text(values)) if d]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


# --- golden files -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_rendered_chart_matches_golden(name: str) -> None:
    got = template_text(VALUE_SETS[name])
    path = GOLDEN / f"{name}.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(got)
    assert path.exists(), f"{path} is missing; run with UPDATE_GOLDEN=1 to create it"
    want = path.read_text()
    if got != want:
        diff = "".join(
            difflib.unified_diff(want.splitlines(True), got.splitlines(True), str(path), "helm template")
        )
        pytest.fail(f"rendered chart differs from {path.name} (UPDATE_GOLDEN=1 after review):\n{diff}")


def test_every_golden_file_has_a_value_set() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.yaml")) == sorted(VALUE_SETS)


# --- lint -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_strict_is_clean(name: str) -> None:
    result = run_helm("lint", "--strict", str(CHART), *sets(VALUE_SETS[name]), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


def test_hack_helm_sh_runs_the_pinned_helm() -> None:
    env = {k: v for k, v in os.environ.items() if k != "HELM"}
    out = subprocess.run(
        [str(REPO / "hack" / "helm.sh"), "version", "--short"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    ).stdout
    assert out.startswith(_versions()["HELM_VERSION"]), out


@pytest.mark.parametrize(
    "values",
    [
        ["LogFormat=xml"],
        ["sleeperLimit=1"],  # misspelt: the schema forbids unknown keys
        ["SleeperLimit=-1"],
        ["MetricsPort=0"],
        ["Image="],
        ["ServiceMonitor.Interval=soon"],
    ],
    ids=lambda v: v[0],
)
def test_schema_rejects_bad_values(values: list[str]) -> None:
    result = run_helm("template", RELEASE, str(CHART), *sets(values), check=False)
    assert result.returncode != 0, f"{values} was accepted"
    assert "schema" in result.stderr.lower() or "values don't meet" in result.stderr.lower(), result.stderr


# --- RBAC -------------------------------------------------------------------------------------


def test_no_cluster_role_binding_without_node_view_cluster_role() -> None:
    kinds = {d["kind"] for d in render([])}
    assert "ClusterRoleBinding" not in kinds
    assert "ClusterRole" not in kinds


def test_node_view_cluster_role_is_bound_cluster_wide_to_the_service_account() -> None:
    docs = render(VALUE_SETS["recipe"])
    crb = one(docs, "ClusterRoleBinding")
    assert crb["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "vcp-node-viewer",
    }
    sa = one(docs, "ServiceAccount")["metadata"]
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"], "namespace": NAMESPACE}]
    # A RoleBinding to the node viewer would grant nothing on Nodes (the upstream chart's bug).
    rb = one(docs, "RoleBinding")
    assert rb["roleRef"]["kind"] == "Role"
    assert "ClusterRole" not in {d["kind"] for d in docs}, "the chart must not define cluster-wide rights"


ALLOWED_RULES = {
    ("", "pods"): {"get", "list", "watch", "create", "update", "patch", "delete"},
    ("", "configmaps"): {"get", "list", "watch"},
    ("", "pods/log"): {"get"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("coordination.k8s.io", "leases"): {"get", "create", "update"},
    ("fma.llm-d.ai", "inferenceserverconfigs"): {"get", "list", "watch"},
    ("fma.llm-d.ai", "launcherconfigs"): {"get", "list", "watch"},
}


def granted(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_role_is_least_privilege(name: str) -> None:
    docs = render(VALUE_SETS[name])
    role = one(docs, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    rights = granted(role)
    for (group, resource), verbs in rights.items():
        assert "*" not in verbs and resource != "*" and group != "*", (group, resource, verbs)
        assert resource not in ("secrets", "nodes", "pods/exec", "serviceaccounts/token")
        assert verbs <= ALLOWED_RULES.get((group, resource), set()), (group, resource, verbs)
    assert rights[("", "pods")] == ALLOWED_RULES[("", "pods")]
    assert rights[("", "configmaps")] == ALLOWED_RULES[("", "configmaps")]
    # The launcher path reads its configs and never writes them.
    assert rights[("fma.llm-d.ai", "inferenceserverconfigs")] == {"get", "list", "watch"}
    assert rights[("fma.llm-d.ai", "launcherconfigs")] == {"get", "list", "watch"}
    # Events are recorded through either API group.
    assert rights[("", "events")] == rights[("events.k8s.io", "events")] == {"create", "patch"}


def test_leases_only_with_leader_election() -> None:
    assert ("coordination.k8s.io", "leases") not in granted(one(render([]), "Role"))
    rights = granted(one(render(["Replicas=2"]), "Role"))
    assert rights[("coordination.k8s.io", "leases")] == {"get", "create", "update"}


def test_pod_logs_only_with_the_log_relay() -> None:
    assert granted(one(render([]), "Role"))[("", "pods/log")] == {"get"}
    assert ("", "pods/log") not in granted(one(render(["LogRelay.Enabled=false"]), "Role"))


def test_role_binding_binds_the_role_to_the_service_account() -> None:
    docs = render([])
    rb, role, sa = one(docs, "RoleBinding"), one(docs, "Role"), one(docs, "ServiceAccount")
    assert rb["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert rb["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
    ]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is True
    assert sa.get("automountServiceAccountToken") is False


# --- the Deployment -----------------------------------------------------------------------------


def test_deployment_is_named_after_the_release() -> None:
    dep = one(render([]), "Deployment")
    assert dep["metadata"]["name"] == RELEASE  # `kubectl logs deploy/dpctlr`
    assert dep["metadata"]["namespace"] == NAMESPACE
    selector = dep["spec"]["selector"]["matchLabels"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()


def test_security_context_is_hardened() -> None:
    docs = render([])
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == psc["runAsGroup"] == 65532
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    csc = container(docs)["securityContext"]
    assert csc["runAsNonRoot"] is True
    assert csc["runAsUser"] == csc["runAsGroup"] == 65532
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert csc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not csc.get("privileged")
    # A read-only root needs a writable /tmp.
    mounts = {m["mountPath"]: m["name"] for m in container(docs)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert not any("hostPath" in v for v in pod["volumes"])
    assert not pod.get("hostNetwork") and not pod.get("hostPID")


def command_flags(docs: list[dict[str, Any]]) -> list[str]:
    cmd = container(docs)["command"]
    assert cmd[:2] == ["dpctl", "controller"]
    assert "args" not in container(docs)
    return list(cmd[2:])


def test_recipe_values_reach_the_command_line() -> None:
    docs = render(VALUE_SETS["recipe"])
    flags = command_flags(docs)
    assert "--sleeper-limit=1" in flags
    assert container(docs)["image"] == "quay.io/x/fma/dual-pods-controller:b699bc6"


def test_defaults_on_the_command_line() -> None:
    flags = command_flags(render([]))
    assert "--sleeper-limit=2" in flags  # the original chart's default
    assert "-v=5" in flags  # so the lines the recipe greps for are logged
    assert "--metrics-port=8002" in flags
    assert "--log-format=text" in flags


def test_namespace_comes_from_the_downward_api() -> None:
    env = {e["name"]: e for e in container(render([]))["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_command_line_is_accepted_by_dpctl_controller() -> None:
    """Every flag the chart passes exists in `dpctl controller` with a valid value."""
    from dpctl.dualpods.main import add_arguments

    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser)
    for values in [
        *VALUE_SETS.values(),
        ["LogFormat=json", "LogLevel=2", "NumWorkers=8", "MetricsPort=9000"],
    ]:
        args = parser.parse_args(command_flags(render(values)))
        assert args.metrics_port in (8002, 9000)
    args = parser.parse_args(command_flags(render(["Replicas=3", "LogFormat=json", "LogLevel=2"])))
    assert args.leader_elect and args.lease_name == RELEASE
    assert args.log_format == "json" and args.verbosity == 2


def test_the_api_rate_limit_values_reach_the_controller_as_its_token_bucket() -> None:
    from dpctl.dualpods.main import add_arguments

    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser)
    defaults = parser.parse_args(command_flags(render([])))
    assert (defaults.kube_api_qps, defaults.kube_api_burst) == (500.0, 1000)
    tuned = parser.parse_args(command_flags(render(["KubeAPIQPS=20", "KubeAPIBurst=5"])))
    assert (tuned.kube_api_qps, tuned.kube_api_burst) == (20.0, 5)


@pytest.mark.parametrize("replicas", [1, 2, 3])
def test_leader_election_iff_several_replicas(replicas: int) -> None:
    docs = render([f"Replicas={replicas}"])
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == replicas
    flags = command_flags(docs)
    assert ("--leader-elect" in flags) == (replicas > 1)
    assert (dep["spec"]["strategy"]["type"] == "Recreate") == (replicas == 1)


def test_probes_use_the_metrics_port() -> None:
    docs = render(["MetricsPort=9100"])
    c = container(docs)
    assert c["ports"] == [{"name": "metrics", "containerPort": 9100, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert "--metrics-port=9100" in command_flags(docs)
    svc = one(docs, "Service")
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert (
        svc["spec"]["selector"].items()
        <= one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"].items()
    )


def test_service_monitor_only_when_enabled() -> None:
    assert "ServiceMonitor" not in {d["kind"] for d in render([])}
    docs = render(VALUE_SETS["servicemonitor"])
    sm = one(docs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    assert sm["spec"]["selector"]["matchLabels"].items() <= one(docs, "Service")["metadata"]["labels"].items()


def test_prometheus_rule_only_when_enabled_and_has_the_rules_file_as_given() -> None:
    """One source: the PrometheusRule's spec is files/alerts.yaml, which plain Prometheus loads."""
    assert "PrometheusRule" not in {d["kind"] for d in render([])}
    rule = one(render(VALUE_SETS["prometheusrule"]), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    assert rule["spec"] == yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())


def test_operator_values_are_applied() -> None:
    docs = render(
        [
            "ImagePullPolicy=Always",
            "NodeSelector.pool=system",
            "Tolerations[0].key=dedicated",
            "Tolerations[0].operator=Exists",
            "Affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=pool",
            "Affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
            "PodAnnotations.example\\.com/team=inference",
            "Resources.limits.memory=1Gi",
            "ExtraArgs={--lease-duration=30,--retry-period=3}",
            "NumWorkers=8",
            "LogFormat=json",
            "LogLevel=2",
        ]
    )
    pod = one(docs, "Deployment")["spec"]["template"]
    c = container(docs)
    assert c["imagePullPolicy"] == "Always"
    assert pod["spec"]["nodeSelector"] == {"pool": "system"}
    assert pod["spec"]["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert "nodeAffinity" in pod["spec"]["affinity"]
    assert pod["metadata"]["annotations"] == {"example.com/team": "inference"}
    assert c["resources"]["limits"]["memory"] == "1Gi"
    flags = command_flags(docs)
    assert flags[-2:] == ["--lease-duration=30", "--retry-period=3"]  # appended after the chart's own
    assert {"--num-workers=8", "--log-format=json", "-v=2"} <= set(flags)


def test_security_context_can_drop_fixed_ids() -> None:
    """Platforms that assign UIDs themselves (OpenShift) need the fixed IDs removable."""
    docs = render(["PodSecurityContext.runAsUser=null", "ContainerSecurityContext.runAsUser=null"])
    assert "runAsUser" not in one(docs, "Deployment")["spec"]["template"]["spec"]["securityContext"]
    csc = container(docs)["securityContext"]
    assert "runAsUser" not in csc and csc["runAsNonRoot"] is True


def test_every_value_is_documented() -> None:
    """Each value has a comment in values.yaml and a row in the chart's README."""
    values_text = (CHART / "values.yaml").read_text()
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load(values_text)
    lines = values_text.splitlines()
    nested = ("ServiceMonitor", "LogRelay", "PrometheusRule")
    names = [k for k in values if k not in nested] + [f"{n}.{k}" for n in nested for k in values[n]]
    for name in names:
        assert f"`{name}`" in readme, f"{name} is not in the README's table"
    comments = [line for line in lines if line.lstrip().startswith("#")]
    for key in values:
        assert any(re.search(rf"\b{key}\b", c) for c in comments), f"{key} has no comment in values.yaml"
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(values) <= set(schema["properties"]), "a value is missing from values.schema.json"
