"""CRI log files: writing stdout/stderr as timestamped entries, and the selection ``kubectl logs`` asks for."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from dpsim.kubelet.logfiles import (
    MAX_ENTRY,
    CriLogWriter,
    Entry,
    LogOptions,
    latest_instances,
    parse_entries,
    render,
    rotate,
    select,
)


def test_writer_splits_lines_keeps_partials_and_tags_streams(tmp_path: Path) -> None:
    w = CriLogWriter(tmp_path / "0.log")
    w.write("stdout", b"one\ntw")
    w.write("stderr", b"err\n")
    w.write("stdout", b"o\nthree")
    w.close()
    entries = parse_entries((tmp_path / "0.log").read_bytes())
    assert [(e.stream, e.content, e.partial) for e in entries] == [
        ("stdout", b"one", False),
        ("stderr", b"err", False),
        ("stdout", b"two", False),
        ("stdout", b"three", False),
    ]
    assert all(e.time.endswith("Z") and len(e.time) == len("2026-01-01T00:00:00.000000000Z") for e in entries)


def test_overlong_lines_become_partial_entries(tmp_path: Path) -> None:
    w = CriLogWriter(tmp_path / "0.log")
    w.write("stdout", b"x" * (MAX_ENTRY + 10) + b"\n")
    w.close()
    entries = parse_entries((tmp_path / "0.log").read_bytes())
    assert [e.partial for e in entries] == [True, False]
    assert render(entries, timestamps=False) == b"x" * (MAX_ENTRY + 10) + b"\n"


def entries(*lines: tuple[str, str, bool]) -> list[Entry]:
    return [Entry(t, "stdout", partial, text.encode()) for t, text, partial in lines]


def test_tail_counts_whole_lines_and_since_filters_by_time() -> None:
    es = entries(
        ("2026-01-01T00:00:01.000000000Z", "a", False),
        ("2026-01-01T00:00:02.000000000Z", "b1", True),
        ("2026-01-01T00:00:02.500000000Z", "b2", False),
        ("2026-01-01T00:00:03.000000000Z", "c", False),
    )
    assert render(select(es, LogOptions(tail_lines=2)), False) == b"b1b2\nc\n"
    assert render(select(es, LogOptions(tail_lines=0)), False) == b""
    since = dt.datetime(2026, 1, 1, 0, 0, 2, 400000, tzinfo=dt.UTC)
    assert render(select(es, LogOptions(since_time=since)), False) == b"b2\nc\n"
    assert render(select(es, LogOptions(tail_lines=1)), True) == b"2026-01-01T00:00:03.000000000Z c\n"


def test_malformed_lines_are_kept_as_text() -> None:
    assert render(parse_entries(b"not a cri line\n"), False) == b"not a cri line\n"


def test_rotation_keeps_the_current_and_previous_instance(tmp_path: Path) -> None:
    for i in range(4):
        rotate(tmp_path, i).write_text(str(i))
    assert latest_instances(tmp_path) == [2, 3]
