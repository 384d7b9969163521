"""The server-patch template: Go spelling, Jinja spelling, errors, and the sandbox."""

from __future__ import annotations

import time

import pytest

from dpctl.podbuild.template import (
    RENDERED_MAX_BYTES,
    TEMPLATE_MAX_BYTES,
    TemplateError,
    render_server_patch,
)

DATA = {"NodeName": "gpu-node-1"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("claimName: vcp-local-{{ .NodeName }}\n", "claimName: vcp-local-gpu-node-1\n", id="go"),
        pytest.param("n: {{.NodeName}}", "n: gpu-node-1", id="go-no-spaces"),
        pytest.param("n: {{   .NodeName\t}}", "n: gpu-node-1", id="go-odd-spaces"),
        pytest.param("n: {{ NodeName }}", "n: gpu-node-1", id="jinja"),
        pytest.param("a:\n  {{- .NodeName }}", "a:gpu-node-1", id="go-left-trim"),
        pytest.param("a: {{ .NodeName -}}  \n  b", "a: gpu-node-1b", id="go-right-trim"),
        pytest.param("a: x  {{- NodeName -}}  y", "a: xgpu-node-1y", id="jinja-both-trims"),
        pytest.param("a: {{ NodeName | upper }}", "a: GPU-NODE-1", id="filter-upper"),
        pytest.param("a: {{ ' x ' | trim ~ NodeName }}", "a: xgpu-node-1", id="concat-and-trim"),
        pytest.param("{% if NodeName == 'gpu-node-1' %}a: 1{% else %}a: 2{% endif %}", "a: 1", id="if"),
        pytest.param(
            "a: {{ 'big' if 'gpu' in NodeName else 'small' }}", "a: big", id="conditional-expression"
        ),
        pytest.param("a: '.NodeName {{ '{{' }}'", "a: '.NodeName {{'", id="text-that-looks-like-go"),
        pytest.param("a: 1 {# a comment #}\n", "a: 1 \n", id="comment-keeps-trailing-newline"),
        pytest.param("no template at all\n", "no template at all\n", id="plain-text"),
    ],
)
def test_renders(text: str, expected: str) -> None:
    assert render_server_patch(text, DATA) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "a\nb\nc: {{ .NodeNam }}", "line 3: no field 'NodeNam' in the template data", id="go-missing-key"
        ),
        pytest.param("c: {{ LocalVolume }}", "line 1: no field 'LocalVolume'", id="jinja-missing-key"),
        pytest.param(
            "a\n{{ .Node.Name }}", "line 2: unexpected '.' (of Go's template actions only", id="go-chain"
        ),
        pytest.param('{{ printf "%s" .NodeName }}', "line 1: ", id="go-function"),
        pytest.param("a: {{ NodeName", "line 1: unexpected end of template", id="unclosed"),
        pytest.param("{% if NodeName %}", "line 1: Unexpected end of template", id="unclosed-if"),
        pytest.param("{{ NodeName < 3 }}", "line 1: '<' not supported", id="runtime-type-error"),
    ],
)
def test_errors_say_where_and_why(text: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render_server_patch(text, DATA)
    assert message in str(caught.value)


ESCAPES = [
    ("{{ ''.__class__ }}", "attribute access"),
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "function calls"),
    ("{{ self }}", "no field 'self'"),
    ("{{ self.__init__.__globals__ }}", "attribute access"),
    ("{{ cycler.__init__.__globals__.os }}", "attribute access"),
    ("{{ joiner }}", "no field 'joiner'"),
    ("{{ namespace() }}", "function calls"),
    ("{{ lipsum() }}", "function calls"),
    ("{{ range(10) }}", "function calls"),
    ("{{ config }}", "no field 'config'"),
    ("{{ NodeName['__class__'] }}", "item access"),
    ("{{ NodeName[0:3] }}", "item access"),
    ("{{ NodeName | attr('__class__') }}", "filter 'attr' is not allowed"),
    ("{{ NodeName | format('%s') }}", "filter 'format' is not allowed"),
    ("{{ NodeName | map('upper') }}", "filter 'map' is not allowed"),
    ("{{ NodeName is defined }}", "tests"),
    ("{% import 'os' as os %}", "{% import %}"),
    ("{% from 'x' import y %}", "{% from ... import %}"),
    ("{% include '/etc/passwd' %}", "{% include %}"),
    ("{% extends 'base' %}", "{% extends %}"),
    ("{% set x = NodeName %}{{ x }}", "assignments"),
    ("{% for i in NodeName %}{{ i }}{% endfor %}", "loops"),
    ("{% macro m() %}x{% endmacro %}", "macros"),
    ("{% with x = 1 %}{% endwith %}", "{% with %} blocks"),
    ("{% filter upper %}x{% endfilter %}", "{% filter %} blocks"),
    ("{{ 9**9**9**9 }}", "arithmetic"),
    ("{{ NodeName * 100000000 }}", "arithmetic"),
    ("{{ -1 }}", "arithmetic"),
]


@pytest.mark.parametrize(("text", "refusal"), ESCAPES, ids=[text for text, _ in ESCAPES])
def test_escapes_are_refused_before_anything_runs(text: str, refusal: str) -> None:
    started = time.monotonic()
    with pytest.raises(TemplateError) as caught:
        render_server_patch(text, DATA)
    assert refusal in str(caught.value)
    assert str(caught.value).startswith("line 1: ")
    assert time.monotonic() - started < 1  # constant folding of 9**9**9**9 would never finish


def test_input_size_is_limited() -> None:
    with pytest.raises(TemplateError, match=f"the limit is {TEMPLATE_MAX_BYTES}"):
        render_server_patch("a" * (TEMPLATE_MAX_BYTES + 1), DATA)
    assert render_server_patch("a" * TEMPLATE_MAX_BYTES, DATA) == "a" * TEMPLATE_MAX_BYTES


def test_output_size_is_limited() -> None:
    big = {"NodeName": "n" * 253}
    text = "{{NodeName}}" * (RENDERED_MAX_BYTES // 253 + 1)
    assert len(text) <= TEMPLATE_MAX_BYTES
    with pytest.raises(TemplateError, match=f"renders to more than {RENDERED_MAX_BYTES} bytes"):
        render_server_patch(text, big)


def test_data_values_are_not_templates() -> None:
    assert render_server_patch("{{ NodeName }}", {"NodeName": "{{ 7 }}"}) == "{{ 7 }}"
