"""A container's environment and command line, built with the kubelet's rules."""

from __future__ import annotations

from typing import Any

import pytest

from dpsim.kubelet.env import (
    EnvError,
    PodFacts,
    Sources,
    decode_secret_data,
    expand,
    expand_command,
    parse_quantity,
    pod_env,
    process_env,
    referenced_sources,
)

FACTS = PodFacts(
    name="p",
    namespace="ns",
    uid="u-1",
    node_name="node-1",
    service_account="sa",
    pod_ip="127.64.0.2",
    host_ip="127.64.0.1",
    labels={"app": "x"},
    annotations={"a/b": "c"},
)
ALLOCATABLE = {"cpu": "32", "memory": "256Gi"}


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("$(A)", "1"),
        ("x$(A)y$(B)z", "x1y2z"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("$$", "$"),
        ("$$$(A)", "$1"),
        ("$(A", "$(A"),
        ("$A", "$A"),
        ("end$", "end$"),
        ("$()", "$()"),
        ("(A)", "(A)"),
    ],
)
def test_expand_follows_the_kubelet(text: str, want: str) -> None:
    assert expand(text, {"A": "1", "B": "2"}) == want


def test_env_values_see_only_earlier_variables() -> None:
    container = {
        "env": [
            {"name": "A", "value": "a"},
            {"name": "B", "value": "$(A)-$(C)"},
            {"name": "C", "value": "c"},
        ]
    }
    env = pod_env(container, [container], FACTS, Sources(), ALLOCATABLE)
    assert env == {"A": "a", "B": "a-$(C)", "C": "c"}


def test_command_and_args_expand_against_the_whole_env() -> None:
    assert expand_command(["echo", "$(A)", "$$(A)", "$(NOPE)"], {"A": "1"}) == [
        "echo",
        "1",
        "$(A)",
        "$(NOPE)",
    ]


def test_field_refs() -> None:
    paths = {
        "N": "metadata.name",
        "NS": "metadata.namespace",
        "UID": "metadata.uid",
        "NODE": "spec.nodeName",
        "SA": "spec.serviceAccountName",
        "IP": "status.podIP",
        "HIP": "status.hostIP",
        "L": "metadata.labels['app']",
        "AN": "metadata.annotations['a/b']",
    }
    container = {"env": [{"name": k, "valueFrom": {"fieldRef": {"fieldPath": v}}} for k, v in paths.items()]}
    env = pod_env(container, [container], FACTS, Sources(), ALLOCATABLE)
    assert env == {
        "N": "p",
        "NS": "ns",
        "UID": "u-1",
        "NODE": "node-1",
        "SA": "sa",
        "IP": "127.64.0.2",
        "HIP": "127.64.0.1",
        "L": "x",
        "AN": "c",
    }


def test_config_map_and_secret_refs_and_env_from() -> None:
    container: dict[str, Any] = {
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "P_"}, {"secretRef": {"name": "s"}}],
        "env": [
            {"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
            {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
            {"name": "O", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k", "optional": True}}},
        ],
    }
    assert referenced_sources(container) == ({"cm", "absent"}, {"s"})
    sources = Sources({"cm": {"k": "v", "bad key": "x"}}, {"s": decode_secret_data({"pw": "c2VjcmV0"})})
    env = pod_env(container, [container], FACTS, sources, ALLOCATABLE)
    assert env == {"P_k": "v", "pw": "secret", "K": "v", "S": "secret"}


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (
            {"valueFrom": {"configMapKeyRef": {"name": "cm", "key": "nope"}}},
            "couldn't find key nope in ConfigMap ns/cm",
        ),
        ({"valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}, 'secret "gone" not found'),
        ({"valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}}, 'configmap "gone" not found'),
    ],
)
def test_missing_sources_are_config_errors(item: dict[str, Any], message: str) -> None:
    container = {"env": [{"name": "X", **item}]}
    with pytest.raises(EnvError, match=message):
        pod_env(container, [container], FACTS, Sources({"cm": {"k": "v"}}), ALLOCATABLE)


def test_resource_field_refs_round_up_and_default_to_allocatable() -> None:
    container = {
        "name": "c",
        "resources": {"limits": {"cpu": "1500m", "memory": "1Gi"}, "requests": {"cpu": "250m"}},
        "env": [
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {
                "name": "MCPU",
                "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}},
            },
            {
                "name": "MEM",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
            },
        ],
    }
    other = {
        "name": "o",
        "env": [{"name": "C", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}],
    }
    assert pod_env(container, [container], FACTS, Sources(), ALLOCATABLE) == {
        "CPU": "2",
        "MCPU": "250",
        "MEM": "1024",
    }
    assert pod_env(other, [other], FACTS, Sources(), ALLOCATABLE) == {"C": "32"}


@pytest.mark.parametrize(
    ("text", "value"), [("500m", 0.5), ("2", 2), ("1Ki", 1024), ("1e3", 1000), ("1.5G", 1.5e9)]
)
def test_parse_quantity(text: str, value: float) -> None:
    assert float(parse_quantity(text)) == value


def test_contract_variables_win_and_defaults_yield() -> None:
    env = process_env(
        base={"PATH": "/usr/bin", "LANG": "C"},
        from_pod={"HOME": "/root", "NVIDIA_VISIBLE_DEVICES": "all", "X": "1"},
        contract={"NVIDIA_VISIBLE_DEVICES": "GPU-1", "DPCTL_SIM_NODE": "node-1"},
        defaults={"HOME": "/pod/home", "TMPDIR": "/pod/tmp"},
    )
    assert env == {
        "PATH": "/usr/bin",
        "LANG": "C",
        "HOME": "/root",
        "TMPDIR": "/pod/tmp",
        "NVIDIA_VISIBLE_DEVICES": "GPU-1",
        "X": "1",
        "DPCTL_SIM_NODE": "node-1",
    }
