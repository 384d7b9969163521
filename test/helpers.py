"""Helpers every test may use. Above all: wait for a condition with a deadline, never sleep.

``wait_for`` (sync) and ``async_wait_for`` (async) poll a predicate until it returns something
truthy, which they return, or fail with a message naming what was awaited, for how long, and the
last value or exception the predicate produced, which is usually the answer to "why".

``write_kubeconfig`` writes a one-context kubeconfig, for tests of how credentials are loaded.

``ManualClock`` is a clock to inject where code reads ``time.monotonic``: it moves only when a
test moves it.

Typed by what the predicate returns less its falsy "not yet" values: a predicate returning
``X | None`` (or ``X | Literal[False]``, as ``a and b`` gives) makes the wait return ``X``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Literal, TypeVar, overload

T = TypeVar("T")

# First poll soon (most conditions are nearly true), then back off to spare a 2-core machine.
FIRST_INTERVAL = 0.02
MAX_INTERVAL = 0.5


class WaitTimeoutError(AssertionError):
    """A wait_for deadline passed. An AssertionError, so pytest reports it as a test failure."""


def _describe(what: str, timeout: float, polls: int, last: object, error: BaseException | None) -> str:
    msg = f"timed out after {timeout:g}s ({polls} polls) waiting for {what}"
    if error is not None:
        msg += f"; last poll raised {type(error).__name__}: {error}"
    else:
        msg += f"; last value: {last!r}"
    return msg


def wait_for(
    predicate: Callable[[], T | Literal[False] | None],
    timeout: float,
    what: str,
    *,
    interval: float = FIRST_INTERVAL,
    max_interval: float = MAX_INTERVAL,
    ignore: tuple[type[BaseException], ...] = (Exception,),
) -> T:
    """Poll ``predicate`` until it returns a truthy value (returned) or ``timeout`` seconds pass.

    Exceptions of the types in ``ignore`` count as "not yet" and the last one is reported on
    timeout; pass ``ignore=()`` to let them fail the wait at once.
    """
    deadline = time.monotonic() + timeout
    delay, polls = interval, 0
    last: object = None
    error: BaseException | None = None
    while True:
        polls += 1
        try:
            last, error = predicate(), None
        except ignore as e:
            last, error = None, e
        if error is None and last:
            return last
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeoutError(_describe(what, timeout, polls, last, error)) from error
        time.sleep(min(delay, left))
        delay = min(delay * 1.5, max_interval)


# An async predicate first: a plain one would match it too, as a function returning a coroutine.
# (Where the awaited type holds Any, as dict[str, Any] does, mypy cannot tell the two apart and
# types the wait as Any.)
@overload
async def async_wait_for(
    predicate: Callable[[], Awaitable[T | Literal[False] | None]],
    timeout: float,
    what: str,
    *,
    interval: float = ...,
    max_interval: float = ...,
    ignore: tuple[type[BaseException], ...] = ...,
) -> T: ...


@overload
async def async_wait_for(
    predicate: Callable[[], T | Literal[False] | None],
    timeout: float,
    what: str,
    *,
    interval: float = ...,
    max_interval: float = ...,
    ignore: tuple[type[BaseException], ...] = ...,
) -> T: ...


async def async_wait_for(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    *,
    interval: float = FIRST_INTERVAL,
    max_interval: float = MAX_INTERVAL,
    ignore: tuple[type[BaseException], ...] = (Exception,),
) -> object:
    """:func:`wait_for` for async tests; ``predicate`` may be a plain or an async function."""
    deadline = time.monotonic() + timeout
    delay, polls = interval, 0
    last: object = None
    error: BaseException | None = None
    while True:
        polls += 1
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            last, error = value, None
        except ignore as e:
            last, error = None, e
        if error is None and last:
            return last
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeoutError(_describe(what, timeout, polls, last, error)) from error
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 1.5, max_interval)


def write_kubeconfig(path: Path, cluster: Mapping[str, object], user: Mapping[str, object]) -> Path:
    """A kubeconfig at ``path`` whose one context joins ``cluster`` and ``user`` (their kubeconfig
    sections: ``server``, ``proxy-url``, ``token``, ...)."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": dict(cluster)}],
        "users": [{"name": "u", "user": dict(user)}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(json.dumps(doc))  # JSON is YAML
    return path


class ManualClock:
    """A monotonic clock that stands still until a test sets or advances ``now``."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
