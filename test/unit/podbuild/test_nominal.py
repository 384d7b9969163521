"""build_runner: the recipe's requesters, de-individualisation, pinning, names and every BuildError."""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpctl.api import HEAD, NOMINAL_ANNOTATION, ORIGINAL
from dpctl.podbuild import BuildError, build_runner, fallback_runner_name, runner_name
from dpctl.podbuild.nominal import MAX_NAME_LENGTH, runner_base

UUID = "GPU-4f1e2d3c-0000-1111-2222-333344445555"
Data = Callable[[str], Any]


def requester_with(patch: str, **spec: Any) -> dict[str, Any]:
    """A minimal requester as the API server returns it, with ``patch`` as its server patch."""
    containers = spec.pop("containers", [{"name": "inference-server", "image": "stub"}])
    return {
        "metadata": {
            "name": "req-abcde",
            "namespace": "ns",
            "uid": "u-1",
            "labels": {"app": "x"},
            "annotations": {ORIGINAL.server_patch: patch},
        },
        "spec": {"containers": containers, **spec},
    }


GOOD_PATCH = """\
spec:
  containers:
  - name: inference-server
    image: vllm
    readinessProbe:
      httpGet: {path: /health, port: 8000}
"""


@pytest.mark.parametrize("recipe", ["simple", "staging"])
def test_recipe_requester_gives_the_golden_runner(data: Data, recipe: str) -> None:
    runner = build_runner(data(f"requester-{recipe}.yaml"), "gpu-node-1", [3], [UUID])
    expected = data(f"runner-{recipe}.yaml")
    assert runner.pod == expected
    assert runner.name == expected["metadata"]["name"]
    assert runner.name.endswith("-server")
    assert runner.server_port == 8000
    assert runner.nominal_hash == expected["metadata"]["annotations"][NOMINAL_ANNOTATION]


def test_jinja_spelling_gives_the_same_runner(data: Data) -> None:
    go = data("requester-staging.yaml")
    jinja = copy.deepcopy(go)
    annotations = jinja["metadata"]["annotations"]
    annotations[ORIGINAL.server_patch] = annotations[ORIGINAL.server_patch].replace(
        "{{ .NodeName }}", "{{NodeName}}"
    )
    assert build_runner(jinja, "gpu-node-1", [3], [UUID]) == build_runner(go, "gpu-node-1", [3], [UUID])


def test_the_requester_is_not_changed(data: Data) -> None:
    requester = data("requester-staging.yaml")
    before = copy.deepcopy(requester)
    runner = build_runner(requester, "gpu-node-1", [3], [UUID])
    assert requester == before
    runner.pod["spec"]["containers"][0]["image"] = "changed"
    assert (
        build_runner(requester, "gpu-node-1", [3], [UUID]).pod["spec"]["containers"][0]["image"] != "changed"
    )


def test_kube_api_access_leaves_every_container_and_init_container() -> None:
    """The Go original indexed `containers` by init-container index (crash or stale mount)."""
    token = {"name": "kube-api-access-abcde", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}
    data_mount = {"name": "data", "mountPath": "/data"}
    requester = requester_with(
        GOOD_PATCH,
        initContainers=[
            {"name": "init-a", "image": "busybox", "volumeMounts": [token]},
            {"name": "init-b", "image": "busybox", "volumeMounts": [token, data_mount]},
            {"name": "init-c", "image": "busybox", "volumeMounts": [token]},
        ],
        containers=[{"name": "inference-server", "image": "stub", "volumeMounts": [token]}],
        volumes=[
            {"name": "data", "emptyDir": {}},
            {"name": "kube-api-access-abcde", "projected": {"sources": []}},
        ],
    )
    spec = build_runner(requester, "n", [0], []).pod["spec"]
    assert spec["volumes"] == [{"name": "data", "emptyDir": {}}]
    assert [c.get("volumeMounts") for c in spec["initContainers"]] == [None, [data_mount], None]
    assert "volumeMounts" not in spec["containers"][0]


def test_de_individualisation() -> None:
    requester = requester_with(
        GOOD_PATCH,
        nodeName="n",
        priority=1000,
        preemptionPolicy="PreemptLowerPriority",
        priorityClassName="high",
        overhead={"cpu": "250m"},
        serviceAccount="sa",
        serviceAccountName="sa",
        hostname="req-abcde",
        subdomain="models",
        ephemeralContainers=[{"name": "debug", "image": "busybox"}],
    )
    requester["metadata"]["labels"] |= {
        "statefulset.kubernetes.io/pod-name": "req-abcde",
        "dual-pods.llm-d.ai/dual": "req-abcde-server",
        "dual-pods.llm-d.ai/sleeping": "false",
        "pod-template-hash": "5d4c",
    }
    base = runner_base(requester)
    assert base["metadata"] == {"labels": {"app": "x", "pod-template-hash": "5d4c"}}
    assert base["spec"] == {
        "containers": [{"name": "inference-server", "image": "stub"}],
        "priorityClassName": "high",
        "serviceAccountName": "sa",
        "subdomain": "models",
    }


def test_a_hostname_the_user_chose_is_kept() -> None:
    assert runner_base(requester_with(GOOD_PATCH, hostname="model-host"))["spec"]["hostname"] == "model-host"


def test_pinning() -> None:
    patch = GOOD_PATCH.replace(
        "    image: vllm\n",
        "    image: vllm\n"
        "    env:\n"
        "    - {name: A, value: '1'}\n"
        "    - {name: CUDA_VISIBLE_DEVICES, value: '7'}\n"
        "    - {name: CUDA_DEVICE_ORDER, value: FASTEST_FIRST}\n"
        "    - {name: B, value: $(CUDA_VISIBLE_DEVICES)}\n",
    )
    requester = requester_with(
        patch,
        nodeSelector={"nvidia.com/gpu.product": "NVIDIA-L40S"},
        containers=[
            {
                "name": "inference-server",
                "image": "stub",
                "resources": {"limits": {"nvidia.com/gpu": "2", "cpu": "1"}},
            },
            {"name": "gpu-sidecar", "image": "x", "resources": {"requests": {"nvidia.com/gpu": "1"}}},
            {"name": "plain-sidecar", "image": "y"},
        ],
    )
    runner = build_runner(requester, "gpu-node-1", [5, 2], ["GPU-x", "GPU-y"])
    spec = runner.pod["spec"]
    assert spec["nodeSelector"] == {
        "nvidia.com/gpu.product": "NVIDIA-L40S",
        "kubernetes.io/hostname": "gpu-node-1",
    }
    main, gpu_sidecar, plain_sidecar = spec["containers"]
    assert main["env"] == [
        {"name": "CUDA_VISIBLE_DEVICES", "value": "2,5"},
        {"name": "CUDA_DEVICE_ORDER", "value": "PCI_BUS_ID"},
        {"name": "A", "value": "1"},
        {"name": "B", "value": "$(CUDA_VISIBLE_DEVICES)"},
    ]
    assert main["resources"] == {
        "limits": {"nvidia.com/gpu": "0", "cpu": "1"},
        "requests": {"nvidia.com/gpu": "0"},
    }
    assert gpu_sidecar["resources"] == {"requests": {"nvidia.com/gpu": "0"}}
    assert plain_sidecar == {"name": "plain-sidecar", "image": "y"}
    # GPU 5 is GPU-x and GPU 2 is GPU-y; both lists follow the index order.
    assert runner.pod["metadata"]["annotations"]["dual-pods.llm-d.ai/accelerators"] == "GPU-y,GPU-x"


def test_uuids_must_match_indices() -> None:
    with pytest.raises(ValueError, match="1 GPU UUIDs for 2 GPU indices"):
        build_runner(requester_with(GOOD_PATCH), "n", [0, 1], ["GPU-a"])


def test_metadata_of_the_runner() -> None:
    patch = (
        GOOD_PATCH
        + "metadata:\n  annotations: {prometheus.io/scrape: 'true'}\n  labels: {app: null, model: m}\n"
    )
    runner = build_runner(requester_with(patch), "n", [0], ["GPU-a"])
    assert runner.pod["metadata"] == {
        "name": "req-abcde-server",
        "namespace": "ns",
        "labels": {
            "model": "m",
            "dual-pods.llm-d.ai/dual": "req-abcde",
            "dual-pods.llm-d.ai/sleeping": "false",
        },
        "annotations": {
            "prometheus.io/scrape": "true",
            "dual-pods.llm-d.ai/nominal": runner.nominal_hash,
            "dual-pods.llm-d.ai/requester": "u-1 req-abcde",
            "dual-pods.llm-d.ai/accelerators": "GPU-a",
        },
        "finalizers": ["dual-pods.llm-d.ai/runner"],
    }
    assert runner.pod["apiVersion"] == "v1"
    assert runner.pod["kind"] == "Pod"


def test_names() -> None:
    assert runner_name("req-abcde") == "req-abcde-server"
    assert (
        fallback_runner_name("req-abcde", "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f") == "req-abcde-server-74b61"
    )
    long = "a" * 250 + "-bc"
    assert len(runner_name(long)) == MAX_NAME_LENGTH
    assert runner_name(long) == "a" * 246 + "-server"  # no "--": the cut never ends in a dash
    assert len(fallback_runner_name(long, "u")) <= MAX_NAME_LENGTH


def test_long_requester_names_give_valid_label_values() -> None:
    requester = requester_with(GOOD_PATCH)
    requester["metadata"]["name"] = "r" * 62 + "-" + "x" * 20
    label = build_runner(requester, "n", [0], []).pod["metadata"]["labels"]["dual-pods.llm-d.ai/dual"]
    assert label == "r" * 62


def test_renamed() -> None:
    runner = build_runner(requester_with(GOOD_PATCH), "n", [0], [])
    other = runner.renamed(fallback_runner_name("req-abcde", "u-1"))
    assert other.name == other.pod["metadata"]["name"] != runner.pod["metadata"]["name"]
    assert (other.nominal_hash, other.server_port) == (runner.nominal_hash, runner.server_port)


A = ORIGINAL.server_patch


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        pytest.param(
            "a: {{ .NodeNam }}", f"{A}: line 1: no field 'NodeNam' in the template data", id="template"
        ),
        pytest.param(
            "{{ ''.__class__ }}", f"{A}: line 1: attribute access cannot be used", id="template-escape"
        ),
        pytest.param("spec:\n  containers: [\n  x: 1", f"{A}: line 3: invalid YAML: ", id="yaml"),
        pytest.param(
            "spec: 1\nspec: 2\n", f"{A}: line 2: invalid YAML: duplicate key 'spec'", id="duplicate-key"
        ),
        pytest.param(
            "a: 1\n\n\n{{- '' }}\nspec: [\n",
            f"{A}: line 3 of the rendered template: invalid YAML",
            id="yaml-line-after-rendering",
        ),
        pytest.param(
            "- a\n- b\n", f"{A}: must be a YAML mapping (of metadata and spec), not a list", id="list"
        ),
        pytest.param(
            "just text", f"{A}: must be a YAML mapping (of metadata and spec), not the scalar", id="scalar"
        ),
        pytest.param(
            "# nothing\n", f"{A}: must be a YAML mapping (of metadata and spec), not an empty", id="empty"
        ),
        pytest.param(
            "spec:\n  containers:\n  - image: vllm\n",
            f"{A}: cannot apply it: spec.containers[0]: the item has no 'name'",
            id="smp",
        ),
        pytest.param(
            GOOD_PATCH.replace("image:", "imagee:"),
            f'{A}: the patched Pod is invalid: unknown field "spec.containers[0].imagee"',
            id="unknown-field",
        ),
        pytest.param(
            GOOD_PATCH.replace("port: 8000", "port: '8000'"),
            f'{A}: in the patched Pod, spec.containers[0].readinessProbe.httpGet.port: named port "8000"',
            id="port-as-string",
        ),
        pytest.param(
            GOOD_PATCH + "metadata: {name: fixed}\n",
            f"{A}: may set only metadata.labels, metadata.annotations and spec, not metadata.name",
            id="metadata-name",
        ),
        pytest.param(
            GOOD_PATCH + "status: {phase: Running}\nkind: Pod\n",
            f"{A}: may set only metadata.labels, metadata.annotations and spec, not status, kind",
            id="status-and-kind",
        ),
        pytest.param(
            "spec:\n  containers:\n  - {name: inference-server, $patch: delete}\n",
            f'{A}: in the patched Pod, there is no container named "inference-server"',
            id="no-inference-server",
        ),
        pytest.param(
            "spec: {containers: [{name: inference-server, image: vllm}]}",
            f"{A}: in the patched Pod, spec.containers[0].readinessProbe.httpGet.port is missing",
            id="no-probe",
        ),
        pytest.param(
            GOOD_PATCH.replace("port: 8000", "port: metrics"),
            f'{A}: in the patched Pod, spec.containers[0].readinessProbe.httpGet.port: named port "metrics"',
            id="named-port",
        ),
        pytest.param("a: " + "x" * 70_000, f"{A}: is 70003 bytes long", id="too-big"),
    ],
)
def test_build_errors(patch: str, message: str) -> None:
    with pytest.raises(BuildError) as caught:
        build_runner(requester_with(patch), "n", [0], [])
    assert str(caught.value).startswith(message)


def test_build_error_without_annotation() -> None:
    requester = requester_with(GOOD_PATCH)
    del requester["metadata"]["annotations"]
    with pytest.raises(
        BuildError,
        match=re.escape(
            "must carry exactly one of the annotations dual-pod.llm-d.ai/server-patch and dual-pods"
        ),
    ):
        build_runner(requester, "n", [0], [])


def test_a_head_requesters_build_errors_name_its_annotation_and_its_runner_the_provider_finalizer() -> None:
    bad = requester_with("spec: [")
    annotations = bad["metadata"]["annotations"]
    annotations[HEAD.server_patch] = annotations.pop(ORIGINAL.server_patch)
    with pytest.raises(BuildError) as caught:
        build_runner(bad, "n", [0], [])
    assert str(caught.value).startswith("dual-pods.llm-d.ai/server-patch: line 1: invalid YAML")
    good = requester_with(GOOD_PATCH)
    annotations = good["metadata"]["annotations"]
    annotations[HEAD.server_patch] = annotations.pop(ORIGINAL.server_patch)
    assert build_runner(good, "n", [0], []).pod["metadata"]["finalizers"] == ["dual-pods.llm-d.ai/provider"]


def test_build_error_without_identity() -> None:
    requester = requester_with(GOOD_PATCH)
    del requester["metadata"]["uid"]
    with pytest.raises(BuildError, match="has no name or UID"):
        build_runner(requester, "n", [0], [])


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=5)
    | st.sampled_from(["$patch", "delete", "http"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "spec",
                    "metadata",
                    "containers",
                    "name",
                    "inference-server",
                    "readinessProbe",
                    "httpGet",
                    "port",
                    "env",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@given(st.text(max_size=200) | json_like.map(yaml.safe_dump))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_any_patch_text_builds_or_raises_build_error(patch: str) -> None:
    with contextlib.suppress(BuildError):
        build_runner(requester_with(patch), "n", [0], [])
