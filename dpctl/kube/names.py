"""Kubernetes' rules for label keys, label values and annotation keys (apimachinery's
``IsQualifiedName`` and ``IsValidLabelValue``), to check what a user asks us to write on a Pod
before the API server refuses the whole write.

Each check returns the problems in words, empty when valid.
"""

from __future__ import annotations

import re
from typing import Final

_NAME_MAX: Final = 63
_PREFIX_MAX: Final = 253
_NAME: Final = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_SUBDOMAIN: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAME_RULE: Final = (
    "must be alphanumeric characters, '-', '_' or '.', starting and ending with an alphanumeric character"
)


def qualified_name_problems(key: str) -> list[str]:
    """A label or annotation key: an optional DNS-subdomain prefix and ``/``, then a name."""
    prefix, slash, name = key.rpartition("/")
    problems: list[str] = []
    if slash:
        if not prefix:
            problems.append("prefix part must be non-empty")
        elif len(prefix) > _PREFIX_MAX:
            problems.append(f"prefix part must be no more than {_PREFIX_MAX} characters")
        elif not _DNS_SUBDOMAIN.fullmatch(prefix):
            problems.append("prefix part must be a lowercase DNS subdomain (e.g. 'example.com')")
        if "/" in prefix:
            problems.append("a qualified name has at most one '/'")
    if not name:
        problems.append("name part must be non-empty")
    elif len(name) > _NAME_MAX:
        problems.append(f"name part must be no more than {_NAME_MAX} characters")
    elif not _NAME.fullmatch(name):
        problems.append(f"name part {_NAME_RULE}")
    return problems


def label_value_problems(value: str) -> list[str]:
    """A label value: empty, or a name of at most 63 characters."""
    if len(value) > _NAME_MAX:
        return [f"must be no more than {_NAME_MAX} characters"]
    if value and not _NAME.fullmatch(value):
        return [_NAME_RULE]
    return []
