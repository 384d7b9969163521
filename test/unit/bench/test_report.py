"""The benchmark's arithmetic over the controller's call counts and latencies."""

from __future__ import annotations

from bench import report


def test_conflicts_are_writes_answered_409_or_422_and_nothing_else() -> None:
    calls = {
        "patch/pods/409": 2,
        "patch/pods/422": 1,  # a JSON patch whose test failed
        "create/pods/201": 5,
        "get/pods/409": 7,  # not a write
        "delete/pods/404": 3,
    }
    assert report.conflicts(calls) == 3


def test_a_steps_ratio_is_its_p99_over_the_sum_of_its_calls_p99s() -> None:
    assert report.ratio(300.0, [100.0, 50.0]) == 2.0


def test_a_ratio_with_an_unknown_or_empty_denominator_is_unknown() -> None:
    assert report.ratio(300.0, [100.0, None]) is None
    assert report.ratio(None, [100.0]) is None
    assert report.ratio(300.0, []) is None
