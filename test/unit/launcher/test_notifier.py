"""The notifier sidecar: upstream's signature, wait for the inference-server container, publish
only changes, back off on errors."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import pytest

from dpctl.launcher.notifier import (
    ERROR_BACKOFF_S,
    POLL_S,
    READY_POLL_S,
    Notifier,
    inference_server_ready,
    signature,
)


def listing(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {"revision": 1, "instances": [{"instance_id": i, "status": s, "options": "x"} for i, s in pairs]}


def test_signature_is_sha256_of_sorted_compact_id_status_pairs() -> None:
    expected = hashlib.sha256(b'[["a","stopped"],["b","running"]]').hexdigest()
    assert signature(listing(("b", "running"), ("a", "stopped"))) == expected
    assert signature(listing()) == hashlib.sha256(b"[]").hexdigest()


@pytest.mark.parametrize("bad", [{}, {"instances": {}}, {"instances": ["x"]}])
def test_signature_of_a_malformed_listing_is_an_error(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="malformed"):
        signature(bad)


def test_ready_means_the_inference_server_container_is_ready() -> None:
    def pod(*statuses: tuple[str, bool]) -> dict[str, Any]:
        return {"status": {"containerStatuses": [{"name": n, "ready": r} for n, r in statuses]}}

    assert inference_server_ready(pod(("state-change-reflector", False), ("inference-server", True)))
    assert not inference_server_ready(pod(("inference-server", False), ("state-change-reflector", True)))
    assert not inference_server_ready({"status": {}})
    assert not inference_server_ready({})


class FakePod:
    def __init__(self) -> None:
        self.ready = False
        self.published: list[str] = []
        self.fail_publish = False

    async def inference_server_ready(self) -> bool:
        return self.ready

    async def publish(self, signature: str) -> None:
        if self.fail_publish:
            raise OSError("connection refused")
        self.published.append(signature)


class FakeLauncher:
    def __init__(self) -> None:
        self.answer: Mapping[str, Any] | Exception = listing()

    async def instances(self) -> Mapping[str, Any]:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def test_waits_for_ready_then_publishes_each_change_once() -> None:
    pod, launcher = FakePod(), FakeLauncher()
    notifier = Notifier(pod, launcher)
    assert await notifier.step() == READY_POLL_S
    assert pod.published == []
    pod.ready = True
    assert await notifier.step() == POLL_S
    assert await notifier.step() == POLL_S
    launcher.answer = listing(("a", "running"))
    await notifier.step()
    await notifier.step()
    assert pod.published == [signature(listing()), signature(listing(("a", "running")))]


async def test_errors_back_off_and_an_unpublished_change_is_tried_again() -> None:
    pod, launcher = FakePod(), FakeLauncher()
    pod.ready = True
    notifier = Notifier(pod, launcher)
    launcher.answer = TimeoutError()
    assert await notifier.step() == ERROR_BACKOFF_S
    launcher.answer = listing(("a", "running"))
    pod.fail_publish = True
    assert await notifier.step() == ERROR_BACKOFF_S
    pod.fail_publish = False
    assert await notifier.step() == POLL_S
    assert pod.published == [signature(listing(("a", "running")))]


def test_intervals_are_upstreams() -> None:
    assert (READY_POLL_S, POLL_S, ERROR_BACKOFF_S) == (5.0, 2.0, 5.0)
