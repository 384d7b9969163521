"""Strict, bounded YAML loading."""

from __future__ import annotations

from typing import Any

import pytest

from dpctl.podbuild.yamltext import MAX_DEPTH, MAX_VALUES, YamlTextError, load_yaml


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param("a: 1\nb: [x, 'y']\n", {"a": 1, "b": ["x", "y"]}, id="plain"),
        pytest.param(
            "d: 2024-01-02\nt: 2024-01-02T03:04:05Z",
            {"d": "2024-01-02", "t": "2024-01-02T03:04:05Z"},
            id="timestamps-stay-strings",
        ),
        pytest.param("a: &x [1]\nb: *x", {"a": [1], "b": [1]}, id="aliases"),
        pytest.param(
            "base: &b {x: 1, y: 1}\nm:\n  <<: *b\n  x: 2",
            {"base": {"x": 1, "y": 1}, "m": {"x": 2, "y": 1}},
            id="merge-key",
        ),
        pytest.param("'on': yes\n'1': 2.5", {"on": True, "1": 2.5}, id="quoted-keys"),
        pytest.param("", None, id="empty"),
    ],
)
def test_loads(text: str, value: Any) -> None:
    assert load_yaml(text) == value


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        pytest.param("a: 1\nb: 2\na: 3", 3, "duplicate key 'a'", id="duplicate-key"),
        pytest.param("x:\n  on: 1", 2, "mapping key on is not a string; quote it", id="yaml-1.1-boolean-key"),
        pytest.param("8080: http", 1, "mapping key 8080 is not a string", id="int-key"),
        pytest.param("? [a]\n: 1", 1, "mapping key a collection is not a string", id="collection-key"),
        pytest.param("a: .inf", 1, "infinity and NaN are not valid JSON numbers", id="infinity"),
        pytest.param("a: .nan", 1, "infinity and NaN", id="nan"),
        pytest.param("a: 1\n\tb: 2", 2, "found character '\\t' that cannot start any token", id="tab"),
        pytest.param("a: 1\n---\nb: 2", 2, "expected a single document", id="two-documents"),
        pytest.param(
            "a: !!python/object:os.system x", 1, "could not determine a constructor", id="python-tag"
        ),
        pytest.param("a: b\n\x07", 2, "character #x0007 is not allowed", id="control-character"),
    ],
)
def test_errors(text: str, line: int, reason: str) -> None:
    with pytest.raises(YamlTextError) as caught:
        load_yaml(text)
    assert caught.value.line == line
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"line {line}: ")


def test_alias_bombs_are_stopped() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    with pytest.raises(YamlTextError, match=f"more than {MAX_VALUES} values once aliases are expanded"):
        load_yaml("\n".join(lines))


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000])
def test_depth_is_bounded(depth: int) -> None:
    with pytest.raises(YamlTextError, match=f"nested more than {MAX_DEPTH} levels deep"):
        load_yaml("[" * depth + "]" * depth)
