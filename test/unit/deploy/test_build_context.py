"""The Containerfile's build context: every file a ``COPY`` takes from it is let through by
``.dockerignore`` (the launcher target's build failed on a context without its entry points)."""

from __future__ import annotations

import fnmatch
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def _included(path: str, rules: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = path.split("/")
    included = True
    for rule in rules:
        negated = rule.startswith("!")
        pattern = rule[1:] if negated else rule
        if any(fnmatch.fnmatch("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1)):
            included = negated
    return included


def test_every_copy_source_of_the_containerfile_is_in_the_build_context() -> None:
    rules = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources: list[str] = []
    for line in (REPO / "Containerfile").read_text().splitlines():
        words = shlex.split(line) if line.startswith("COPY ") else []
        if words and not any(w.startswith("--from") for w in words):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    assert "deploy/launcher-image/launcher.py" in sources
    for source in sources:
        files = (
            [source]
            if (REPO / source).is_file()
            else [str(p.relative_to(REPO)) for p in (REPO / source).rglob("*.py")]
        )
        assert files, source
        for file in files:
            assert _included(file, rules), f"{file} (COPY {source}) is left out by .dockerignore"
