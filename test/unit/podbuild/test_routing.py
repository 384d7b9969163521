"""An ISC's routing labels and annotations: their rules and their annotation (contract §2.1, R8)."""

from __future__ import annotations

import pytest

from dpctl.podbuild.routing import RoutingMetadata, options_problem, routing_problems


def test_good_routing_metadata_has_no_problems() -> None:
    meta = RoutingMetadata({"model": "opt-125m", "example.com/tier": "gold"}, {"example.com/owner": "team a"})
    assert routing_problems(meta, {"app": "launcher"}, {}) == []


def test_every_problem_is_listed_in_upstream_s_words() -> None:
    meta = RoutingMetadata(
        labels={"dual-pods.llm-d.ai/dual": "x", "app": "y", "bad key": "z", "ok": "not valid!"},
        annotations={"kubernetes.io/psp": "x", "note": "y"},
    )
    problems = routing_problems(meta, {"app": "launcher"}, {"note": "kept"})
    assert problems[:3] == [
        'ISC label key "app" collides with existing pod label',
        'ISC label key "bad key" is not a valid qualified name: name part must be alphanumeric '
        "characters, '-', '_' or '.', starting and ending with an alphanumeric character",
        'ISC label key "dual-pods.llm-d.ai/dual" uses a reserved prefix',
    ]
    assert 'ISC annotation key "kubernetes.io/psp" uses a reserved prefix' in problems
    assert 'ISC annotation key "note" collides with existing pod annotation' in problems
    assert any(p.startswith('ISC label value "not valid!" for key "ok" is not valid') for p in problems)
    assert len(problems) == 6


def test_the_annotation_leaves_out_empty_maps_and_reads_back() -> None:
    meta = RoutingMetadata({"b": "2", "a": "1"})
    assert meta.annotation_value() == '{"labels":{"a":"1","b":"2"}}'
    assert RoutingMetadata().annotation_value() == "{}"
    assert RoutingMetadata.parse(meta.annotation_value()) == RoutingMetadata({"a": "1", "b": "2"}, {})


@pytest.mark.parametrize("text", ["[]", '{"labels": {"a": 1}}', '{"labels": "x"}', "nope"])
def test_a_garbled_annotation_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        RoutingMetadata.parse(text)


@pytest.mark.parametrize("options", ["--model m --port 9000", "--port=9000", "--model m\t--port 1"])
def test_options_may_not_set_the_port(options: str) -> None:
    assert options_problem(options) == "options must not contain --port"


@pytest.mark.parametrize("options", ["", "--model m --port-offset 3", "--served-model-name--port"])
def test_other_options_are_vllm_s_business(options: str) -> None:
    assert options_problem(options) is None
