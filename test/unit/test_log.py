"""Structured logs: key-values in both formats, levels as documented, secrets never written."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from dpctl import log


@pytest.fixture
def capture() -> Iterator[io.StringIO]:
    """Route the root logger to a buffer for the test; put the previous handlers back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out = io.StringIO()
    yield out
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(out: io.StringIO) -> list[str]:
    return [line for line in out.getvalue().splitlines() if line]


def test_text_lines_carry_the_key_values(capture: io.StringIO) -> None:
    log.setup(2, "text", capture)
    log.get("dualpods").info("Bound server-running Pod", requester="req-a", runner="req-a-server", node="n1")
    (line,) = lines(capture)
    assert " I dualpods] Bound server-running Pod " in line
    assert 'requester="req-a"' in line and 'runner="req-a-server"' in line and 'node="n1"' in line
    assert line.split()[0].endswith("Z")  # UTC timestamp with milliseconds


def test_json_lines_carry_the_key_values(capture: io.StringIO) -> None:
    log.setup(2, "json", capture)
    log.get("dualpods").info("Found GPUs", requester="req-a", node="n1", gpuUUIDs=["GPU-1", "GPU-2"])
    doc = json.loads(lines(capture)[0])
    assert doc["msg"] == "Found GPUs" and doc["level"] == "info" and doc["logger"] == "dualpods"
    assert doc["requester"] == "req-a" and doc["node"] == "n1" and doc["gpuUUIDs"] == ["GPU-1", "GPU-2"]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_bound_key_values_are_on_every_line_and_calls_add_to_them(
    fmt: log.LogFormat, capture: io.StringIO
) -> None:
    log.setup(2, fmt, capture)
    logger = log.get("controller", namespace="ns1").bind(runner="r1")
    logger.info("one", node="n1")
    logger.warning("two")
    first, second = lines(capture)
    for line in (first, second):
        assert "ns1" in line and "r1" in line
    assert "n1" in first and "n1" not in second


@pytest.mark.parametrize(
    ("verbosity", "shown"),
    [
        (0, {"warning", "info"}),
        (1, {"warning", "info"}),
        (2, {"warning", "info", "progress"}),
        (4, {"warning", "info", "progress"}),
        (5, {"warning", "info", "progress", "debug"}),
        (9, {"warning", "info", "progress", "debug"}),
    ],
)
def test_levels_follow_the_verbosity_as_documented(
    verbosity: int, shown: set[str], capture: io.StringIO
) -> None:
    """-v 0-1: warnings and lifecycle (info) lines; 2-4 adds routine progress; 5+ adds traces."""
    log.setup(verbosity, "json", capture)
    logger = log.get("t")
    logger.warning("w")
    logger.info("i")
    logger.progress("p")
    logger.debug("d")
    assert {json.loads(line)["level"] for line in lines(capture)} == shown


def test_level_letters_in_text() -> None:
    assert [log.level_for_verbosity(v) for v in range(7)] == [
        logging.INFO,
        logging.INFO,
        log.PROGRESS,
        log.PROGRESS,
        log.PROGRESS,
        logging.DEBUG,
        logging.DEBUG,
    ]
    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        log.setup(5, "text", out)
        logger = log.get("t")
        logger.error("e")
        logger.warning("w")
        logger.info("i")
        logger.progress("p")
        logger.debug("d")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert [line.split()[1] for line in lines(out)] == ["E", "W", "I", "P", "D"]


SECRET = "s3cr3t-value"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secrets_are_masked(fmt: log.LogFormat, capture: io.StringIO) -> None:
    log.setup(2, fmt, capture)
    logger = log.get("t", token=SECRET)
    logger.info(
        "calling",
        Authorization=f"Bearer {SECRET}",
        bearerToken=SECRET,
        password=SECRET,
        clientSecret=SECRET,
        headers={"Authorization": f"Bearer {SECRET}", "Accept": "application/json"},
        requests=[{"token": SECRET}],
        runner="r1",
    )
    (line,) = lines(capture)
    assert SECRET not in line
    assert "<redacted>" in line
    assert "r1" in line and "application/json" in line  # only the secrets go
    if fmt == "json":
        doc = json.loads(line)
        assert doc["token"] == doc["Authorization"] == doc["headers"]["Authorization"] == "<redacted>"
        assert doc["requests"] == [{"token": "<redacted>"}]


def test_exceptions_keep_their_traceback(capture: io.StringIO) -> None:
    log.setup(2, "json", capture)
    try:
        raise ValueError("bad input")
    except ValueError:
        log.get("t").exception("failed", requester="req-a")
    doc = json.loads(lines(capture)[0])
    assert doc["requester"] == "req-a" and "ValueError: bad input" in doc["error"]


def test_bearer_tokens_inside_values_are_masked(capture: io.StringIO) -> None:
    log.setup(2, "text", capture)
    log.get("t").warning("Cannot reach the API server", error=f"401: header 'Authorization: Bearer {SECRET}'")
    (line,) = lines(capture)
    assert SECRET not in line and "Bearer <redacted>" in line
