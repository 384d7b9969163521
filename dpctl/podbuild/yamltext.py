"""Strict, bounded YAML loading for text that users write (the server patch, `render-runner` input).

Owns `load_yaml`: PyYAML's safe loader, made stricter where a silent surprise would otherwise
reach a Pod:

- a duplicate key is an error (PyYAML keeps the last one without a word);
- mapping keys must be strings (YAML 1.1 reads ``on:``/``yes:`` as booleans and ``1:`` as an int);
- timestamps stay strings, as in Kubernetes' YAML handling (PyYAML would build ``datetime``\\s);
- ``.nan`` and ``.inf`` are refused, as JSON cannot carry them;
- the loaded value is bounded in depth and in size *after* alias expansion, so a few anchors
  cannot grow into gigabytes in the deep copies and JSON made downstream.

Does not: bound the length of the input text (callers do), or load more than one document.
"""

from __future__ import annotations

import math
from typing import Any, Final

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, ScalarNode

MAX_DEPTH: Final = 64
MAX_VALUES: Final = 100_000

_STR_TAG: Final = "tag:yaml.org,2002:str"
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"
_TIMESTAMP_TAG: Final = "tag:yaml.org,2002:timestamp"
_FLOAT_TAG: Final = "tag:yaml.org,2002:float"


class YamlTextError(Exception):
    """The text is not acceptable YAML; ``line`` (1-based) is None when no place applies."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {reason}" if line is not None else reason)
        self.reason = reason
        self.line = line


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader plus the checks listed in the module docstring."""

    yaml_implicit_resolvers = {
        first: [(tag, pattern) for tag, pattern in resolvers if tag != _TIMESTAMP_TAG]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        _check_keys(node)
        return super().construct_mapping(node, deep=deep)

    def construct_finite_float(self, node: ScalarNode) -> float:
        value = self.construct_yaml_float(node)
        if not math.isfinite(value):
            raise ConstructorError(None, None, "infinity and NaN are not valid JSON numbers", node.start_mark)
        return value


_StrictLoader.add_constructor(_FLOAT_TAG, _StrictLoader.construct_finite_float)


def _check_keys(node: MappingNode) -> None:
    seen: set[str] = set()
    for key, _ in node.value:
        if key.tag == _MERGE_TAG:
            continue  # `<<: *anchor` merges are fine; their keys may be overridden on purpose
        if not isinstance(key, ScalarNode) or key.tag != _STR_TAG:
            shown = key.value if isinstance(key, ScalarNode) else "a collection"
            raise ConstructorError(
                None, None, f"mapping key {shown} is not a string; quote it", key.start_mark
            )
        if key.value in seen:
            raise ConstructorError(None, None, f"duplicate key {key.value!r}", key.start_mark)
        seen.add(key.value)


def load_yaml(text: str) -> Any:
    """Load one YAML document; raise YamlTextError saying what is wrong and on which line."""
    try:
        loader = _StrictLoader(text)  # reads, and so checks characters, right away
        try:
            value = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.reader.ReaderError as error:
        line = text.count("\n", 0, error.position) + 1
        raise YamlTextError(f"character #x{error.character:04x} is not allowed in YAML", line) from error
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        raise YamlTextError(_reason(error), mark.line + 1 if mark is not None else None) from error
    except yaml.YAMLError as error:
        raise YamlTextError(str(error)) from error
    except RecursionError as error:
        raise YamlTextError(f"nested more than {MAX_DEPTH} levels deep") from error
    _check_bounds(value)
    return value


def _reason(error: yaml.MarkedYAMLError) -> str:
    if error.problem and error.context:
        return f"{error.problem} ({error.context})"
    return error.problem or error.context or "invalid YAML"


def _check_bounds(value: Any) -> None:
    """Walk the value as JSON would see it (aliases expanded), stopping at the first excess."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise YamlTextError(f"more than {MAX_VALUES} values once aliases are expanded")
        if depth > MAX_DEPTH:
            raise YamlTextError(f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
