"""The finalizer and requester-state writes, faced with only the port they use: Pod writes."""

from __future__ import annotations

from typing import Any, cast

import pytest

from dpctl import api
from dpctl.dualpods.ports import Ports
from dpctl.dualpods.steps.context import Context, Settings
from dpctl.dualpods.steps.finalizers import drop_runner_finalizer, patch_ignoring_gone
from dpctl.kube import ApiError

from ..fakes import World, runner


class Pods:
    """Pod writes that fail as told; nothing else is reachable from these steps."""

    def __init__(self, error: ApiError | None = None) -> None:
        self.error = error
        self.patches: list[tuple[str, Any]] = []

    async def patch_pod(self, name: str, patch: Any) -> dict[str, Any]:
        self.patches.append((name, patch))
        if self.error is not None:
            raise self.error
        return {}


def context(pods: Pods) -> Context:
    unused = cast(Any, None)  # a step reaching for another port fails loudly
    return Context(
        World(),
        Ports(
            pods=cast(Any, pods), stubs=unused, servers=unused, report=unused, logs=unused, launchers=unused
        ),
        Settings(),
    )


async def test_dropping_the_runner_finalizer_is_a_json_patch_guarded_by_uid_and_its_place() -> None:
    pods = Pods()
    await drop_runner_finalizer(context(pods), runner())
    path = "/metadata/finalizers/0"
    assert pods.patches == [
        (
            "req-a-server",
            [
                {"op": "test", "path": "/metadata/uid", "value": "uid-r"},
                {"op": "test", "path": path, "value": api.ORIGINAL.runner_finalizer},
                {"op": "remove", "path": path},
            ],
        )
    ]


@pytest.mark.parametrize(
    "error",
    [
        ApiError(404, "NotFound", "gone", "PATCH", "/pods/x"),
        ApiError(409, "Conflict", "uid precondition", "PATCH", "/pods/x"),
        ApiError(
            422, "Invalid", "no new finalizers can be added if the object is being deleted", "PATCH", "/p"
        ),
        ApiError(
            422, "Invalid", "the server rejected our request due to an error in our request", "PATCH", "/p"
        ),
    ],
    ids=["gone", "replaced", "being-deleted", "a-tested-field-changed"],
)
async def test_a_pod_gone_replaced_changed_or_being_deleted_is_no_error(error: ApiError) -> None:
    await patch_ignoring_gone(context(Pods(error)), runner(), {"metadata": {"labels": {"a": "b"}}})


async def test_any_other_refusal_reaches_the_caller() -> None:
    forbidden = ApiError(403, "Forbidden", "pods is forbidden", "PATCH", "/pods/x")
    with pytest.raises(ApiError):
        await patch_ignoring_gone(context(Pods(forbidden)), runner(), {"metadata": {"labels": {"a": "b"}}})
