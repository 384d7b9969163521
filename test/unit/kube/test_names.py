"""Label keys and values as Kubernetes accepts them."""

from __future__ import annotations

import pytest

from dpctl.kube.names import label_value_problems, qualified_name_problems


@pytest.mark.parametrize("key", ["model", "example.com/model", "a", "A_b.c-9", "x.y.z/" + "n" * 63])
def test_qualified_names_kubernetes_accepts(key: str) -> None:
    assert qualified_name_problems(key) == []


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "name part must be non-empty"),
        ("example.com/", "name part must be non-empty"),
        ("/model", "prefix part must be non-empty"),
        ("Example.com/model", "prefix part must be a lowercase DNS subdomain"),
        ("a/b/c", "at most one '/'"),
        ("-model", "name part must be alphanumeric"),
        ("m" * 64, "no more than 63 characters"),
        ("has space", "name part must be alphanumeric"),
    ],
)
def test_qualified_names_kubernetes_refuses_say_why(key: str, problem: str) -> None:
    assert any(problem in p for p in qualified_name_problems(key)), qualified_name_problems(key)


@pytest.mark.parametrize("value", ["", "opt-125m", "v1.2_3"])
def test_label_values_kubernetes_accepts(value: str) -> None:
    assert label_value_problems(value) == []


@pytest.mark.parametrize("value", ["-x", "x-", "a b", "v" * 64, "a/b"])
def test_label_values_kubernetes_refuses(value: str) -> None:
    assert label_value_problems(value)
