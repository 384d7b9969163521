"""Bad input on the launcher path, one row each (launcher contract §9, invariant I10): every bad
InferenceServerConfig, LauncherConfig, requester annotation, stub answer and launcher record ends
in a status error (``dual-pods.llm-d.ai/status``) and/or an Event whose words say what is wrong,
and never in a controller crash (the process lives, its log has no traceback), a loop faster than
the backoff (the controller's API writes and HTTP calls over a window, counted from its
/metrics) or a change to the healthy launcher-path pair that shares the namespace (same Pod
UIDs, still Ready). Rows whose cause can be fixed are fixed, and then their error goes.

The populator's rows (LauncherPopulationPolicy) are not here: dpctl has no populator yet.
The table in docs/reliability.md lists the same rows with what a user sees.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from dpctl import api
from dpctl.dualpods import podview
from dpctl.dualpods.steps.finalizers import TWO_PATHS
from dpctl.faults import ENABLE_ENV, RULES_ENV
from dpctl.workqueue.ratelimit import DEFAULT_BASE_DELAY_S
from helpers import wait_for

from .conftest import (
    GOOD_OPTIONS,
    GOOD_PATCH,
    INSTANCE_START_TIMEOUT_S,
    LC_NAME,
    LC_NO_SERVER,
    LX_TIMEOUT,
    ROW_NODE,
    SCALE,
    TEMPLATE_LABEL,
    Calls,
    Setup,
    create_pod,
    inference_server_config,
    launcher_config,
    launcher_requester,
    launcher_status_errors,
    served_pair,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(int(420 * SCALE))]

# As in test_bad_input: how long the controller's calls are counted once the error shows, and
# what "not a loop" allows in that time. A user error is written once and then waits for the
# object at fault to change.
WINDOW_S = 10.0
MAX_WRITES = 2
MAX_HTTP = 6
# A failure retried with per-item backoff (doubling from 5 ms, at most 20 s apart): the most tries
# a window can hold, wherever in the doubling it starts. A loop without backoff makes hundreds.
MAX_TRIES = math.ceil(math.log2(WINDOW_S / DEFAULT_BASE_DELAY_S)) + 2

ISC_ANNOTATION = api.INFERENCE_SERVER_CONFIG_ANNOTATION
UNKNOWN_GPU = "GPU-00000000-0000-0000-0000-00000000dead"


def _stub_gpus(body: str) -> dict[str, str]:
    """The stub's answer to the GPU query, in both dialects' paths, replaced by ``body``."""
    rules = [{"path": d.accelerators_path, "status": 200, "body": body} for d in api.DIALECTS]
    return {ENABLE_ENV: "1", RULES_ENV: json.dumps(rules)}


@dataclass(frozen=True)
class Row:
    id: str
    errors: tuple[tuple[str, ...], ...]  # per status error, the words it must hold
    event: str  # the reason of the Warning Events that say them
    isc: Mapping[str, Any] = field(default_factory=dict)  # the row's ISC's changes to a good one
    annotation: str | None = None  # the requester's ISC annotation; None: the row's ISC's name
    env: Mapping[str, str] = field(default_factory=dict)
    server_patch: str | None = None

    @property
    def isc_name(self) -> str:
        return f"isc-{self.id}"


BAD_KEYS = {
    "labels": {
        "dual-pods.llm-d.ai/stolen": "x",  # reserved
        "bad key!": "x",  # not a qualified name
        TEMPLATE_LABEL: "x",  # already on the launcher, from the LauncherConfig's template
        "example.com/model": "not a label value!",
    },
    "annotations": {"kubernetes.io/forged": "x"},
}

ROWS = [
    Row(
        "isc-annotation-empty",
        ((f"empty value for annotation {json.dumps(ISC_ANNOTATION)}",),),
        "BadInferenceServerConfig",
        annotation="",
    ),
    Row(
        "isc-routing-keys",
        (
            ('ISC label key "dual-pods.llm-d.ai/stolen" uses a reserved prefix',),
            ('ISC label key "bad key!" is not a valid qualified name',),
            (f"ISC label key {json.dumps(TEMPLATE_LABEL)} collides with existing pod label",),
            ('ISC label value "not a label value!" for key "example.com/model" is not valid',),
            ('ISC annotation key "kubernetes.io/forged" uses a reserved prefix',),
        ),
        "BadInferenceServerConfig",
        isc=BAD_KEYS,
    ),
    Row(
        "options-port",
        (("options must not contain --port",),),
        "BadInferenceServerConfig",
        isc={"options": GOOD_OPTIONS + " --port 9000"},
    ),
    Row(
        "lc-without-inference-server",
        ((f"LauncherConfig '{LC_NO_SERVER}' is malformed", "no container named 'inference-server'"),),
        "BadInferenceServerConfig",
        isc={"lc": LC_NO_SERVER},
    ),
    Row(
        "stub-empty-gpu-list",
        (("the assigned set of GPUs is empty",),),
        "BadInferenceServerConfig",
        env=_stub_gpus("[]"),
    ),
    Row("server-patch-and-isc", ((TWO_PATHS,),), "TwoPaths", server_patch=GOOD_PATCH.text()),
]


def _events(setup: Setup, reason: str, name: str | None = None) -> list[dict[str, Any]]:
    args = ["events", "--field-selector", f"reason={reason}"]
    if name is not None:
        args[-1] += f",involvedObject.name={name}"
    items: list[dict[str, Any]] = setup.kubectl.get_json(*args)["items"]
    return items


def _row_pods(setup: Setup, row: str) -> list[dict[str, Any]]:
    return [p for p in setup.kubectl.pods() if podview.labels(p).get("row") == row]


def _row_launchers(setup: Setup) -> list[dict[str, Any]]:
    return [
        p
        for p in setup.kubectl.pods()
        if podview.is_launcher(p) and podview.labels(p).get(api.NODE_NAME_LABEL) == ROW_NODE
    ]


def _launcher_of(setup: Setup, requester_uid: str) -> dict[str, Any] | None:
    for p in setup.kubectl.pods():
        bound = podview.bound_requester(p) if podview.is_launcher(p) else None
        if bound and bound[0] == requester_uid:
            return p
    return None


def _cleanup(setup: Setup, row: str, iscs: tuple[str, ...] = (), lcs: tuple[str, ...] = ()) -> None:
    """The row's requesters gone (their launchers unbound first), then its launchers and objects."""
    kc = setup.kubectl
    kc.run("delete", "replicasets", "-l", f"row={row}", "--wait=false", check=False)
    kc.run("delete", "pods", "-l", f"row={row}", "--wait=false", check=False)
    wait_for(lambda: not _row_pods(setup, row), LX_TIMEOUT, f"the requesters of row {row} gone")
    kc.run("delete", "pods", "-l", f"{api.NODE_NAME_LABEL}={ROW_NODE}", "--wait=false", check=False)
    wait_for(lambda: not _row_launchers(setup), LX_TIMEOUT, f"the launchers on {ROW_NODE} gone")
    for isc in iscs:
        kc.run("delete", "inferenceserverconfig", isc, "--ignore-not-found", check=False)
    for lc in lcs:
        kc.run("delete", "launcherconfig", lc, "--ignore-not-found", check=False)


@dataclass
class Window:
    calls: Calls
    statuses: list[str]  # the requester's status annotation as each pass saw it, when it changed


def _window(setup: Setup, name: str) -> Window:
    """The controller's calls over WINDOW_S, while the healthy pair and the controller are watched
    (and the requester's status, which a loop may be seen flipping)."""
    before = setup.calls()
    statuses: list[str] = []
    deadline = time.monotonic() + WINDOW_S
    while time.monotonic() < deadline:
        problems = setup.healthy_problems() + setup.controller_problems()
        assert not problems, problems
        pod = setup.kubectl.pod(name)
        status = podview.annotations(pod).get(api.HEAD.status, "") if pod else "(gone)"
        if not statuses or statuses[-1] != status:
            statuses.append(status)
        time.sleep(1.0)  # the window is a measurement interval; each pass checks a condition
    return Window(setup.calls().minus(before), statuses)


def _assert_no_loop(window: Window, max_http: float = MAX_HTTP) -> None:
    calls, seen = window.calls, f"; the status seen: {window.statuses}"
    assert calls.writes <= MAX_WRITES, f"{calls.api_writes} API writes in {WINDOW_S:g} s: a loop{seen}"
    assert calls.http <= max_http, f"{calls.http} HTTP calls in {WINDOW_S:g} s: a loop{seen}"


def _assert_undisturbed(setup: Setup) -> None:
    assert setup.healthy_problems() == []
    assert setup.controller_problems() == []


def _error_with(setup: Setup, name: str, *words: str) -> str:
    pod = setup.kubectl.pod(name)
    found = [e for e in launcher_status_errors(pod) if all(w in e for w in words)] if pod else []
    return found[0] if found else ""


def _status_errors(setup: Setup, name: str) -> list[str]:
    pod = setup.kubectl.pod(name)
    return launcher_status_errors(pod) if pod else []


def _warning_saying(setup: Setup, name: str, reason: str, message: str) -> list[dict[str, Any]]:
    return wait_for(
        lambda: [
            e
            for e in _events(setup, reason, name)
            if e.get("type") == "Warning" and message in e.get("message", "")
        ],
        60 * SCALE,
        f"a Warning Event {reason} saying {message!r}",
    )


def _requester(row: Row, name: str) -> dict[str, Any]:
    isc = row.isc_name if row.annotation is None else row.annotation
    return launcher_requester(name, row.id, isc, env=row.env or None, server_patch=row.server_patch)


def _isc_of(row: Row) -> dict[str, Any]:
    changes = dict(row.isc)
    return inference_server_config(row.isc_name, changes.pop("lc", LC_NAME), **changes)


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id) for r in ROWS])
def test_launcher_bad_input_row(lsetup: Setup, row: Row) -> None:
    setup, name = lsetup, f"lbad-{row.id}"[:50]
    try:
        setup.kubectl.apply(_isc_of(row))
        create_pod(setup.kubectl, _requester(row, name))
        # A row's errors are written together, in one patch: the first shown are all there are.
        shown = wait_for(lambda: _status_errors(setup, name), LX_TIMEOUT, f"a status error on {name}")
        messages = [next((e for e in shown if all(w in e for w in words)), "") for words in row.errors]
        assert all(messages), f"the status errors should have the words {row.errors}; they are {shown}"
        for message in messages:
            assert _warning_saying(setup, name, row.event, message)
        _assert_no_loop(_window(setup, name))
        pod = setup.kubectl.pod(name)
        assert pod is not None and not podview.is_deleting(pod)
        assert sorted(launcher_status_errors(pod)) == sorted(messages), "the errors changed by themselves"
        assert not _row_launchers(setup), "a launcher was created or bound for a requester in error"
        assert not [v for v in setup.ledger.violations() if name in v.intruder.pod]
        _assert_undisturbed(setup)
    finally:
        _cleanup(setup, row.id, iscs=(row.isc_name,))


@pytest.mark.parametrize("missing", ["InferenceServerConfig", "LauncherConfig"])
def test_missing_config_is_reported_then_fixed_when_it_appears(lsetup: Setup, missing: str) -> None:
    """R7, R10: the missing object named; once it is created the requester is served and the
    error goes, without the requester changing (the controller watches both kinds)."""
    setup = lsetup
    row = f"late-{'isc' if missing == 'InferenceServerConfig' else 'lc'}"
    name, isc, lc = f"lbad-{row}", f"isc-{row}", LC_NAME if missing == "InferenceServerConfig" else "lc-late"
    late = inference_server_config(isc, lc) if missing == "InferenceServerConfig" else launcher_config(lc)
    try:
        if missing == "LauncherConfig":
            setup.kubectl.apply(inference_server_config(isc, lc))
        create_pod(setup.kubectl, launcher_requester(name, row, isc))
        absent = isc if missing == "InferenceServerConfig" else lc
        words = f"failed to get {missing} {json.dumps(absent)}: not found"
        message = wait_for(lambda: _error_with(setup, name, words), LX_TIMEOUT, f"a status error {words!r}")
        assert _warning_saying(setup, name, "BadInferenceServerConfig", message)
        _assert_no_loop(_window(setup, name))
        assert not _row_launchers(setup)
        setup.kubectl.apply(late)
        wait_for(lambda: served_pair(setup.kubectl, name), LX_TIMEOUT, f"{name} served once {absent} exists")
        pod = setup.kubectl.pod(name)
        assert pod is not None and launcher_status_errors(pod) == [], "the error outlived its cause"
        _assert_undisturbed(setup)
    finally:
        _cleanup(setup, row, iscs=(isc,), lcs=("lc-late",) if missing == "LauncherConfig" else ())


def test_options_vllm_rejects_stop_the_cycle_after_three_deaths(lsetup: Setup) -> None:
    """§9 [D]: vLLM (here its emulator) exits on an option value it cannot parse; the requester is
    deleted and its ReplicaSet's replacement tries again; after the third death of the same
    instance the requester stays, with the end of the instance's log in its status."""
    setup, row = lsetup, "bad-options"
    isc = f"isc-{row}"
    kc = setup.kubectl
    # Every GPU of the row's Node: each replacement gets the same GPUs, so the same instance id.
    pod = launcher_requester("unused", row, isc, gpus=4)
    rs = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": f"rs-{row}", "labels": {"row": row}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"row": row}},
            "template": {
                "metadata": {
                    "labels": pod["metadata"]["labels"],
                    "annotations": pod["metadata"]["annotations"],
                },
                "spec": pod["spec"],
            },
        },
    }
    try:
        kc.apply(inference_server_config(isc, options=GOOD_OPTIONS + " --max-model-len lots"))
        kc.apply(rs)

        def gave_up() -> tuple[str, str] | None:
            for p in _row_pods(setup, row):
                found = [e for e in launcher_status_errors(p) if "so it is not created again" in e]
                if found and not podview.is_deleting(p):
                    return podview.name(p), found[0]
            return None

        name, message = wait_for(gave_up, 3 * LX_TIMEOUT, "a requester whose instance is not created again")
        for words in ("stopped 3 times within 10 minutes", f"InferenceServerConfig {json.dumps(isc)}"):
            assert words in message
        assert "The end of its log" in message and "--max-model-len: invalid value: 'lots'" in message
        assert _warning_saying(setup, name, "InstanceFailing", "so it is not created again")
        stopped = {e["involvedObject"]["uid"] for e in _events(setup, "InstanceStopped")}
        assert len(stopped) == 2, f"requesters deleted for their instance's death: {len(stopped)}, not 2"
        uid = podview.uid(kc.pod(name) or {})
        _assert_no_loop(_window(setup, name))
        kept = kc.pod(name)
        assert kept is not None and podview.uid(kept) == uid and not podview.is_deleting(kept)
        assert message in launcher_status_errors(kept)
        assert len(_row_pods(setup, row)) == 1
        _assert_undisturbed(setup)
    finally:
        _cleanup(setup, row, iscs=(isc,))


def _served_on_row_node(setup: Setup, row: str, isc: str) -> tuple[str, dict[str, Any]]:
    name = f"lbad-{row}"
    setup.kubectl.apply(inference_server_config(isc))
    create_pod(setup.kubectl, launcher_requester(name, row, isc))
    _, launcher = wait_for(lambda: served_pair(setup.kubectl, name), LX_TIMEOUT, f"{name} served")
    return name, launcher


def test_bookkeeping_annotation_removed_from_a_bound_launcher(lsetup: Setup) -> None:
    """R15: a bound launcher without one of its four records: a status error, no other action."""
    setup, row = lsetup, "bookkeeping"
    isc = f"isc-{row}"
    try:
        name, launcher = _served_on_row_node(setup, row, isc)
        requester = setup.kubectl.pod(name)
        assert requester is not None
        lname = podview.name(launcher)
        setup.kubectl.run("annotate", "pod", lname, f"{api.SERVER_PORT_ANNOTATION}-")
        words = f"bound launcher Pod {json.dumps(lname)} is missing annotation {json.dumps(api.SERVER_PORT_ANNOTATION)}"
        message = wait_for(lambda: _error_with(setup, name, words), LX_TIMEOUT, f"a status error {words!r}")
        assert _warning_saying(setup, name, "Bookkeeping", message)
        _assert_no_loop(_window(setup, name))
        now_req, now_launcher = setup.kubectl.pod(name), setup.kubectl.pod(lname)
        assert now_req is not None and now_launcher is not None
        assert podview.uid(now_req) == podview.uid(requester) and not podview.is_deleting(now_req)
        assert podview.uid(now_launcher) == podview.uid(launcher) and not podview.is_deleting(now_launcher)
        assert podview.bound_requester(now_launcher) == (podview.uid(requester), name), "it was unbound"
        assert launcher_status_errors(now_req) == [message]
        _assert_undisturbed(setup)
    finally:
        _cleanup(setup, row, iscs=(isc,))


def test_instance_that_never_answers_is_deleted_after_the_start_timeout(lsetup: Setup) -> None:
    """§9 [D]: vLLM hangs while loading (here: its /is_sleeping never answers); after
    --instance-start-timeout the instance is deleted, saying why, and its requester goes."""
    setup, row = lsetup, "never-answers"
    isc, name = f"isc-{row}", f"lbad-{row}"
    hang = {ENABLE_ENV: "1", RULES_ENV: json.dumps([{"path": api.IS_SLEEPING_PATH, "hang": True}])}
    try:
        setup.kubectl.apply(inference_server_config(isc, env_vars=hang))
        before = setup.calls()
        create_pod(setup.kubectl, launcher_requester(name, row, isc))
        words = f"did not answer {api.IS_SLEEPING_PATH} within {INSTANCE_START_TIMEOUT_S} s of its start"
        events = wait_for(
            lambda: [e for e in _events(setup, "InstanceDeleted", name) if words in e.get("message", "")],
            LX_TIMEOUT + INSTANCE_START_TIMEOUT_S,
            f"an InstanceDeleted Event saying {words!r}",
        )
        assert events[0]["type"] == "Warning"
        wait_for(lambda: not _row_pods(setup, row), LX_TIMEOUT, "the requester deleted once its instance was")
        calls = setup.calls().minus(before)
        # Asked about once a second until the timeout; a loop would ask far more.
        assert calls.http <= 4 * INSTANCE_START_TIMEOUT_S, f"{calls.http} HTTP calls: a loop"
        assert "Traceback" not in setup.controller.log()
        _assert_undisturbed(setup)
    finally:
        _cleanup(setup, row, iscs=(isc,))


def test_unknown_gpu_uuid_at_the_launcher_is_retried_with_backoff(lsetup: Setup) -> None:
    """§9: the stub names a GPU the launcher does not have; its PUT fails (400): a status error,
    retried with backoff (the stub may be fixed), the launcher kept bound."""
    setup, row = lsetup, "unknown-gpu"
    isc, name = f"isc-{row}", f"lbad-{row}"
    try:
        setup.kubectl.apply(inference_server_config(isc))
        create_pod(
            setup.kubectl, launcher_requester(name, row, isc, env=_stub_gpus(json.dumps([UNKNOWN_GPU])))
        )
        message = wait_for(
            lambda: _error_with(setup, name, "cannot create vLLM instance", "400"),
            LX_TIMEOUT,
            "a status error saying the launcher refused the instance",
        )
        assert UNKNOWN_GPU in message, message
        _assert_no_loop(_window(setup, name), max_http=2 * MAX_TRIES)  # each try: list the instances, PUT
        pod = setup.kubectl.pod(name)
        assert pod is not None and message in launcher_status_errors(pod)
        launcher = _launcher_of(setup, podview.uid(pod))
        assert launcher is not None and not podview.is_deleting(launcher)
        _assert_undisturbed(setup)
    finally:
        _cleanup(setup, row, iscs=(isc,))
