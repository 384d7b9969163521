"""Properties of the server-patch template renderer, for any text and any node name.

Plain text comes out as it went in; the node-name field substitutes exactly, in every spelling
the recipe and Jinja allow; any other source, however broken, either renders or fails with
TemplateError (never another exception); and the output stays within a fixed multiple of the
input.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from dpctl.podbuild.template import RENDERED_MAX_BYTES, TemplateError, render_server_patch

MARKERS = ("{{", "{%", "{#")
# Text rich in the characters templates are made of, plus any other character.
characters = st.sampled_from("{}%#-.|~'\"\n\t \r") | st.characters(codec="utf-8")
plain_text = st.text(characters, max_size=80).filter(lambda text: not any(m in text for m in MARKERS))
unix_text = plain_text.filter(lambda text: "\r" not in text)
# Kubernetes node names: DNS-1123 subdomains.
node_names = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,40}[a-z0-9])?", fullmatch=True)


@given(unix_text)
@settings(max_examples=100)
def test_text_without_template_markers_renders_unchanged(text: str) -> None:
    assert render_server_patch(text, {"NodeName": "n"}) == text


@given(plain_text)
@settings(max_examples=50)
def test_line_breaks_become_newlines_and_nothing_else_changes(text: str) -> None:
    assert render_server_patch(text, {"NodeName": "n"}) == re.sub(r"\r\n?", "\n", text)


FIELD_SPELLINGS = st.sampled_from(
    ["{{ .NodeName }}", "{{.NodeName}}", "{{\t.NodeName  }}", "{{ NodeName }}", "{{NodeName}}"]
)


@given(
    node_names,
    st.lists(st.tuples(FIELD_SPELLINGS, unix_text.filter(lambda t: not t.startswith("}"))), max_size=4),
    unix_text.filter(lambda text: not text.endswith("{")),
)
@settings(max_examples=100)
def test_the_node_name_substitutes_exactly(node: str, pieces: list[tuple[str, str]], head: str) -> None:
    """``head`` then (field, text) pairs; the text after a field must not continue its braces."""
    pieces = [(field, text) for field, text in pieces if not text.endswith("{")] or [("{{ .NodeName }}", "")]
    template = head + "".join(field + text for field, text in pieces)
    expected = head + "".join(node + text for _, text in pieces)
    assert render_server_patch(template, {"NodeName": node}) == expected


@given(node_names, unix_text, unix_text)
@settings(max_examples=50)
def test_trim_markers_strip_the_whitespace_beside_the_field(node: str, before: str, after: str) -> None:
    before = before.rstrip("{")
    rendered = render_server_patch(before + "{{- .NodeName -}}" + after, {"NodeName": node})
    assert rendered == before.rstrip() + node + after.lstrip()


@given(st.text(characters, max_size=200))
@settings(max_examples=50)
def test_data_values_are_never_interpreted(value: str) -> None:
    assert render_server_patch("a: {{ .NodeName }}", {"NodeName": value}) == "a: " + value


FRAGMENTS = st.sampled_from(
    [
        "{{", "}}", "{%", "%}", "{#", "#}", "{{-", "-}}", "{%-", "-%}", ".NodeName", "NodeName", "Other",
        " if ", " else ", "endif", " elif ", " for ", " in ", "endfor", " set ", "=", " raw ", "endraw",
        " include ", " import ", " extends ", " macro ", "endmacro", " call ", " block ", " with ",
        "|", "upper", "lower", "trim", "attr", "format", "map", "(", ")", "[", "]", "{", "}", "'", '"',
        "~", "**", "*", "+", "-", "%", "/", "//", "9", "1e15", "0x10", "1_0", ".", ",", ":", "__class__",
        "__globals__", "mro", "self", "lipsum", "range", "cycler", " not ", " and ", " or ", " is ",
        "==", "<", "\n", "\r\n", " ", "ß", "\u0390",
    ]
)  # fmt: skip
# Any character at all here, lone surrogates included (JSON's "\ud800" escape makes one).
sources = st.lists(FRAGMENTS | st.text(st.characters(), max_size=3), max_size=30).map("".join)


@given(sources, node_names)
@settings(max_examples=200)
def test_any_source_renders_or_fails_with_template_error(source: str, node: str) -> None:
    try:
        rendered = render_server_patch(source, {"NodeName": node})
    except TemplateError as error:
        assert str(error)  # a reason for the status annotation
        return
    size = len(rendered.encode("utf-8"))
    assert size <= RENDERED_MAX_BYTES
    # No loops, no arithmetic: each piece of output comes from its own piece of source. A
    # number can print longer than it is written (1e15 -> 1000000000000000.0), case mapping
    # can triple a character's bytes, and each field reference prints the node name.
    fields = source.count("NodeName")
    assert size <= 5 * len(source.encode("utf-8")) + 3 * fields * len(node.encode("utf-8"))


@given(
    st.integers(1, 4000),
    st.sampled_from(["(", "not ", "{% if NodeName %}", "NodeName or ", "'a' if NodeName else ("]),
)
@settings(max_examples=25)
def test_nesting_of_any_depth_renders_or_fails_with_template_error(depth: int, opener: str) -> None:
    closer = {"(": ")", "{% if NodeName %}": "{% endif %}", "'a' if NodeName else (": ")"}.get(opener, "")
    body = opener * depth + ("x" if opener.startswith("{%") else "NodeName") + closer * depth
    source = body if opener.startswith("{%") else "{{ " + body + " }}"
    try:
        render_server_patch(source, {"NodeName": "n"})
    except TemplateError as error:
        assert str(error)  # a reason for the status annotation
