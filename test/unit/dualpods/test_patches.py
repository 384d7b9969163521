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


REQUESTER = "/metadata/annotations/dual-pods.llm-d.ai~1requester"
DUAL = "/metadata/labels/dual-pods.llm-d.ai~1dual"


def guards(ops: list[patches.Op]) -> dict[str, object]:
    return {op["path"]: op["value"] for op in ops if op["op"] == "test"}


def edits(ops: list[patches.Op]) -> list[patches.Op]:
    return [op for op in ops if op["op"] != "test"]


def test_unbinding_tests_the_binding_it_undoes_and_removes_it_with_either_dialects_finalizer() -> None:
    bound = runner(bound_to=("uid-a", "req-a"))
    bound["metadata"]["finalizers"] = ["other/keep", api.HEAD.runner_finalizer, api.ORIGINAL.runner_finalizer]
    ops = patches.unbinding(bound)
    assert ops[0] == {"op": "test", "path": "/metadata/uid", "value": "uid-r"}
    assert guards(ops) == {
        "/metadata/uid": "uid-r",
        REQUESTER: "uid-a req-a",
        "/metadata/finalizers/2": api.ORIGINAL.runner_finalizer,
        "/metadata/finalizers/1": api.HEAD.runner_finalizer,
    }
    assert edits(ops) == [
        {"op": "remove", "path": REQUESTER},
        {"op": "remove", "path": DUAL},
        {"op": "remove", "path": "/metadata/finalizers/2"},  # the last first: index 1 still holds
        {"op": "remove", "path": "/metadata/finalizers/1"},
    ]


def test_each_finalizer_removal_is_tested_right_before_it() -> None:
    bound = runner()
    bound["metadata"]["finalizers"] = [api.ORIGINAL.runner_finalizer, "other/keep", api.HEAD.runner_finalizer]
    ops = patches.without_finalizers(bound, list(api.RUNNER_FINALIZERS))
    assert ops[1:] == [
        {"op": "test", "path": "/metadata/finalizers/2", "value": api.HEAD.runner_finalizer},
        {"op": "remove", "path": "/metadata/finalizers/2"},
        {"op": "test", "path": "/metadata/finalizers/0", "value": api.ORIGINAL.runner_finalizer},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]


@pytest.mark.parametrize("dialect", api.DIALECTS, ids=lambda d: d.name)
def test_binding_tests_the_sleeper_is_unbound_and_adds_the_finalizer_of_the_requesters_dialect(
    dialect: api.Dialect,
) -> None:
    req = requester(dialect=dialect)
    built = build_runner(req, "node-1", [0], ["GPU-0"])
    sleeper = runner(bound_to=None, sleeping_label="true")
    ops = patches.binding(req, built, sleeper)
    assert guards(ops) == {
        "/metadata/uid": "uid-r",
        REQUESTER: None,
        "/metadata/deletionTimestamp": None,
        "/metadata/finalizers": None,  # the sleeper has none: the add depends on that
    }
    assert "/metadata/resourceVersion" not in guards(ops)
    added = {op["path"]: op["value"] for op in edits(ops)}
    assert added[REQUESTER] == "uid-a req-a"
    assert added[DUAL] == "req-a"
    assert added["/metadata/annotations/dual-pods.llm-d.ai~1accelerators"] == "GPU-0"
    assert added["/metadata/finalizers"] == [dialect.runner_finalizer]


def test_binding_a_pod_without_labels_adds_the_map_whole() -> None:
    req = requester()
    sleeper = runner(bound_to=None)
    sleeper["metadata"].pop("labels", None)
    ops = patches.binding(req, build_runner(req, "node-1", [0], ["GPU-0"]), sleeper)
    assert {"op": "add", "path": "/metadata/labels", "value": {api.DUAL_LABEL: "req-a"}} in ops


def test_a_finalizer_added_beside_others_is_appended_with_the_list_it_joins_tested() -> None:
    pod = requester()
    pod["metadata"]["finalizers"] = ["other/keep"]
    assert patches.finalizer_change(pod, api.REQUESTER_FINALIZER, present=True)[1:] == [
        {"op": "test", "path": "/metadata/finalizers", "value": ["other/keep"]},
        {"op": "add", "path": "/metadata/finalizers/-", "value": api.REQUESTER_FINALIZER},
    ]


def test_a_finalizer_already_there_or_already_gone_changes_nothing_but_is_still_uid_guarded() -> None:
    pod = requester()
    pod["metadata"]["finalizers"] = [api.REQUESTER_FINALIZER]
    uid_only = [{"op": "test", "path": "/metadata/uid", "value": "uid-a"}]
    assert patches.finalizer_change(pod, api.REQUESTER_FINALIZER, present=True) == uid_only
    assert patches.finalizer_change(requester(), api.REQUESTER_FINALIZER, present=False) == uid_only


def test_the_uid_a_patch_is_guarded_by_is_read_from_either_kind() -> None:
    assert patches.target_uid(patches.unbinding(runner())) == "uid-r"
    assert patches.target_uid(patches.of_uid(runner(), patches.sleeping_label(True))) == "uid-r"
    assert patches.target_uid(patches.sleeping_label(True)) == ""


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


def test_a_launcher_requesters_status_without_errors_reads_as_none() -> None:
    from dpctl.dualpods import podview

    pod = {
        "metadata": {
            "annotations": {
                api.INFERENCE_SERVER_CONFIG_ANNOTATION: "isc-a",
                api.HEAD.status: api.RequesterStatus().to_annotation(none_as_null=True),
            }
        }
    }
    assert pod["metadata"]["annotations"][api.HEAD.status] == '{"Errors":null}'
    assert podview.status_errors(pod) == ()
