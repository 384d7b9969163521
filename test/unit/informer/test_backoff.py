"""The informer's failure backoff: 0.8 s doubling, 30 s cap, jitter, reset after health."""

from __future__ import annotations

import pytest

from dpctl.informer import Backoff
from helpers import ManualClock


def test_doubles_from_0_8s_to_a_30s_cap() -> None:
    backoff = Backoff(now=ManualClock(), rand=lambda: 0.0)
    delays = [backoff.next_delay() for _ in range(8)]
    assert delays == pytest.approx([0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0])


def test_jitter_shortens_by_at_most_a_fifth() -> None:
    backoff = Backoff(now=ManualClock(), rand=lambda: 1.0)
    assert backoff.next_delay() == pytest.approx(0.64)
    for _ in range(10):
        delay = backoff.next_delay()
    assert delay == pytest.approx(24.0)


def test_resets_after_two_healthy_minutes() -> None:
    now = ManualClock()
    backoff = Backoff(now=now, rand=lambda: 0.0)
    for _ in range(5):
        backoff.next_delay()
    now.now += 119
    assert backoff.next_delay() == pytest.approx(25.6), "failures 119 s apart still escalate"
    now.now += 120
    assert backoff.next_delay() == pytest.approx(0.8)


def test_many_failures_do_not_overflow() -> None:
    backoff = Backoff(now=ManualClock(), rand=lambda: 0.0)
    for _ in range(5000):
        delay = backoff.next_delay()
    assert delay == 30.0


async def test_sleep_uses_the_injected_sleep() -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    await Backoff(sleep=fake_sleep).sleep(1.5)
    assert slept == [1.5]
