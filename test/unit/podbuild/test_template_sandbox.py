"""The server-patch template sandbox: what a hostile template tries, and proof that it gets nowhere.

`test_template.py` has the first list of escapes (one of each construct); this file adds the
classic Jinja sandbox escapes and their variants, every filter Jinja ships but ours, the globals
a Jinja or Flask template expects, format-string tricks, denial of service by size, depth and
arithmetic, and checks that a refused template runs nothing at all: no method of a data value
is called, no data value is even read, and a callable smuggled into the data is never called.
Every refusal must be a TemplateError whose message starts with the annotation's name.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import jinja2
import pytest
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from dpctl.podbuild import template
from dpctl.podbuild.template import MAX_NESTING, SAFE_FILTERS, TemplateError, render_server_patch

DATA = {"NodeName": "gpu-node-1"}


def refused(text: str, data: Mapping[str, Any] = DATA) -> str:
    """The reason ``text`` is refused, after checking that the refusal is quick."""
    started = time.monotonic()
    with pytest.raises(TemplateError) as caught:
        render_server_patch(text, cast("Mapping[str, str]", data))
    assert time.monotonic() - started < 1
    return str(caught.value)


ATTRIBUTE_WALKS = [
    ("{{ NodeName.__class__.__mro__ }}", "attribute access"),
    ("{{ NodeName.__class__.mro() }}", "function calls"),
    ("{{ ().__class__.__base__.__subclasses__() }}", "function calls"),
    ("{{ NodeName.__class__.__subclasses__ }}", "attribute access"),
    ("{{ NodeName.upper.__globals__ }}", "attribute access"),
    ("{{ NodeName.__init__.__globals__['__builtins__'] }}", "item access"),
    ("{{ (NodeName|upper).__class__ }}", "attribute access"),
    ("{{ NodeName if NodeName.__doc__ else 'x' }}", "attribute access"),
    ("{{ self._TemplateReference__context }}", "attribute access"),
    ("{{ NodeName.__len__ }}", "attribute access"),
    ("{{ [NodeName] }}", "the List construct"),
    ("{{ {'k': NodeName} }}", "the Dict construct"),
    ("{{ (NodeName, NodeName) }}", "the Tuple construct"),
    ("{{ __builtins__ }}", "no field '__builtins__'"),
    ("{{ __import__('os').system('id') }}", "function calls"),
    ("{{ caller() }}", "function calls"),
    ("{{ super() }}", "function calls"),
]
TAGS = [
    ("{% import NodeName as m %}", "{% import %}"),
    ("{% from NodeName import system %}", "{% from ... import %}"),
    ("{% include NodeName %}", "{% include %}"),
    ("{% include ['a', '/etc/passwd'] ignore missing %}", "{% include %}"),
    ("{% include 'http://169.254.169.254/latest/meta-data/' %}", "{% include %}"),
    ("{% extends NodeName %}", "{% extends %}"),
    ("{% macro m(x) %}{{ x }}{% endmacro %}{{ m(NodeName) }}", "macros"),
    ("{% call m() %}x{% endcall %}", "macro calls"),
    ("{% block b %}{{ NodeName }}{% endblock %}", "{% block %}"),
    ("{% set x %}{{ NodeName }}{% endset %}", "assignments"),
    ("{% autoescape false %}{{ NodeName }}{% endautoescape %}", "the Scope construct"),
    ("{% do NodeName.upper() %}", "unknown tag 'do'"),
    ("{% debug %}", "unknown tag 'debug'"),
]
GLOBALS = [
    f"{{{{ {name} }}}}"
    for name in [
        "lipsum", "cycler", "namespace", "range", "dict", "request", "session", "g", "url_for",
        "get_flashed_messages", "loop", "caller", "varargs", "kwargs", "environment", "os", "sys",
    ]
]  # fmt: skip
FILTERS = sorted(set(jinja2.Environment().filters) - SAFE_FILTERS - {"attr", "format", "map"})
FORMAT_TRICKS = [
    ('{{ "%s" % NodeName }}', "arithmetic"),
    ('{{ "%(a)s" % {"a": NodeName} }}', "arithmetic"),
    ('{{ "{0.__class__}".format(NodeName) }}', "function calls"),
    ('{{ "{0}".format_map }}', "attribute access"),
    ('{{ "%s"|format(NodeName) }}', "filter 'format' is not allowed"),
    ("{{ NodeName|format }}", "filter 'format' is not allowed"),
]
DENIALS = [
    ("{{ 9**9**9 }}", "arithmetic"),
    ("{{ 'a' * 10**9 }}", "arithmetic"),
    ("{{ NodeName|trim(NodeName * 10**9) }}", "arithmetic"),
    ("{% for i in range(10**9) %}{{ i }}{% endfor %}", "loops"),
    ("{{ range(9**9**9)|list }}", "filter 'list' is not allowed"),
    ("{{ NodeName|center(10**9) }}", "filter 'center' is not allowed"),
    ("{{ " + "9" * 5000 + " }}", "a number literal is too long"),
    ("{{ " + "(" * 20_000 + "NodeName" + ")" * 20_000 + " }}", "nests expressions or blocks too deeply"),
    ("{{ " + "not " * 10_000 + "NodeName }}", "nests expressions or blocks too deeply"),
    ("{{ " + " or ".join(["NodeName"] * 5_000) + " }}", f"more than {MAX_NESTING} deep"),
    ("{% if NodeName %}" * 2_000 + "{% endif %}" * 2_000, "too deeply"),
    (
        "{% if NodeName %}" * (MAX_NESTING + 1) + "{% endif %}" * (MAX_NESTING + 1),
        f"more than {MAX_NESTING} deep",
    ),
]


@pytest.mark.parametrize(("text", "reason"), ATTRIBUTE_WALKS + TAGS + FORMAT_TRICKS + DENIALS)
def test_refused(text: str, reason: str) -> None:
    assert reason in refused(text)


def test_text_that_is_not_unicode_is_refused() -> None:
    """Regression: a lone surrogate made UTF-8 encoding raise UnicodeEncodeError."""
    assert "is not valid Unicode text" in refused("a: \ud800 {{ .NodeName }}")
    refused("a: {{ .NodeName }}", {"NodeName": "\udfff"})


@pytest.mark.parametrize("text", GLOBALS)
def test_jinja_and_flask_globals_are_not_there(text: str) -> None:
    assert "no field" in refused(text)


@pytest.mark.parametrize("name", FILTERS)
def test_every_other_jinja_filter_is_refused(name: str) -> None:
    assert f"filter {name!r} is not allowed" in refused(f"{{{{ NodeName|{name} }}}}")


def test_nesting_up_to_the_limit_renders() -> None:
    depth = MAX_NESTING - 2  # Template > If > ... > If > Output > TemplateData
    assert render_server_patch("{% if NodeName %}" * depth + "x" + "{% endif %}" * depth, DATA) == "x"
    assert render_server_patch("{{ " + "(" * 40 + "NodeName" + ")" * 40 + " }}", DATA) == "gpu-node-1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "{% raw %}{{ NodeName.__class__ }}{% endraw %}", "{{ NodeName.__class__ }}", id="raw-is-text"
        ),
        pytest.param("{{ '{0.__class__}' ~ NodeName }}", "{0.__class__}gpu-node-1", id="braces-are-text"),
        pytest.param("{{ '%(x)s %s' ~ NodeName }}", "%(x)s %sgpu-node-1", id="percent-is-text"),
        pytest.param(
            "{{ '{{ NodeName.__class__ }}' }}", "{{ NodeName.__class__ }}", id="template-in-a-string"
        ),
    ],
)
def test_what_looks_like_code_inside_allowed_constructs_stays_text(text: str, expected: str) -> None:
    assert render_server_patch(text, DATA) == expected


# --- a refused template runs nothing ---------------------------------------------------------------


class Spy(str):
    """A data value that records every method a template could reach on it."""

    __slots__ = ("calls",)
    calls: list[str]

    def __new__(cls, value: str) -> Spy:
        spy = super().__new__(cls, value)
        spy.calls = []
        return spy

    def __str__(self) -> str:
        self.calls.append("__str__")
        return str.__str__(self)

    def __add__(self, other: str) -> str:
        self.calls.append("__add__")
        return str.__add__(self, other)

    def __eq__(self, other: object) -> bool:
        self.calls.append("__eq__")
        return str.__eq__(self, other)

    __hash__ = str.__hash__

    def __contains__(self, other: object) -> bool:
        self.calls.append("__contains__")
        return str.__contains__(self, cast("str", other))

    def upper(self) -> str:
        self.calls.append("upper")
        return str.upper(self)

    def lower(self) -> str:
        self.calls.append("lower")
        return str.lower(self)

    def strip(self, chars: str | None = None) -> str:
        self.calls.append("strip")
        return str.strip(self, chars)


class Watched(Mapping[str, Any]):
    """Template data that records each value read from it (asking which names exist is fine)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values
        self.reads: list[str] = []

    def __getitem__(self, key: str) -> Any:
        self.reads.append(key)
        return self._values[key]

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


USES_THE_VALUE = (
    "a: {{ NodeName|upper }} {{ NodeName|lower|trim }} {{ NodeName ~ 'x' }} {{ 'g' in NodeName }}\n"
)


def test_the_spy_sees_what_an_allowed_template_does() -> None:
    spy = Spy("gpu-node-1")
    data = Watched({"NodeName": spy})
    rendered = render_server_patch(USES_THE_VALUE, cast("Mapping[str, str]", data))
    assert rendered == "a: GPU-NODE-1 gpu-node-1 gpu-node-1x True\n"
    assert {"upper", "lower", "__contains__"} <= set(spy.calls)
    assert data.reads == ["NodeName"]


@pytest.mark.parametrize(
    "tail",
    [
        "{{ NodeName.__class__ }}",
        "{{ NodeName|attr('upper') }}",
        "{{ NodeName * 2 }}",
        "{% for c in NodeName %}{{ c }}{% endfor %}",
        "{{ Missing }}",
        "{{ NodeName",
        "{{ " + "(" * 5_000 + "NodeName" + ")" * 5_000 + " }}",
    ],
)
def test_a_refused_template_runs_nothing_before_it(tail: str) -> None:
    """Allowed constructs before the refused one never run: the whole template is checked first."""
    spy = Spy("gpu-node-1")
    data = Watched({"NodeName": spy})
    refused(USES_THE_VALUE + tail, data)
    assert spy.calls == []
    assert data.reads == []


def test_a_callable_in_the_data_is_never_called(tmp_path: Path) -> None:
    marker = tmp_path / "side-effect"

    def hook(*args: object, **kwargs: object) -> str:
        marker.write_text("called")
        return "called"

    data = {"NodeName": "n", "hook": hook}
    for text in [
        "{{ hook() }}",
        "{{ hook.__call__() }}",
        "{{ NodeName|attr('hook') }}",
        "{% if hook() %}{% endif %}",
    ]:
        refused(text, data)
    assert not marker.exists()


def test_files_named_in_a_template_are_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.yaml"
    secret.write_text("SECRET")
    for text in [
        f"{{% include '{secret}' %}}",
        f"{{% import '{secret}' as s %}}",
        f"{{% extends '{secret}' %}}",
    ]:
        assert "SECRET" not in refused(text)
    assert render_server_patch(f"a: '{secret}'", DATA) == f"a: '{secret}'"


# --- the second line of defence ---------------------------------------------------------------------


def test_the_environment_has_no_loader_globals_tests_or_extra_filters() -> None:
    environment = template._environment()
    assert isinstance(environment, ImmutableSandboxedEnvironment)
    assert environment.loader is None
    assert dict(environment.globals) == {}
    assert dict(environment.tests) == {}
    assert set(environment.filters) == SAFE_FILTERS
    assert environment.undefined is jinja2.StrictUndefined
    assert environment.extensions == {}


@pytest.mark.parametrize(
    "text",
    [
        "{{ x.__class__.__mro__ }}",
        "{{ x.upper.__globals__ }}",
        "{{ x.__class__.__subclasses__() }}",
        "{{ '{0.__class__}'.format(x) }}",
        "{{ l.append(1) }}",
    ],
)
def test_the_sandbox_alone_refuses_what_the_language_check_refuses_first(text: str) -> None:
    """Were the construct check ever bypassed, the sandbox still blocks internals and mutation."""
    with pytest.raises((SecurityError, jinja2.UndefinedError)):
        template._environment().from_string(text).render(x="gpu-node-1", l=[])
