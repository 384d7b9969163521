"""Fixtures and helpers of the observability and high-availability suite.

The dual-pods fixtures (``kubectl``, ``gpu_map``, ``ledger``, ``start_controller``) are shared
with ``test/e2e/dualpods``. Added here: a free loopback port for a controller's metrics server
(``DPCTL_LISTEN_HOST=127.0.0.1`` is set for the test, so controllers started by it bind there),
scraping ``/metrics`` into samples, probing ``/readyz``, reading a controller's log lines and
their timestamps, and the namespace's Events.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dpctl import api
from e2e.dualpods.conftest import (  # noqa: F401  (fixtures, used by name)
    gpu_map,
    kubectl,
    ledger,
    start_controller,
)
from e2e.recipe import Kubectl

LISTEN_HOST = "127.0.0.1"
COMPONENT = "dual-pods-controller"


@pytest.fixture
def metrics_port(monkeypatch: pytest.MonkeyPatch) -> int:
    """A free port on 127.0.0.1, and DPCTL_LISTEN_HOST set so the controller binds there only."""
    monkeypatch.setenv(api.LISTEN_HOST_ENV, LISTEN_HOST)
    with socket.socket() as s:
        s.bind((LISTEN_HOST, 0))
        return int(s.getsockname()[1])


def get(url: str, timeout: float = 5) -> tuple[int, str] | None:
    """(status, body) of a GET, or None when nothing answers (not listening yet)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    answer = get(f"http://{LISTEN_HOST}:{port}/metrics")
    assert answer is not None and answer[0] == 200, f"/metrics: {answer}"
    samples: Samples = {}
    for family in text_string_to_metric_families(answer[1]):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, /, **labels: str) -> float:
    """One sample's value; 0 when absent (a labelled series appears at its first observation)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, /, **labels: str) -> float:
    """Sum over every series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


@dataclass(frozen=True)
class LogLine:
    at: dt.datetime
    text: str


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z ")


def log_lines(text: str, message: str) -> list[LogLine]:
    """The text-format lines holding ``message``, with their UTC timestamps."""
    found = []
    for line in text.splitlines():
        m = _STAMP.match(line)
        if m and message in line:
            found.append(LogLine(dt.datetime.fromisoformat(m.group(1)).replace(tzinfo=dt.UTC), line))
    return found


def kv(line: str, key: str) -> str:
    """A key-value of a text-format line (values are JSON-quoted)."""
    m = re.search(rf' {re.escape(key)}="((?:[^"\\]|\\.)*)"', line)
    assert m, f"no {key}= in {line!r}"
    return str(json.loads(f'"{m.group(1)}"'))


def events(kc: Kubectl) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kc.get_json("events")["items"]
    return items


def controller_events(kc: Kubectl, reason: str, about: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Events with ``reason`` whose involved object is the Pod ``about`` (by UID)."""
    uid = about["metadata"]["uid"]
    return [e for e in events(kc) if e.get("reason") == reason and e["involvedObject"].get("uid") == uid]
