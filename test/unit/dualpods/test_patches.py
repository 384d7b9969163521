"""Every patch the controller sends, from the objects it concerns."""

from __future__ import annotations

from dpctl import api
from dpctl.dualpods import patches

from .fakes import requester, runner


def test_a_requester_showing_everything_already_gets_no_patch() -> None:
    shown = requester(
        annotations={
            api.ORIGINAL.status: api.RequesterStatus(Errors=()).to_annotation(),
            api.ACCELERATORS_ANNOTATION: "GPU-0",
        },
        finalizers=[api.REQUESTER_FINALIZER],
    )
    shown["metadata"]["labels"][api.DUAL_LABEL] = "req-a-server"
    assert patches.requester_state(shown, runner(), [], "GPU-0") is None


def test_requester_state_sets_status_accelerators_dual_label_and_finalizer_at_once() -> None:
    patch = patches.requester_state(requester(), runner(), ["oops"], "GPU-0")
    assert patch == {
        "metadata": {
            "annotations": {
                api.ORIGINAL.status: api.RequesterStatus(Errors=("oops",)).to_annotation(),
                api.ACCELERATORS_ANNOTATION: "GPU-0",
            },
            "labels": {api.DUAL_LABEL: "req-a-server"},
            "finalizers": [api.REQUESTER_FINALIZER],
        }
    }


def test_without_a_running_runner_the_finalizer_is_removed_and_the_label_cleared() -> None:
    held = requester(finalizers=[api.REQUESTER_FINALIZER])
    held["metadata"]["labels"][api.DUAL_LABEL] = "old-runner"
    patch = patches.requester_state(held, None, [], "")
    assert patch is not None
    assert patch["metadata"]["labels"] == {api.DUAL_LABEL: None}
    assert patch["metadata"]["$deleteFromPrimitiveList/finalizers"] == [api.REQUESTER_FINALIZER]


def test_the_bound_runners_accelerators_stand_in_for_an_unasked_stub() -> None:
    bound = runner()
    bound["metadata"]["annotations"][api.ACCELERATORS_ANNOTATION] = "GPU-7"
    patch = patches.requester_state(requester(), bound, [], "")
    assert patch is not None
    assert patch["metadata"]["annotations"][api.ACCELERATORS_ANNOTATION] == "GPU-7"


def test_a_uid_precondition_keeps_the_rest_of_the_patch() -> None:
    assert patches.of_uid(runner(), patches.finalizer(api.ORIGINAL.runner_finalizer, present=False)) == {
        "metadata": {"uid": "uid-r", "$deleteFromPrimitiveList/finalizers": [api.ORIGINAL.runner_finalizer]}
    }


def test_unbinding_removes_requester_dual_label_and_runner_finalizer_only() -> None:
    assert patches.unbinding() == {
        "metadata": {
            "annotations": {api.REQUESTER_ANNOTATION: None},
            "labels": {api.DUAL_LABEL: None},
            "$deleteFromPrimitiveList/finalizers": [api.ORIGINAL.runner_finalizer],
        }
    }
