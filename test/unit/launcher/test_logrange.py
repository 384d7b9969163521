"""The log endpoint's Range header: upstream's two forms, 400 for the rest, 416 past the end, and
at most 1 MiB per reply."""

from __future__ import annotations

import pytest

from dpctl.launcher.api import MAX_LOG_REPLY_BYTES
from dpctl.launcher.logrange import MalformedRange, RangeNotSatisfiable, Slice, clamp, parse_range


@pytest.mark.parametrize(
    ("header", "parsed"), [("bytes=0-9", (0, 9)), ("bytes=5-", (5, None)), ("bytes=7-7", (7, 7))]
)
def test_closed_and_open_ranges_parse(header: str, parsed: tuple[int, int | None]) -> None:
    assert parse_range(header) == parsed


@pytest.mark.parametrize(
    "header", ["bytes=-5", "bytes=1-2,4-5", "bytes=a-", "items=0-1", "bytes=0-1 ", "", "bytes=", "bytes=9-3"]
)
def test_suffix_multiple_malformed_and_backwards_ranges_are_refused(header: str) -> None:
    with pytest.raises(MalformedRange):
        parse_range(header)


def test_backwards_range_says_why() -> None:
    with pytest.raises(MalformedRange, match=r"Range end \(3\) must be >= start \(9\)"):
        parse_range("bytes=9-3")


def test_end_past_the_log_is_cut_to_the_log() -> None:
    assert clamp(2, 100, 10) == Slice(2, 9)
    assert clamp(0, None, 10) == Slice(0, 9)


@pytest.mark.parametrize(("start", "total"), [(10, 10), (11, 10), (0, 0)])
def test_start_at_or_past_the_end_is_unsatisfiable(start: int, total: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as e:
        clamp(start, None, total)
    assert e.value.total == total


def test_a_reply_holds_at_most_one_mib() -> None:
    assert MAX_LOG_REPLY_BYTES == 1024 * 1024
    assert clamp(0, None, 3 * MAX_LOG_REPLY_BYTES).length == MAX_LOG_REPLY_BYTES
    assert clamp(5, 10 * MAX_LOG_REPLY_BYTES, 3 * MAX_LOG_REPLY_BYTES) == Slice(5, 4 + MAX_LOG_REPLY_BYTES)
