"""test/helpers.py's waits: the value they return, and the type mypy gives it (``assert_type`` is
checked by ``make lint`` and does nothing at run time)."""

from __future__ import annotations

from typing import Any, assert_type

from helpers import async_wait_for, wait_for


def test_wait_for_returns_the_truthy_value_typed_without_its_falsy_cases() -> None:
    found: dict[str, Any] | None = {"name": "a"}
    got = wait_for(lambda: found, 1, "the dict")
    assert_type(got, dict[str, Any])
    assert got == {"name": "a"}
    ready = True
    both = wait_for(lambda: ready and found, 1, "ready and the dict")
    assert_type(both, dict[str, Any])
    assert both is found
    assert_type(wait_for(lambda: ready, 1, "ready"), bool)


async def test_async_wait_for_takes_plain_and_async_predicates() -> None:
    seen = [3]

    async def first() -> int | None:
        return seen[0] if seen else None

    assert_type(await async_wait_for(first, 1, "the first"), int)
    assert await async_wait_for(first, 1, "the first") == 3
    assert_type(await async_wait_for(lambda: seen, 1, "something seen"), list[int])
    assert await async_wait_for(lambda: seen, 1, "something seen") == [3]
