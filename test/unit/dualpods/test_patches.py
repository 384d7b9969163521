"""Every patch the controller sends, from the objects it concerns."""

from __future__ import annotations

import pytest

from dpctl import api
from dpctl.dualpods import patches
from dpctl.podbuild import build_runner

from .fakes import SERVER_PATCH, requester, runner


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


def test_unbinding_removes_requester_dual_label_and_either_dialects_runner_finalizer_only() -> None:
    assert patches.unbinding() == {
        "metadata": {
            "annotations": {api.REQUESTER_ANNOTATION: None},
            "labels": {api.DUAL_LABEL: None},
            "$deleteFromPrimitiveList/finalizers": [
                "dual-pods.llm-d.ai/runner",
                "dual-pods.llm-d.ai/provider",
            ],
        }
    }


@pytest.mark.parametrize("dialect", api.DIALECTS, ids=lambda d: d.name)
def test_binding_adds_the_runner_finalizer_of_the_requesters_dialect(dialect: api.Dialect) -> None:
    req = requester(dialect=dialect)
    built = build_runner(req, "node-1", [0], ["GPU-0"])
    assert built.pod["metadata"]["finalizers"] == [dialect.runner_finalizer]
    patch = patches.binding(req, built, runner(bound_to=None))
    assert patch["metadata"]["finalizers"] == [dialect.runner_finalizer]


def test_a_head_requesters_status_goes_to_the_head_annotation() -> None:
    patch = patches.requester_state(requester(dialect=api.HEAD), None, ["oops"], "")
    assert patch is not None
    assert patch["metadata"]["annotations"] == {
        "dual-pods.llm-d.ai/status": api.RequesterStatus(Errors=("oops",)).to_annotation()
    }


def test_the_other_dialects_status_left_from_a_time_with_both_patches_is_removed() -> None:
    stale = api.RequesterStatus(Errors=("both",)).to_annotation()
    req = requester(annotations={api.ORIGINAL.status: stale, api.HEAD.status: stale})
    patch = patches.requester_state(req, None, [], "")
    assert patch is not None
    assert patch["metadata"]["annotations"] == {
        api.ORIGINAL.status: api.RequesterStatus(Errors=()).to_annotation(),
        api.HEAD.status: None,
    }


def test_a_requester_of_both_dialects_gets_the_status_in_both_annotations_once() -> None:
    req = requester(annotations={api.HEAD.server_patch: SERVER_PATCH})
    patch = patches.status_in_every_dialect(req, ["pick one"])
    want = api.RequesterStatus(Errors=("pick one",)).to_annotation()
    assert patch == {"metadata": {"annotations": {api.ORIGINAL.status: want, api.HEAD.status: want}}}
    req["metadata"]["annotations"].update(patch["metadata"]["annotations"])
    assert patches.status_in_every_dialect(req, ["pick one"]) is None
