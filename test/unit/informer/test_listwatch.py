"""kube_lister passes the resource, namespace and selectors through, and always asks for bookmarks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

from dpctl.informer import kube_lister
from dpctl.kube import PODS, Kube


class RecordingKube:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    async def list_all(self, *args: Any, **kwargs: Any) -> tuple[list[dict[str, Any]], str]:
        self.calls.append(("list_all", args, kwargs))
        return [{"metadata": {"name": "a"}}], "7"

    async def watch(self, *args: Any, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(("watch", args, kwargs))
        yield {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "8"}}}


async def test_list_and_watch_use_the_bound_resource_and_selectors() -> None:
    kube = RecordingKube()
    lister = kube_lister(
        cast(Kube, kube), PODS, "ns", label_selector="app=x", field_selector="spec.nodeName=n"
    )
    assert await lister.list() == ([{"metadata": {"name": "a"}}], "7")
    events = [e async for e in lister.watch("7", 321)]
    assert events[0]["type"] == "BOOKMARK"
    selectors = {"label_selector": "app=x", "field_selector": "spec.nodeName=n"}
    assert kube.calls == [
        ("list_all", (PODS, "ns"), {**selectors, "transform": None}),
        (
            "watch",
            (PODS, "ns"),
            {"resource_version": "7", "timeout_seconds": 321, "allow_bookmarks": True, **selectors},
        ),
    ]


async def test_a_transform_is_passed_to_the_paged_list() -> None:
    kube = RecordingKube()

    def slim(obj: dict[str, Any]) -> dict[str, Any]:
        return obj

    await kube_lister(cast(Kube, kube), PODS, "ns", transform=slim).list()
    assert kube.calls[0][2]["transform"] is slim
