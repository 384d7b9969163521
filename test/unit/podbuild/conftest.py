"""Fixtures for the podbuild tests: the YAML test data beside this file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

HERE = Path(__file__).parent


def load(name: str) -> Any:
    """A YAML file from this directory (``smp_cases.yaml``) or its ``data/`` folder."""
    path = HERE / name if (HERE / name).exists() else HERE / "data" / name
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture
def data() -> Callable[[str], Any]:
    return load
