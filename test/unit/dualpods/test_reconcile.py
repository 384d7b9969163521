"""The reconcile decisions, sample-controller style: given cached objects, the actions taken.

Each test builds the informer view from plain dicts, runs one reconcile of one key, and asserts
on the recorded actions (API writes, HTTP calls) and the outcome — including the order of the
actions where the contract's invariants depend on it (bind before wake, sleep before unbind).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp
import pytest

from dpctl import api
from dpctl.api import LogMsg
from dpctl.clients.http import HttpCallError
from dpctl.clients.inference import SleepModeUnavailable
from dpctl.dualpods.keys import IscKey, RunnerKey, ServerKey
from dpctl.dualpods.podview import RawObj
from dpctl.dualpods.reconcile import Reconciler, Settings
from dpctl.dualpods.state import ServerState
from dpctl.kube import ApiError
from dpctl.podbuild.nominal import build_runner, fallback_runner_name
from dpctl.workqueue.outcome import Done, RequeueAfter, Retry

from .fakes import (
    Recorder,
    World,
    gpu_map_cm,
    gpu_uuid,
    json_patch_edits,
    json_patch_guards,
    node,
    removed_finalizers,
    requester,
    runner,
)

REQ_IP = "127.64.0.2"
REQUESTER_PATH = "/metadata/annotations/" + api.REQUESTER_ANNOTATION.replace("/", "~1")
RUN_IP = "127.64.0.3"


def make(world: World, limit: int = 2, **rec: object) -> tuple[Reconciler, Recorder]:
    recorder = Recorder(world, **rec)  # type: ignore[arg-type]
    return Reconciler(world, recorder.ports, Settings(sleeper_limit=limit)), recorder


def nominal_of(req: dict[str, Any], node_name: str = "node-1", gpus: tuple[int, ...] = (0,)) -> str:
    return build_runner(req, node_name, list(gpus), [gpu_uuid(node_name, g) for g in gpus]).nominal_hash


def patches_of(rec: Recorder, name: str) -> list[dict[str, Any]]:
    return [a[2] for a in rec.actions if a[0] == "patch" and a[1] == name]


# ---------------------------------------------------------------- nothing to do yet


async def test_unscheduled_requester_is_left_alone() -> None:
    world = World([requester(node=None)], [node()], gpu_map_cm({"node-1": 2}))
    rec_, rec = make(world)
    assert await rec_.reconcile(ServerKey("uid-a")) == Done()
    assert rec.actions == []


async def test_requester_on_absent_or_departing_node_is_left_alone() -> None:
    for nodes in ([], [node(deleting=True)]):
        world = World([requester()], nodes, gpu_map_cm({"node-1": 2}))
        r, rec = make(world)
        assert await r.reconcile(ServerKey("uid-a")) == Done()
        assert rec.actions == []


async def test_stub_not_running_yet_waits_for_its_status_event() -> None:
    world = World([requester(running=False)], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world)
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert rec.actions == []


# ---------------------------------------------------------------- cold start


async def test_cold_start_creates_bound_runner_pinned_to_the_requesters_gpus(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    world = World([requester()], [node()], gpu_map_cm({"node-1": 4}))
    r, rec = make(world, gpus={REQ_IP: [gpu_uuid("node-1", 2)]})
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert rec.verbs() == ["query_gpus", "create", "patch"]
    created = rec.actions[1][2]
    assert created["metadata"]["name"] == "req-a-server"
    assert created["metadata"]["annotations"][api.REQUESTER_ANNOTATION] == "uid-a req-a"
    assert api.ORIGINAL.runner_finalizer in created["metadata"]["finalizers"]
    assert created["spec"]["nodeSelector"][api.HOSTNAME_LABEL] == "node-1"
    env = {e["name"]: e.get("value") for e in created["spec"]["containers"][0]["env"]}
    assert env["CUDA_VISIBLE_DEVICES"] == "2"
    status_patch = rec.actions[2][2]["metadata"]
    assert json.loads(status_patch["annotations"][api.ORIGINAL.status]) == {"Errors": []}
    assert status_patch["annotations"][api.ACCELERATORS_ANNOTATION] == gpu_uuid("node-1", 2)
    assert status_patch["labels"][api.DUAL_LABEL] == "req-a-server"
    assert "finalizers" not in status_patch  # the runner's container is not running yet
    messages = [rec_.getMessage() for rec_ in caplog.records]
    assert LogMsg.FOUND_GPUS in messages and LogMsg.CREATED_RUNNER in messages


async def test_gpus_are_asked_once_per_stub_instance() -> None:
    world = World([requester()], [node()], gpu_map_cm({"node-1": 4}))
    r, rec = make(world, gpus={REQ_IP: [gpu_uuid("node-1", 0)]})
    rec.create_conflict = True  # force a second round
    await r.reconcile(ServerKey("uid-a"))
    await r.reconcile(ServerKey("uid-a"))
    assert rec.verbs().count("query_gpus") == 1


async def test_failed_gpu_query_is_reported_and_retried_never_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World([requester()], [node()], gpu_map_cm({"node-1": 4}))
    r, rec = make(world)
    clock = [1000.0]
    monkeypatch.setattr("time.monotonic", lambda: clock[0])
    assert isinstance(await r.reconcile(ServerKey("uid-a")), Retry)
    assert patches_of(rec, "req-a") == []  # a stub just starting is not an error yet
    clock[0] += 6
    outcome = await r.reconcile(ServerKey("uid-a"))
    assert isinstance(outcome, Retry)
    status = json.loads(patches_of(rec, "req-a")[0]["metadata"]["annotations"][api.ORIGINAL.status])
    assert "cannot get the GPUs from the requester" in status["Errors"][0]
    rec.gpus[REQ_IP] = [gpu_uuid("node-1", 0)]
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert "create" in rec.verbs()


@pytest.mark.parametrize(
    ("gpu_map", "uuid", "expect"),
    [
        pytest.param(None, gpu_uuid("node-1", 0), "is not available", id="map-missing"),
        pytest.param(
            gpu_map_cm({"node-2": 2}),
            gpu_uuid("node-1", 0),
            "has no entry for node 'node-1'",
            id="node-missing",
        ),
        pytest.param(
            gpu_map_cm({"node-1": 2}), "GPU-unknown", "is not in the gpu-map entry", id="uuid-unknown"
        ),
        pytest.param(
            {"metadata": {"name": "gpu-map"}, "data": {"node-1": "{not json"}},
            gpu_uuid("node-1", 0),
            "not valid JSON",
            id="not-json",
        ),
        pytest.param(
            {"metadata": {"name": "gpu-map"}, "data": {"node-1": '{"a": 0, "b": 0}'}},
            "a",
            "gives index 0 to both",
            id="dup-index",
        ),
        pytest.param(
            {"metadata": {"name": "gpu-map"}, "data": {"node-1": '{"a": "zero"}'}},
            "a",
            "must be an integer",
            id="wrong-type",
        ),
        pytest.param(
            {"metadata": {"name": "gpu-map"}, "data": {"node-1": '{"a": 0}', "node-2": '{"a": 1}'}},
            "a",
            "is mapped to node 'node-2'",
            id="uuid-on-other-node",
        ),
    ],
)
async def test_gpu_map_problems_become_status_errors_and_create_nothing(
    gpu_map: dict[str, Any] | None, uuid: str, expect: str
) -> None:
    world = World([requester()], [node()], gpu_map)
    r, rec = make(world, gpus={REQ_IP: [uuid]})
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert "create" not in rec.verbs()
    status = json.loads(patches_of(rec, "req-a")[-1]["metadata"]["annotations"][api.ORIGINAL.status])
    assert expect in status["Errors"][0]
    assert rec.events and rec.events[0][0] == "Warning"


@pytest.mark.parametrize(
    ("patch", "expect"),
    [
        pytest.param("metadata: [unclosed", "server-patch", id="not-yaml"),
        pytest.param("- a list", "mapping", id="not-a-mapping"),
        pytest.param(
            "spec:\n  containers:\n  - name: inference-server\n    imagee: x\n", "imagee", id="unknown-field"
        ),
        pytest.param("metadata:\n  labels: {a: {{ .Nope }}}\n", "Nope", id="template-missing-key"),
        pytest.param("metadata:\n  labels: {a: {{ ''.__class__ }}}\n", "server-patch", id="sandbox-escape"),
    ],
)
async def test_bad_server_patch_is_a_status_error_without_runner(patch: str, expect: str) -> None:
    world = World([requester(patch=patch)], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world, gpus={REQ_IP: [gpu_uuid("node-1", 0)]})
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert "create" not in rec.verbs()
    status = json.loads(patches_of(rec, "req-a")[-1]["metadata"]["annotations"][api.ORIGINAL.status])
    assert expect in status["Errors"][0]
    assert ("status_error", "BadServerPatch") in rec.counts


@pytest.mark.parametrize("port", ["http", "0", "70000", "x"])
async def test_bad_admin_port_is_a_status_error(port: str) -> None:
    world = World(
        [requester(annotations={api.ORIGINAL.admin_port: port})], [node()], gpu_map_cm({"node-1": 2})
    )
    r, rec = make(world)
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert "query_gpus" not in rec.verbs()
    status = json.loads(patches_of(rec, "req-a")[-1]["metadata"]["annotations"][api.ORIGINAL.status])
    assert api.ORIGINAL.admin_port in status["Errors"][0]


async def test_status_error_is_not_rewritten_when_unchanged() -> None:
    world = World([requester()], [node()], None)
    r, rec = make(world, gpus={REQ_IP: [gpu_uuid("node-1", 0)]})
    await r.reconcile(ServerKey("uid-a"))
    written = patches_of(rec, "req-a")[-1]["metadata"]["annotations"]
    world.pods["req-a"]["metadata"]["annotations"].update(written)
    rec.actions.clear()
    rec.events.clear()
    await r.reconcile(ServerKey("uid-a"))
    assert rec.verbs() == []  # no API write, no repeated Event: bounded calls for a stuck requester
    assert rec.events == []


async def test_runner_from_a_lost_create_response_is_adopted_not_duplicated() -> None:
    # The create succeeded but its response was lost, and the cache has not caught up yet.
    world = World([requester()], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world, gpus={REQ_IP: [gpu_uuid("node-1", 0)]}, create_conflict=True)
    rec.api_pods["req-a-server"] = runner(bound_to=("uid-a", "req-a"))
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert [a[1] for a in rec.actions if a[0] == "create"] == ["req-a-server"]
    assert patches_of(rec, "req-a")[0]["metadata"]["labels"][api.DUAL_LABEL] == "req-a-server"


async def test_runner_name_taken_by_another_pod_uses_the_deterministic_fallback() -> None:
    world = World([requester()], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world, gpus={REQ_IP: [gpu_uuid("node-1", 0)]}, create_conflict=True)
    rec.api_pods["req-a-server"] = runner(uid="uid-stranger", bound_to=None, gpus=(1,))
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    names = [a[1] for a in rec.actions if a[0] == "create"]
    assert names[0] == "req-a-server"
    assert names[1] == fallback_runner_name("req-a", "uid-a")
    r2, rec2 = make(
        World([requester()], [node()], gpu_map_cm({"node-1": 2})),
        gpus={REQ_IP: [gpu_uuid("node-1", 0)]},
        create_conflict=True,
    )
    rec2.api_pods["req-a-server"] = rec.api_pods["req-a-server"]
    await r2.reconcile(ServerKey("uid-a"))
    assert [a[1] for a in rec2.actions if a[0] == "create"] == names  # same fallback every time


async def test_runner_name_held_by_a_terminating_pod_waits() -> None:
    world = World([requester()], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world, gpus={REQ_IP: [gpu_uuid("node-1", 0)]}, create_conflict=True)
    rec.api_pods["req-a-server"] = runner(uid="uid-old", bound_to=None, gpus=(1,), deleting=True)
    assert isinstance(await r.reconcile(ServerKey("uid-a")), RequeueAfter)


# ---------------------------------------------------------------- GPU exclusivity and sleepers


async def test_no_runner_on_a_gpu_still_held_by_another_bound_runner() -> None:
    other = runner(name="old-server", uid="uid-old", bound_to=("uid-old-req", "old"), gpus=(0,))
    world = World([requester(), other], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world, gpus={REQ_IP: [gpu_uuid("node-1", 0)]})
    outcome = await r.reconcile(ServerKey("uid-a"))
    assert isinstance(outcome, RequeueAfter)
    assert "create" not in rec.verbs() and "wake" not in rec.verbs()


async def test_matching_sleeper_is_bound_before_it_is_woken() -> None:
    req = requester()
    sleeper = runner(
        name="old-server", uid="uid-s", bound_to=None, nominal=nominal_of(req), sleeping_label="true"
    )
    world = World([req, sleeper], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world, gpus={REQ_IP: [gpu_uuid("node-1", 0)]})
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert rec.verbs() == ["query_gpus", "patch", "wake", "patch", "patch"]
    bind = rec.actions[1][2]
    # The precondition: the sleeper is still unbound (not: unchanged since, a resourceVersion).
    assert json_patch_guards(bind)[REQUESTER_PATH] is None
    assert "/metadata/resourceVersion" not in json_patch_guards(bind)
    assert json_patch_edits(bind)[REQUESTER_PATH] == "uid-a req-a"
    assert json_patch_edits(bind)["/metadata/finalizers"] == [api.ORIGINAL.runner_finalizer]
    assert rec.actions[3][2] == {"metadata": {"labels": {api.SLEEPING_LABEL: "false"}}}
    assert ("bind", "") in rec.counts and ("wake", "") in rec.counts
    assert "create" not in rec.verbs()


async def test_sleeper_for_other_gpus_or_definition_is_not_reused() -> None:
    req = requester()
    other_gpu = runner(name="s1", uid="uid-s1", bound_to=None, gpus=(1,), nominal=nominal_of(req, gpus=(1,)))
    other_def = runner(name="s2", uid="uid-s2", bound_to=None, nominal="something-else")
    world = World([req, other_gpu, other_def], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world, gpus={REQ_IP: [gpu_uuid("node-1", 0)]})
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert "wake" not in rec.verbs() and "create" in rec.verbs()


def sleepers_on_gpu0(count: int) -> list[dict[str, Any]]:
    return [
        runner(
            name=f"s{i}",
            uid=f"uid-s{i}",
            bound_to=None,
            nominal=f"other-{i}",
            used_at=f"2026-01-01T00:0{i}:30Z",  # unbound (a controller write) after its container started
        )
        for i in range(count)
    ]


@pytest.mark.parametrize("limit", [1, 2])
async def test_sleeper_limit_deletes_exactly_the_least_recently_used(limit: int) -> None:
    world = World([requester(), *sleepers_on_gpu0(limit + 1)], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world, limit=limit, gpus={REQ_IP: [gpu_uuid("node-1", 0)]})
    outcome = await r.reconcile(ServerKey("uid-a"))
    deletes = [a for a in rec.actions if a[0] == "delete"]
    assert [d[1] for d in deletes] == ["s0"]
    assert deletes[0][2:] == ("uid-s0", "20")  # UID and resourceVersion preconditions
    assert isinstance(outcome, RequeueAfter) and "create" not in rec.verbs()
    # Next round: the victim is terminating; creation waits for its process to exit.
    world.pods["s0"]["metadata"]["deletionTimestamp"] = "2026-01-01T02:00:00Z"
    rec.actions.clear()
    assert isinstance(await r.reconcile(ServerKey("uid-a")), RequeueAfter)
    assert "delete" not in rec.verbs() and "create" not in rec.verbs()
    del world.pods["s0"]
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert "create" in rec.verbs() and "delete" not in rec.verbs()


async def test_sleeper_limit_victim_changed_meanwhile_is_looked_at_again() -> None:
    """Soak finding: the resourceVersion precondition of a victim's delete failed (the kubelet had
    written its status) and the 409 surfaced as an unexpected error with a traceback."""
    world = World([requester(), *sleepers_on_gpu0(2)], [node()], gpu_map_cm({"node-1": 2}))
    conflict = ApiError(409, "Conflict", "the ResourceVersion in the precondition (20) does not match")
    r, rec = make(world, limit=1, gpus={REQ_IP: [gpu_uuid("node-1", 0)]}, fail={"delete": conflict})
    outcome = await r.reconcile(ServerKey("uid-a"))
    assert isinstance(outcome, RequeueAfter) and "create" not in rec.verbs()
    rec.fail.clear()
    assert isinstance(await r.reconcile(ServerKey("uid-a")), RequeueAfter)
    assert [a[1] for a in rec.actions if a[0] == "delete"] == ["s0", "s0"]


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(ApiError(503, "ServiceUnavailable", "the server is shutting down"), id="api-503"),
        pytest.param(ApiError(409, "Conflict", "the object has been modified"), id="api-409"),
        pytest.param(aiohttp.ClientConnectionError("Connect call failed"), id="api-unreachable"),
        pytest.param(TimeoutError(), id="api-timeout"),
    ],
)
async def test_api_server_going_away_mid_reconcile_is_a_transient_retry(error: Exception) -> None:
    """Soak finding: a reconcile in flight when the API server restarted logged a traceback."""
    world = World([requester()], [node()], gpu_map_cm({"node-1": 2}))
    r, _ = make(world, gpus={REQ_IP: [gpu_uuid("node-1", 0)]}, fail={"create": error})
    outcome = await r.reconcile(ServerKey("uid-a"))
    assert isinstance(outcome, Retry)


REFUSALS = [
    pytest.param(
        ApiError(
            422,
            "Invalid",
            'Pod "req-a-server" is invalid: spec.containers[0].ports[0].containerPort: Invalid value: 70000:'
            " must be between 1 and 65535, inclusive",
        ),
        "the server-running Pod req-a-server is invalid: spec.containers[0].ports[0].containerPort:"
        " Invalid value: 70000: must be between 1 and 65535, inclusive",
        id="422-invalid",
    ),
    pytest.param(
        ApiError(
            403,
            "Forbidden",
            "pods \"req-a-server\" is forbidden: ValidatingAdmissionPolicy 'no-host-path' with binding 'b'"
            " denied request: hostPath volumes are not allowed",
        ),
        "the server-running Pod req-a-server is forbidden: ValidatingAdmissionPolicy 'no-host-path' with"
        " binding 'b' denied request: hostPath volumes are not allowed",
        id="403-admission-policy",
    ),
]


def status_of(patch: dict[str, Any]) -> list[str]:
    errors: list[str] = json.loads(patch["metadata"]["annotations"][api.ORIGINAL.status])["Errors"]
    return errors


@pytest.mark.parametrize(("error", "message"), REFUSALS)
async def test_runner_the_api_server_refuses_is_a_status_error_sent_again_only_after_a_change(
    error: ApiError, message: str
) -> None:
    world = World([requester()], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world, gpus={REQ_IP: [gpu_uuid("node-1", 0)]}, fail={"create": error})
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert status_of(patches_of(rec, "req-a")[-1]) == [message]
    assert ("Warning", "RunnerRefused", message) in rec.events
    for _ in range(3):  # its own status write, a gpu-map resync, ...: nothing the runner depends on
        assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert rec.verbs().count("create") == 1
    world.pods["req-a"]["metadata"]["resourceVersion"] = "11"  # the user edits the requester
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert rec.verbs().count("create") == 2


@pytest.mark.parametrize(("error", "message"), REFUSALS)
async def test_refused_rename_after_a_name_clash_is_a_status_error_too(error: ApiError, message: str) -> None:
    other = requester(name="req-a-server", uid="uid-someone")  # holds the runner's name
    world = World([requester(), other], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world, gpus={REQ_IP: [gpu_uuid("node-1", 0)]})
    original = rec.create_pod

    async def refuse_renamed(pod: RawObj) -> dict[str, Any]:
        if pod["metadata"]["name"] != "req-a-server":
            rec.actions.append(("create", pod["metadata"]["name"], pod))
            raise error
        return await original(pod)

    rec.create_pod = refuse_renamed  # type: ignore[method-assign]
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert status_of(patches_of(rec, "req-a")[-1]) == [message]


async def test_binding_a_sleeper_refused_by_an_admission_policy_is_a_status_error() -> None:
    req = requester()
    sleeper = runner(
        name="old-server", uid="uid-s", bound_to=None, nominal=nominal_of(req), sleeping_label="true"
    )
    world = World([req, sleeper], [node()], gpu_map_cm({"node-1": 2}))
    denied = ApiError(
        403, "Forbidden", "pods \"old-server\" is forbidden: ValidatingAdmissionPolicy 'p' denied request"
    )
    r, rec = make(world, gpus={REQ_IP: [gpu_uuid("node-1", 0)]})
    original = rec.patch_pod

    async def refuse_runner(name: str, patch: RawObj | list[RawObj]) -> dict[str, Any]:
        if name != "req-a":
            rec.actions.append(("patch", name, patch))
            raise denied
        return await original(name, patch)

    rec.patch_pod = refuse_runner  # type: ignore[method-assign]
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    [error_text] = status_of(patches_of(rec, "req-a")[-1])
    assert error_text == (
        "binding the sleeping server-running Pod old-server is forbidden: ValidatingAdmissionPolicy 'p' denied request"
    )
    assert "wake" not in rec.verbs()


async def test_refusal_no_requester_edit_can_fix_is_retried_with_backoff_not_raised() -> None:
    """A 403 that only RBAC can fix (deleting a requester on a cordoned Node): no traceback, and the
    retry says it was refused, not that the API server went away."""
    world = World([requester()], [node(unschedulable=True)], gpu_map_cm({"node-1": 2}))
    forbidden = ApiError(
        403, "Forbidden", 'pods "req-a" is forbidden: User "x" cannot delete resource "pods"'
    )
    r, _ = make(world, fail={"delete": forbidden})
    outcome = await r.reconcile(ServerKey("uid-a"))
    assert isinstance(outcome, Retry) and "refused" in outcome.reason and "cannot delete" in outcome.reason


async def test_an_unforeseen_error_is_not_hidden_as_transient() -> None:
    world = World([requester()], [node()], gpu_map_cm({"node-1": 2}))
    r, _ = make(world, gpus={REQ_IP: [gpu_uuid("node-1", 0)]}, fail={"create": KeyError("bug")})
    with pytest.raises(KeyError):
        await r.reconcile(ServerKey("uid-a"))


async def test_gpu_query_error_is_cleared_once_the_stub_answers_even_while_waiting_for_the_gpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No stale errors: the GPUs are still held by another server, so nothing is created yet, but
    the error about the stub no longer holds and goes at once."""
    stale = json.dumps({"Errors": ["cannot get the GPUs from the requester: connection refused"]})
    req = requester(annotations={api.ORIGINAL.status: stale})
    other = runner(name="old-server", uid="uid-old", bound_to=("uid-old-req", "old"), gpus=(0,))
    world = World([req, other], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world, gpus={REQ_IP: [gpu_uuid("node-1", 0)]})
    outcome = await r.reconcile(ServerKey("uid-a"))
    assert isinstance(outcome, RequeueAfter)
    assert status_of(patches_of(rec, "req-a")[-1]) == []
    assert "create" not in rec.verbs()


async def test_a_stub_still_starting_is_an_expected_retry_until_the_grace_period_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World([requester()], [node()], gpu_map_cm({"node-1": 4}))
    r, _ = make(world)
    clock = [1000.0]
    monkeypatch.setattr("time.monotonic", lambda: clock[0])
    first = await r.reconcile(ServerKey("uid-a"))
    assert isinstance(first, Retry) and first.expected
    clock[0] += 6
    later = await r.reconcile(ServerKey("uid-a"))
    assert isinstance(later, Retry) and not later.expected


def test_keys_are_described_by_namespace_and_name_for_log_lines() -> None:
    world = World([requester(), runner(name="s0", uid="uid-s0", bound_to=None)], [node()], gpu_map_cm({}))
    r, _ = make(world)
    assert r.describe(ServerKey("uid-a")) == "ns1/req-a"
    assert r.describe(RunnerKey("uid-s0")) == "ns1/s0"
    assert r.describe(ServerKey("uid-gone")) == "requester with UID uid-gone"
    assert r.describe(RunnerKey("uid-gone")) == "runner or launcher with UID uid-gone"
    assert r.describe(IscKey("isc-a")) == "InferenceServerConfig isc-a"


async def test_sleeper_limit_allows_limit_sleepers_beside_a_new_runner() -> None:
    world = World([requester(), *sleepers_on_gpu0(2)], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world, limit=2, gpus={REQ_IP: [gpu_uuid("node-1", 0)]})
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert "delete" not in rec.verbs() and "create" in rec.verbs()


async def test_lru_counts_reuse_as_use() -> None:
    # s0 was created first but bound and unbound most recently: s1 is now the least recently used.
    old = sleepers_on_gpu0(3)
    old[0]["metadata"]["managedFields"][0]["time"] = "2026-01-01T00:59:00Z"
    world = World([requester(), *old], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world, limit=2, gpus={REQ_IP: [gpu_uuid("node-1", 0)]})
    await r.reconcile(ServerKey("uid-a"))
    assert [a[1] for a in rec.actions if a[0] == "delete"] == ["s1"]


# ---------------------------------------------------------------- bound pairs


async def test_bound_pair_after_restart_asks_before_waking_then_relays() -> None:
    world = World([requester(), runner()], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world, asleep={RUN_IP: True})
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    verbs = rec.verbs()
    assert verbs.index("is_sleeping") < verbs.index("wake") < verbs.index("relay")
    assert ("relay", REQ_IP, True) in rec.actions


async def test_bound_awake_pair_relays_only_news() -> None:
    world = World(
        [requester(ready=True), runner(sleeping_label="false")], [node()], gpu_map_cm({"node-1": 2})
    )
    r, rec = make(world)
    await r.reconcile(ServerKey("uid-a"))
    assert "relay" not in rec.verbs() and "wake" not in rec.verbs()
    # The runner turns unready: the requester is told.
    world.pods["req-a-server"]["status"]["conditions"][0]["status"] = "False"
    await r.reconcile(ServerKey("uid-a"))
    assert ("relay", REQ_IP, False) in rec.actions


async def test_restarted_stub_gets_readiness_relayed_again() -> None:
    world = World(
        [requester(ready=False), runner(sleeping_label="false")], [node()], gpu_map_cm({"node-1": 2})
    )
    r, rec = make(world)
    await r.reconcile(ServerKey("uid-a"))
    await r.reconcile(ServerKey("uid-a"))
    assert rec.verbs().count("relay") == 1  # relayed once; the probe has not caught up yet
    world.pods["req-a"]["status"]["containerStatuses"][0]["restartCount"] = 1
    await r.reconcile(ServerKey("uid-a"))
    assert rec.verbs().count("relay") == 2


async def test_bound_pair_adds_requester_finalizer_once_runner_runs() -> None:
    world = World([requester(), runner()], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world)
    await r.reconcile(ServerKey("uid-a"))
    req_patch = patches_of(rec, "req-a")[0]["metadata"]
    assert req_patch["finalizers"] == [api.REQUESTER_FINALIZER]
    assert req_patch["uid"] == "uid-a"


async def test_requester_finalizer_refused_as_it_is_being_deleted_is_not_an_error() -> None:
    """Soak finding: the cache had not seen the requester's deletion yet, the API server refused
    the requester finalizer (422) and the reconcile ended in a traceback."""
    world = World([requester(), runner(sleeping_label="false")], [node()], gpu_map_cm({"node-1": 2}))
    refused = ApiError(
        422,
        "Invalid",
        'Pod "req-a" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted',
    )
    r, rec = make(world, asleep={RUN_IP: False}, fail={"patch": refused})
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert api.REQUESTER_FINALIZER in json.dumps(patches_of(rec, "req-a"))


async def test_cordon_changes_nothing_for_a_bound_pair() -> None:
    world = World(
        [requester(ready=True, finalizers=[api.REQUESTER_FINALIZER]), runner(sleeping_label="false")],
        [node(unschedulable=True)],
        gpu_map_cm({"node-1": 2}),
    )
    r, rec = make(world)
    r.memory.servers["uid-a"] = ServerState(awake_instance=("uid-r", 0))
    world.pods["req-a"]["metadata"]["annotations"].update({api.ORIGINAL.status: '{"Errors":[]}'})
    world.pods["req-a"]["metadata"]["labels"][api.DUAL_LABEL] = "req-a-server"
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert rec.actions == []


async def test_unbound_requester_on_cordoned_node_is_deleted_once() -> None:
    world = World([requester()], [node(unschedulable=True)], gpu_map_cm({"node-1": 2}))
    r, rec = make(world)
    await r.reconcile(ServerKey("uid-a"))
    await r.reconcile(ServerKey("uid-a"))
    assert [a for a in rec.actions if a[0] == "delete"] == [("delete", "req-a", "uid-a", None)]


async def test_wake_failures_are_retried_then_the_runner_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World([requester(), runner()], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(
        world, asleep={RUN_IP: True}, fail={"wake": HttpCallError("wake", "u", 500, "CUDA out of memory")}
    )
    clock = [1000.0]
    monkeypatch.setattr("time.monotonic", lambda: clock[0])
    # Quick retries alone never give up: the work queue's first retries come milliseconds apart.
    for _ in range(5):
        assert isinstance(await r.reconcile(ServerKey("uid-a")), Retry)
        clock[0] += 0.01
    clock[0] += 30
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert ("delete", "req-a-server", "uid-r", None) in rec.actions
    status = json.loads(patches_of(rec, "req-a")[-1]["metadata"]["annotations"][api.ORIGINAL.status])
    assert "CUDA out of memory" in status["Errors"][0]


async def test_duplicate_bound_runners_keep_the_oldest() -> None:
    older = runner(name="a-server", uid="uid-1")
    newer = runner(name="b-server", uid="uid-2", ip="127.64.0.9")
    newer["metadata"]["creationTimestamp"] = "2026-01-01T00:05:00Z"
    world = World([requester(), older, newer], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world)
    await r.reconcile(ServerKey("uid-a"))
    assert ("delete", "b-server", "uid-2", None) in rec.actions
    assert not any(a[0] == "delete" and a[1] == "a-server" for a in rec.actions)


# ---------------------------------------------------------------- unbinding and deletion


async def test_requester_deletion_sleeps_then_unbinds_then_lets_go(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    world = World(
        [requester(deleting=True, finalizers=[api.REQUESTER_FINALIZER]), runner()],
        [node()],
        gpu_map_cm({"node-1": 2}),
    )
    r, rec = make(world)
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert rec.verbs() == ["patch", "sleep", "patch", "patch"]
    assert rec.actions[0][2] == {"metadata": {"labels": {api.SLEEPING_LABEL: "true"}}}
    unbind = rec.actions[2][2]
    assert json_patch_guards(unbind)[REQUESTER_PATH] == "uid-a req-a"  # still bound to it
    assert json_patch_edits(unbind)[REQUESTER_PATH] is None
    assert removed_finalizers(unbind) == [api.ORIGINAL.runner_finalizer]
    assert rec.actions[3][1] == "req-a"
    assert removed_finalizers(rec.actions[3][2]) == [api.REQUESTER_FINALIZER]
    messages = [x.getMessage() for x in caplog.records]
    assert messages.index(LogMsg.SLEPT) < messages.index(LogMsg.UNBOUND_RUNNER)


async def test_requester_gone_entirely_still_unbinds_its_runner() -> None:
    world = World([runner()], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world)
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert rec.verbs() == ["patch", "sleep", "patch"]


@pytest.mark.parametrize(
    ("runner_kwargs", "nodes", "fail", "reason"),
    [
        pytest.param({"restarts": 2, "ready": False}, [node()], {}, "in-trouble", id="in-trouble"),
        pytest.param({"running": False}, [node()], {}, "not-running", id="not-running"),
        pytest.param({}, [], {}, "node-gone", id="node-gone"),
        pytest.param(
            {},
            [node()],
            {"sleep": SleepModeUnavailable("sleep", "u", 404, "Not Found")},
            "no-sleep-mode",
            id="no-sleep-mode",
        ),
    ],
)
async def test_runner_that_cannot_sleep_is_deleted_on_unbind(
    runner_kwargs: dict[str, Any], nodes: list[dict[str, Any]], fail: dict[str, Exception], reason: str
) -> None:
    world = World(
        [requester(deleting=True, finalizers=[api.REQUESTER_FINALIZER]), runner(**runner_kwargs)],
        nodes,
        gpu_map_cm({"node-1": 2}),
    )
    r, rec = make(world, fail=fail)
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert ("delete", "req-a-server", "uid-r", None) in rec.actions
    assert ("runner_deleted", reason) in rec.counts
    assert rec.actions[-1][1] == "req-a"  # and the requester is let go


async def test_sleep_failure_is_retried_then_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World([requester(deleting=True), runner()], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world, fail={"sleep": HttpCallError("sleep", "u", None, "timed out after 30 s")})
    clock = [1000.0]
    monkeypatch.setattr("time.monotonic", lambda: clock[0])
    assert isinstance(await r.reconcile(ServerKey("uid-a")), Retry)
    clock[0] += 29
    assert isinstance(await r.reconcile(ServerKey("uid-a")), Retry)  # not for long enough yet
    clock[0] += 1
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert ("runner_deleted", "sleep-failed") in rec.counts


async def test_server_still_loading_is_not_deleted_by_quick_sleep_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Soak finding: a requester deleted while its runner still loads got the runner deleted ~35 ms
    later ("sleep-failed" after three 503s at the work queue's first, millisecond retries)."""
    world = World([requester(deleting=True), runner()], [node()], gpu_map_cm({"node-1": 2}))
    loading = HttpCallError("sleep", "u", 503, "HTTP 503 Service Unavailable: The model is still loading.")
    r, rec = make(world, fail={"sleep": loading})
    clock = [1000.0]
    monkeypatch.setattr("time.monotonic", lambda: clock[0])
    for _ in range(8):
        assert isinstance(await r.reconcile(ServerKey("uid-a")), Retry)
        clock[0] += 0.02
    assert not [a for a in rec.actions if a[0] == "delete"]
    rec.fail.pop("sleep")  # loaded: now it sleeps and is kept
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert "sleep" in rec.verbs() and not [a for a in rec.actions if a[0] == "delete"]


async def test_runner_deleted_by_someone_else_takes_the_requester_along() -> None:
    world = World(
        [requester(finalizers=[api.REQUESTER_FINALIZER]), runner(deleting=True)],
        [node()],
        gpu_map_cm({"node-1": 2}),
    )
    r, rec = make(world)
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert rec.actions[0] == ("delete", "req-a", "uid-a", None)
    assert rec.actions[1][1] == "req-a-server"
    assert removed_finalizers(rec.actions[1][2]) == [api.ORIGINAL.runner_finalizer]
    # The runner's container still runs: the requester keeps its finalizer for now.
    assert len(rec.actions) == 2
    await r.reconcile(ServerKey("uid-a"))
    assert [a for a in rec.actions if a[0] == "delete"] == [("delete", "req-a", "uid-a", None)]


async def test_both_gone_is_the_end_of_life_said_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    world = World([requester()], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world)
    await r.reconcile(ServerKey("uid-a"))
    world.pods.clear()
    rec.actions.clear()
    for _ in range(3):  # the deletion seen again, a stale key: nothing more to say
        assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert rec.actions == []
    assert [x.getMessage() for x in caplog.records].count(LogMsg.END_OF_LIFE) == 1
    assert "uid-a" not in r.memory.servers


async def test_a_server_never_seen_has_no_end_of_life(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    r, rec = make(World([], [node()], gpu_map_cm({"node-1": 2})))
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert rec.actions == []
    assert LogMsg.END_OF_LIFE not in [x.getMessage() for x in caplog.records]


# ---------------------------------------------------------------- unbound runners


def restarted_sleeper(ready: bool) -> dict[str, Any]:
    """A sleeper whose container started again after the controller unbound it (its last write)."""
    pod = runner(
        name="old-server", uid="uid-s", bound_to=None, restarts=1, ready=ready, sleeping_label="true"
    )
    pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"] = "2026-01-01T00:20:00Z"
    return pod


async def test_no_runner_beside_a_sleeper_whose_server_restarted_until_it_is_asleep_again() -> None:
    """Soak finding: a sleeper's vLLM restarted (so it loads onto its GPU awake) and the controller
    created a new runner on that GPU at once: two awake servers on one GPU."""
    world = World([requester(), restarted_sleeper(ready=True)], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world, gpus={REQ_IP: [gpu_uuid("node-1", 0)]}, asleep={RUN_IP: False})
    outcome = await r.reconcile(ServerKey("uid-a"))
    assert isinstance(outcome, RequeueAfter) and "still held" in outcome.reason
    assert "create" not in rec.verbs() and "wake" not in rec.verbs()
    assert await r.reconcile(RunnerKey("uid-s")) == Done()  # the sleeper's own key: put back to sleep
    assert rec.verbs()[-2:] == ["is_sleeping", "sleep"]
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert "create" in rec.verbs()


async def test_restarted_sleeper_not_ready_again_is_deleted_when_its_gpu_is_needed() -> None:
    world = World([requester(), restarted_sleeper(ready=False)], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world, gpus={REQ_IP: [gpu_uuid("node-1", 0)]})
    assert isinstance(await r.reconcile(ServerKey("uid-a")), RequeueAfter)
    assert ("delete", "old-server", "uid-s", None) in rec.actions
    assert ("runner_deleted", "restarted-sleeper") in rec.counts
    assert "create" not in rec.verbs()


async def test_sleeper_that_never_restarted_is_trusted_after_a_controller_restart() -> None:
    """Started before the controller's last write (the unbind): asleep, no need to ask first."""
    world = World([requester(), *sleepers_on_gpu0(1)], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world, gpus={REQ_IP: [gpu_uuid("node-1", 0)]})
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert "create" in rec.verbs() and "is_sleeping" not in rec.verbs()


async def test_awake_sleeper_is_put_back_to_sleep_once() -> None:
    world = World([runner(bound_to=None, sleeping_label="true")], [node()])
    r, rec = make(world, asleep={RUN_IP: False})
    assert await r.reconcile(RunnerKey("uid-r")) == Done()
    assert rec.verbs() == ["is_sleeping", "sleep"]
    await r.reconcile(RunnerKey("uid-r"))
    assert rec.verbs() == ["is_sleeping", "sleep"]


async def test_sleeping_sleeper_is_checked_once_per_container_instance() -> None:
    world = World([runner(bound_to=None)], [node()])
    r, rec = make(world, asleep={RUN_IP: True})
    await r.reconcile(RunnerKey("uid-r"))
    await r.reconcile(RunnerKey("uid-r"))
    assert rec.verbs() == ["is_sleeping"]
    world.pods["req-a-server"]["status"]["containerStatuses"][0]["restartCount"] = 1
    await r.reconcile(RunnerKey("uid-r"))
    assert rec.verbs() == ["is_sleeping", "is_sleeping"]


# ---------------------------------------------------------------- actuation latency and log key-values


async def test_actuation_is_observed_once_per_path_and_never_after_a_restart() -> None:
    """Cold: observed at the first ready relay after creating; later relays and a restarted
    controller (fresh soft state, same objects) observe nothing more."""
    world = World([requester()], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world, gpus={REQ_IP: [gpu_uuid("node-1", 0)]})
    await r.reconcile(ServerKey("uid-a"))
    assert "create" in rec.verbs() and rec.actuations == []
    created = runner(uid="uid-new-req-a-server", ready=False, sleeping_label="false")
    world.pods["req-a-server"] = created
    await r.reconcile(ServerKey("uid-a"))
    assert rec.actuations == []  # not ready yet: nothing relayed, nothing observed
    created["status"]["conditions"][0]["status"] = "True"
    await r.reconcile(ServerKey("uid-a"))
    assert ("relay", REQ_IP, True) in rec.actions and rec.actuations == ["cold"]
    # The runner flaps: readiness is relayed again, the actuation is not observed again.
    stub = world.pods["req-a"]["status"]["containerStatuses"][0]
    stub["ready"] = True
    created["status"]["conditions"][0]["status"] = "False"
    await r.reconcile(ServerKey("uid-a"))
    stub["ready"] = False
    created["status"]["conditions"][0]["status"] = "True"
    await r.reconcile(ServerKey("uid-a"))
    assert [a for a in rec.actions if a[0] == "relay"] == [
        ("relay", REQ_IP, True),
        ("relay", REQ_IP, False),
        ("relay", REQ_IP, True),
    ]
    assert rec.actuations == ["cold"]

    # A restarted controller finds the pair bound; the requester's readiness was lost with the
    # stub's state (say), so it relays, but it did not actuate anything: no observation.
    restarted, rec2 = make(world, asleep={RUN_IP: False})
    await restarted.reconcile(ServerKey("uid-a"))
    assert ("relay", REQ_IP, True) in rec2.actions
    assert rec2.actuations == []


async def test_restart_after_binding_takes_the_requesters_accelerators_from_its_runner() -> None:
    """Killed between binding a sleeper and annotating the requester: the next controller never
    asks the stub again (the pair is bound), so the requester's FYI GPUs come from the runner."""
    world = World([requester(), runner()], [node()], gpu_map_cm({"node-1": 2}))
    world.pods["req-a-server"]["metadata"]["annotations"][api.ACCELERATORS_ANNOTATION] = gpu_uuid("node-1", 0)
    restarted, rec = make(world, asleep={RUN_IP: False})
    await restarted.reconcile(ServerKey("uid-a"))
    assert "query_gpus" not in rec.verbs()
    ann = patches_of(rec, "req-a")[0]["metadata"]["annotations"]
    assert ann[api.ACCELERATORS_ANNOTATION] == gpu_uuid("node-1", 0)


async def test_restart_between_bind_and_relay_observes_nothing() -> None:
    """Hot path cut by a restart after binding: the new controller relays, observes nothing."""
    req = requester()
    sleeper = runner(name="old-server", uid="uid-s", bound_to=None, nominal=nominal_of(req))
    world = World([req, sleeper], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world, gpus={REQ_IP: [gpu_uuid("node-1", 0)]})
    await r.reconcile(ServerKey("uid-a"))
    assert "wake" in rec.verbs() and rec.actuations == []
    bound = runner(name="old-server", uid="uid-s", nominal=nominal_of(req), sleeping_label="false")
    world.pods["old-server"] = bound
    # The old controller would observe "hot" here; a restarted one must not.
    restarted, rec2 = make(world, asleep={RUN_IP: False})
    await restarted.reconcile(ServerKey("uid-a"))
    assert ("relay", REQ_IP, True) in rec2.actions and rec2.actuations == []
    await r.reconcile(ServerKey("uid-a"))
    assert rec.actuations == ["hot"]


def _kv(caplog: pytest.LogCaptureFixture, message: str) -> list[dict[str, object]]:
    return [dict(getattr(x, "kv", {})) for x in caplog.records if x.getMessage() == message]


async def test_every_contract_log_line_names_its_requester_runner_and_node(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Contract §7 lines carry the objects they concern, so one grep finds a server's story."""
    caplog.set_level(logging.INFO)
    # Cold start, relay, unbind (sleep), end of life.
    world = World([requester()], [node()], gpu_map_cm({"node-1": 2}))
    r, _ = make(world, gpus={REQ_IP: [gpu_uuid("node-1", 0)]})
    await r.reconcile(ServerKey("uid-a"))
    world.pods["req-a-server"] = runner(uid="uid-new-req-a-server", sleeping_label="false")
    await r.reconcile(ServerKey("uid-a"))
    world.pods["req-a"]["metadata"]["deletionTimestamp"] = "2026-01-01T01:00:00Z"
    await r.reconcile(ServerKey("uid-a"))
    del world.pods["req-a"]
    world.pods["req-a-server"] = runner(uid="uid-new-req-a-server", bound_to=None, sleeping_label="true")
    await r.reconcile(ServerKey("uid-a"))
    # Hot start of another requester; an asleep bound runner woken; an awake sleeper slept; eviction.
    req_b = requester(name="req-b", uid="uid-b")
    sleeper = runner(name="old-server", uid="uid-s", bound_to=None, nominal=nominal_of(req_b))
    world2 = World([req_b, sleeper], [node()], gpu_map_cm({"node-1": 2}))
    r2, _ = make(world2, gpus={REQ_IP: [gpu_uuid("node-1", 0)]})
    await r2.reconcile(ServerKey("uid-b"))
    r3, _ = make(World([requester(), runner()], [node()], gpu_map_cm({"node-1": 2})), asleep={RUN_IP: True})
    await r3.reconcile(ServerKey("uid-a"))
    r4, _ = make(World([runner(bound_to=None)], [node()]), asleep={RUN_IP: False})
    await r4.reconcile(RunnerKey("uid-r"))
    world5 = World([requester(), *sleepers_on_gpu0(2)], [node()], gpu_map_cm({"node-1": 2}))
    r5, _ = make(world5, limit=1, gpus={REQ_IP: [gpu_uuid("node-1", 0)]})
    await r5.reconcile(ServerKey("uid-a"))

    want = {
        LogMsg.FOUND_GPUS: {"requester", "node"},
        LogMsg.CREATED_RUNNER: {"requester", "runner", "node"},
        LogMsg.BOUND_RUNNER: {"requester", "runner", "node"},
        LogMsg.WOKE: {"requester", "runner", "node"},
        LogMsg.SLEPT: {"runner", "node"},
        LogMsg.UNBOUND_RUNNER: {"requester", "runner", "node"},
        LogMsg.RELAYED_READINESS: {"requester", "runner", "node"},
        LogMsg.END_OF_LIFE: {"requesterUID", "requester", "runner", "node"},
        LogMsg.SLEEPER_LIMIT_DELETE: {"runner", "node"},
    }
    for message, keys in want.items():
        lines = _kv(caplog, message)
        assert lines, f"no {message!r} line"
        for kv in lines:
            assert keys <= kv.keys(), (message, kv)
            assert all(kv[k] for k in keys), (message, kv)
    # Sleeping a runner as it is unbound also names the requester it served.
    assert {"requester": "req-a", "runner": "req-a-server", "node": "node-1"}.items() <= _kv(
        caplog, LogMsg.SLEPT
    )[0].items()
    assert _kv(caplog, LogMsg.END_OF_LIFE)[0]["requester"] == "req-a"


# ---------------------------------------------------------------- dialects (contract §2b)


async def test_a_head_requester_is_answered_in_head_names_from_query_to_status() -> None:
    world = World([requester(dialect=api.HEAD)], [node()], gpu_map_cm({"node-1": 4}))
    r, rec = make(world, gpus={REQ_IP: [gpu_uuid("node-1", 1)]})
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert rec.verbs() == ["query_gpus", "create", "patch"]
    assert rec.actions[0][3] is api.HEAD  # the stub is asked at the HEAD path first
    assert rec.actions[1][2]["metadata"]["finalizers"] == ["dual-pods.llm-d.ai/provider"]
    status = rec.actions[2][2]["metadata"]["annotations"]
    assert json.loads(status["dual-pods.llm-d.ai/status"]) == {"Errors": []}
    assert "dual-pod.llm-d.ai/status" not in status


async def test_a_head_requester_binds_a_sleeper_an_original_controller_left() -> None:
    req = requester(dialect=api.HEAD)
    sleeper = runner(
        name="old-server", uid="uid-s", bound_to=None, nominal=nominal_of(req), sleeping_label="true"
    )
    world = World([req, sleeper], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world, gpus={REQ_IP: [gpu_uuid("node-1", 0)]})
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert rec.verbs() == ["query_gpus", "patch", "wake", "patch", "patch"]
    assert json_patch_edits(rec.actions[1][2])["/metadata/finalizers"] == ["dual-pods.llm-d.ai/provider"]


async def test_a_runner_bound_under_head_names_is_unbound_of_its_provider_finalizer() -> None:
    world = World(
        [
            requester(deleting=True, finalizers=[api.REQUESTER_FINALIZER], dialect=api.HEAD),
            runner(dialect=api.HEAD),
        ],
        [node()],
        gpu_map_cm({"node-1": 2}),
    )
    r, rec = make(world)
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert rec.verbs() == ["patch", "sleep", "patch", "patch"]
    assert removed_finalizers(rec.actions[2][2]) == ["dual-pods.llm-d.ai/provider"]


async def test_a_runner_deleted_with_the_provider_finalizer_is_let_go() -> None:
    world = World(
        [requester(dialect=api.HEAD), runner(deleting=True, dialect=api.HEAD)],
        [node()],
        gpu_map_cm({"node-1": 2}),
    )
    r, rec = make(world)
    await r.reconcile(ServerKey("uid-a"))
    dropped = [
        removed_finalizers(a[2])
        for a in rec.actions
        if a[0] == "patch" and a[1] == "req-a-server" and isinstance(a[2], list)
    ]
    assert dropped and dropped[0] == ["dual-pods.llm-d.ai/provider"]


async def test_a_requester_with_both_server_patches_gets_the_status_error_in_both_and_nothing_else() -> None:
    both = requester(annotations={api.HEAD.server_patch: "spec: {}"})
    world = World([both], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world, gpus={REQ_IP: [gpu_uuid("node-1", 0)]})
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert rec.verbs() == ["patch"]
    written = rec.actions[0][2]["metadata"]["annotations"]
    for dialect in api.DIALECTS:
        (error,) = json.loads(written[dialect.status])["Errors"]
        assert api.ORIGINAL.server_patch in error and api.HEAD.server_patch in error
    assert [(t, reason) for t, reason, _ in rec.events] == [("Warning", "TwoDialects")]


# ---------------------------------------------------------------- the log relay


async def test_a_served_pair_has_its_runners_log_relayed_and_release_stops_it() -> None:
    world = World([requester(running=True), runner()], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world)
    await r.reconcile(ServerKey("uid-a"))
    target = rec.relays["uid-a"]
    assert (target.runner, target.stub_host, target.stub_port) == ("req-a-server", REQ_IP, 8081)
    world.pods["req-a"]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    await r.reconcile(ServerKey("uid-a"))
    assert rec.relays == {}


async def test_no_relay_while_the_runners_server_is_not_running() -> None:
    world = World([requester(), runner(running=False)], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world)
    await r.reconcile(ServerKey("uid-a"))
    assert rec.relays == {}


# ---------------------------------------------------------------- the memory guard before a wake

GIB = 1 << 30


def guarded(world: World, budget: int, **rec: object) -> tuple[Reconciler, Recorder]:
    recorder = Recorder(world, **rec)  # type: ignore[arg-type]
    return Reconciler(world, recorder.ports, Settings(wake_memory_budget=budget)), recorder


def bound_to_gpu() -> tuple[RawObj, RawObj]:
    bound = runner()
    bound["metadata"]["annotations"][api.ACCELERATORS_ANNOTATION] = gpu_uuid("node-1", 0)
    return requester(), bound


async def test_with_the_guard_a_wake_waits_while_the_gpu_holds_more_than_the_budget() -> None:
    req, bound = bound_to_gpu()
    world = World([req, bound], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = guarded(world, 2 * GIB, asleep={RUN_IP: True})
    rec.memory = {gpu_uuid("node-1", 0): 70 * GIB, gpu_uuid("node-1", 1): 0}
    outcome = await r.reconcile(ServerKey("uid-a"))
    assert isinstance(outcome, Retry) and "wake budget of 2048 MiB" in outcome.reason
    assert "wake" not in rec.verbs()
    status = json.loads(patches_of(rec, "req-a")[-1]["metadata"]["annotations"][api.ORIGINAL.status])
    (error,) = status["Errors"]
    assert f"{gpu_uuid('node-1', 0)}: 71680 MiB" in error
    rec.memory[gpu_uuid("node-1", 0)] = 1 * GIB  # the departing server let go
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert "wake" in rec.verbs()


async def test_without_the_guard_the_stub_is_not_asked_about_memory() -> None:
    req, bound = bound_to_gpu()
    world = World([req, bound], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(world, asleep={RUN_IP: True})
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert "accelerator_memory" not in rec.verbs() and "wake" in rec.verbs()


async def test_a_stub_that_cannot_tell_its_memory_holds_the_wake_with_a_reason() -> None:
    req, bound = bound_to_gpu()
    world = World([req, bound], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = guarded(
        world,
        2 * GIB,
        asleep={RUN_IP: True},
        fail={"accelerator_memory": HttpCallError("memory", "u", 503, "nvidia-smi failed")},
    )
    outcome = await r.reconcile(ServerKey("uid-a"))
    assert isinstance(outcome, Retry) and "cannot check the GPU memory" in outcome.reason
    assert "wake" not in rec.verbs()
