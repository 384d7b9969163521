"""Render the server-patch annotation: a small template language, run in a Jinja2 sandbox.

Owns `render_server_patch(text, data)`. The recipe writes Go's text/template spelling,
``{{ .NodeName }}``; that field-access form (with optional whitespace and ``{{- -}}`` trim
markers, which mean the same in both languages) is translated to Jinja's ``{{ NodeName }}``, and
the Jinja spelling works as well. A missing field is an error, like Go's ``missingkey=error``.

The language is deliberately tiny. A template may contain text, the data fields by name, string
and number literals, ``~`` concatenation, the filters in `SAFE_FILTERS`, comparisons,
``and``/``or``/``not``, ``{% if %}`` and ``x if c else y``. Everything else (attribute or item
access, calls, loops, assignments, macros, imports, includes, inheritance, arithmetic, tests) is
refused by inspecting the parsed template *before* it is compiled. So a template can reach no
Python object, file or network, and cannot make Jinja's compile-time constant folding compute
``9**9**9``. Rendering then runs in `ImmutableSandboxedEnvironment` with `StrictUndefined`, no
loader and no globals, as a second line of defence. Input and output sizes are bounded.

Filters: ``lower``, ``upper`` and ``trim`` only; none of them grows its input by more than Unicode
case mapping does (``'ß'|upper`` is ``SS``), so the output stays within a small multiple of the
input without help from the sandbox. Expressions and blocks may nest at most `MAX_NESTING` deep, so
neither Jinja's recursive compiler nor our checks can run out of stack. Rendering turns CRLF
and lone CR line breaks into LF, as Jinja does; YAML reads all three as the same line break.

Does not: parse the rendered YAML (see `yamltext`), support Go pipelines or functions
(``printf``, ``index``, ...), or cache compiled templates.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Final

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATE_MAX_BYTES: Final = 64 * 1024
RENDERED_MAX_BYTES: Final = 256 * 1024
SAFE_FILTERS: Final = frozenset({"lower", "upper", "trim"})
MAX_NESTING: Final = 64

_ALLOWED_NODES: Final = frozenset(
    {
        nodes.Template,
        nodes.Output,
        nodes.TemplateData,
        nodes.Name,
        nodes.Const,
        nodes.Concat,
        nodes.Filter,
        nodes.Keyword,
        nodes.If,
        nodes.CondExpr,
        nodes.Compare,
        nodes.Operand,
        nodes.And,
        nodes.Or,
        nodes.Not,
    }
)

# Words for the refused constructs a user is most likely to try; others are named by class.
_REFUSED_WORDS: Final = {
    "Getattr": "attribute access",
    "Getitem": "item access",
    "Slice": "slicing",
    "Call": "function calls",
    "For": "loops",
    "Macro": "macros",
    "CallBlock": "macro calls",
    "Assign": "assignments",
    "AssignBlock": "assignments",
    "With": "{% with %} blocks",
    "Include": "{% include %}",
    "Import": "{% import %}",
    "FromImport": "{% from ... import %}",
    "Extends": "{% extends %}",
    "Block": "{% block %}",
    "FilterBlock": "{% filter %} blocks",
    "Test": "tests (`is ...`)",
}

# `{{ .Field }}` / `{{- .Field -}}`: drop the dot. Nothing else moves, so line numbers hold.
_GO_FIELD: Final = re.compile(r"(\{\{-?\s*)\.(?=[A-Za-z_][A-Za-z0-9_]*\s*-?\}\})")


class TemplateError(Exception):
    # The message says where and what, not which annotation: that depends on the dialect.
    """The server-patch template cannot be rendered; the message says where and why."""


def render_server_patch(text: str, data: Mapping[str, str]) -> str:
    """Render ``text`` with ``data`` (e.g. ``{"NodeName": node}``); raise TemplateError."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as error:  # a lone surrogate: JSON's \ud800 escapes can make one
        raise _error(None, "is not valid Unicode text") from error
    if size > TEMPLATE_MAX_BYTES:
        raise _error(None, f"is {size} bytes long; the limit is {TEMPLATE_MAX_BYTES}")
    source = _GO_FIELD.sub(r"\1", text)
    environment = _environment()
    try:
        parsed = environment.parse(source)
    except jinja2.TemplateSyntaxError as error:
        raise _error(error.lineno, _syntax_hint(error.message or "syntax error")) from error
    except RecursionError as error:  # Jinja's parser recurses once per level of nesting
        raise _error(None, f"nests expressions or blocks too deeply (the limit is {MAX_NESTING})") from error
    except ValueError as error:  # an integer literal with more digits than Python converts
        raise _error(None, "a number literal is too long") from error
    _check_language(parsed, data)
    template = environment.from_string(parsed)  # compile the very tree that was checked
    try:
        return "".join(_limited(template.generate(dict(data))))
    except (jinja2.TemplateError, TypeError, ValueError) as error:
        raise _error(_template_line(error.__traceback__), str(error)) from error


@functools.cache
def _environment() -> ImmutableSandboxedEnvironment:
    environment = ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
    )
    environment.globals.clear()
    environment.tests.clear()
    environment.filters = {name: environment.filters[name] for name in SAFE_FILTERS}
    return environment


def _check_language(template: nodes.Template, data: Mapping[str, str]) -> None:
    fields = ", ".join(f".{name}" for name in sorted(data))
    for node, depth in _walk(template):
        if depth > MAX_NESTING:
            raise _error(node.lineno, f"nests expressions or blocks more than {MAX_NESTING} deep")
        if type(node) not in _ALLOWED_NODES:
            raise _error(
                node.lineno, f"{_describe(node)} cannot be used in this template; it may use {fields}"
            )
        if isinstance(node, nodes.Name) and node.name not in data:
            raise _error(node.lineno, f"no field {node.name!r} in the template data (available: {fields})")
        if isinstance(node, nodes.Filter) and node.name not in SAFE_FILTERS:
            allowed = ", ".join(sorted(SAFE_FILTERS))
            raise _error(node.lineno, f"filter {node.name!r} is not allowed; allowed filters: {allowed}")


def _describe(node: nodes.Node) -> str:
    if isinstance(node, nodes.BinExpr | nodes.UnaryExpr):
        return "arithmetic"
    return _REFUSED_WORDS.get(type(node).__name__, f"the {type(node).__name__} construct")


def _walk(root: nodes.Node) -> Iterator[tuple[nodes.Node, int]]:
    """All nodes with their depth (the root's is 0), in source order, parents before children.

    Iterative, so a deep tree cannot exhaust the stack before its depth is checked."""
    stack = [(root, 0)]
    while stack:
        node, depth = stack.pop()
        yield node, depth
        stack.extend((child, depth + 1) for child in reversed(list(node.iter_child_nodes())))


def _limited(chunks: Iterator[str]) -> Iterator[str]:
    """Pass chunks through, failing as soon as the output passes the size limit."""
    size = 0
    for chunk in chunks:
        size += len(chunk.encode("utf-8"))
        if size > RENDERED_MAX_BYTES:
            raise _error(None, f"renders to more than {RENDERED_MAX_BYTES} bytes")
        yield chunk


def _syntax_hint(message: str) -> str:
    if "'.'" in message:
        return f"{message} (of Go's template actions only {{{{ .Field }}}} is supported)"
    return message


def _template_line(traceback: TracebackType | None) -> int | None:
    """The template line of the innermost template frame (Jinja rewrites tracebacks so)."""
    line = None
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == "<template>":
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line


def _error(line: int | None, reason: str) -> TemplateError:
    where = f"line {line}: " if line is not None else ""
    return TemplateError(f"{where}{reason}")
