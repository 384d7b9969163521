"""The launcher path of the reconciler (launcher contract R5–R22), with the launcher API, the
stub and the instances faked: which launcher is chosen, what is written on it and on the
requester, and in which order, for each rule."""

from __future__ import annotations

import json
from typing import Any

from dpctl import api
from dpctl.dualpods.keys import IscKey, ServerKey
from dpctl.dualpods.reconcile import Reconciler, Settings
from dpctl.fma.v1alpha1 import ModelServerConfig
from dpctl.launcher.api import InstanceState
from dpctl.podbuild.launcher import instance_id, launch_body, launcher_for_node, launcher_template
from dpctl.workqueue.outcome import Done
from unit.dualpods.fakes import (
    NS,
    Recorder,
    World,
    gpu_map_cm,
    gpu_uuid,
    json_patch_edits,
    node,
    requester,
    runner,
)

ISC = "isc-a"
LC = "lc-a"
PORT = 8005
GPUS = [gpu_uuid("node-1", 0)]
REQ_IP = "127.64.0.2"
L_IP = "127.64.0.9"


def isc(
    name: str = ISC, port: int = PORT, options: str = "--model m", labels: dict[str, str] | None = None
) -> dict[str, Any]:
    server: dict[str, Any] = {"port": port, "options": options}
    if labels is not None:
        server["labels"] = labels
    return {
        "metadata": {"name": name, "namespace": NS, "generation": 1},
        "spec": {"launcherConfigName": LC, "modelServerConfig": server},
    }


def lc(max_instances: int = 2) -> dict[str, Any]:
    return {
        "metadata": {"name": LC, "namespace": NS, "uid": "uid-lc"},
        "spec": {
            "maxInstances": max_instances,
            "podTemplate": {
                "metadata": {"labels": {"team": "a"}},
                "spec": {"containers": [{"name": "inference-server", "image": "x/launcher:v1"}]},
            },
        },
    }


def server_of(obj: dict[str, Any]) -> ModelServerConfig:
    return ModelServerConfig.model_validate(obj["spec"]["modelServerConfig"])


def isc_requester(isc_name: str = ISC, **kw: Any) -> dict[str, Any]:
    pod = requester(**kw)
    ann = pod["metadata"]["annotations"]
    for dialect in api.DIALECTS:
        ann.pop(dialect.server_patch, None)
        ann.pop(dialect.admin_port, None)
    ann[api.INFERENCE_SERVER_CONFIG_ANNOTATION] = isc_name
    return pod


def launcher(
    name: str = "launcher-a", ready: bool = True, uid: str = "uid-l1", **extra: Any
) -> dict[str, Any]:
    pod = launcher_for_node(launcher_template(lc(**extra)), "node-1")
    pod["metadata"].update(name=name, uid=uid, resourceVersion="20", creationTimestamp="2026-01-01T00:00:00Z")
    pod["status"] = {
        "phase": "Running",
        "podIP": L_IP,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        "containerStatuses": [
            {"name": "inference-server", "ready": ready, "restartCount": 0, "state": {"running": {}}}
        ],
    }
    return pod


def state(iid: str, port: int = PORT, status: str = "running", isc_name: str = ISC) -> InstanceState:
    return InstanceState.model_validate(
        {
            "options": f"--model m --port {port}",
            "gpu_uuids": GPUS,
            "annotations": {api.ISC_NAME_KEY: isc_name, api.INFERENCE_PORT_KEY: str(port)},
            "status": status,
            "instance_id": iid,
        }
    )


def serving_another() -> dict[str, Any]:
    """A launcher bound to another requester, its instance on our GPU."""
    other = launcher(name="launcher-b", uid="uid-l2")
    other["metadata"]["annotations"].update(
        {
            api.REQUESTER_ANNOTATION: "uid-z req-z",
            api.INSTANCE_ID_ANNOTATION: "Ixi",
            api.SERVER_PORT_ANNOTATION: "8009",
            api.VLLM_CONFIG_ANNOTATION: json.dumps({"options": "x", "gpu_uuids": GPUS}),
            api.ISC_ROUTING_METADATA_ANNOTATION: "{}",
        }
    )
    return other


def make(world: World) -> tuple[Reconciler, Recorder]:
    rec = Recorder(world, gpus={REQ_IP: GPUS}, apply=True)
    return Reconciler(world, rec.ports, Settings()), rec


IID = instance_id(server_of(isc()), GPUS)


def world(*pods: dict[str, Any], iscs: list[dict[str, Any]] | None = None, **lc_kw: Any) -> World:
    return World([isc_requester(), *pods], [node()], iscs=iscs or [isc()], lcs=[lc(**lc_kw)])


def patched(rec: Recorder, name: str) -> list[Any]:
    return [a[2] for a in rec.actions if a[0] == "patch" and a[1] == name]


def status_errors(w: World) -> list[str]:
    raw = w.pods["req-a"]["metadata"]["annotations"].get(api.HEAD.status)
    return list(json.loads(raw)["Errors"] or []) if raw else []


# ---------------------------------------------------------------- choosing a launcher (R11–R14)


async def test_warm_binds_an_idle_launcher_then_creates_wakes_routes_and_relays() -> None:
    w = world(launcher())
    r, rec = make(w)
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    bound = w.pods["launcher-a"]["metadata"]
    assert bound["annotations"][api.REQUESTER_ANNOTATION] == "uid-a req-a"
    assert bound["annotations"][api.INSTANCE_ID_ANNOTATION] == IID
    assert json.loads(bound["annotations"][api.VLLM_CONFIG_ANNOTATION]) == launch_body(
        ISC, server_of(isc()), GPUS
    )
    assert api.HEAD.runner_finalizer in bound["finalizers"]
    assert bound["labels"][api.DUAL_LABEL] == "req-a" and bound["labels"][api.SLEEPING_LABEL] == "false"
    assert rec.launcher_actions == [("list", L_IP), ("list", L_IP), ("create", L_IP, IID)]
    req = w.pods["req-a"]["metadata"]
    assert req["labels"][api.INSTANCE_LABEL] == IID and req["labels"][api.DUAL_LABEL] == "launcher-a"
    assert req["annotations"][api.HEAD.status] == '{"Errors":null}'
    assert ("relay", REQ_IP, True) in rec.actions and rec.actuations == ["warm"]


async def test_isc_labels_go_on_only_with_the_awake_label_after_the_bind() -> None:
    w = world(launcher(), iscs=[isc(labels={"model": "granite"})])
    r, rec = make(w)
    await r.reconcile(ServerKey("uid-a"))
    bind, *_, awake = patched(rec, "launcher-a")
    assert not any("model" in path for path in json_patch_edits(bind))  # I3
    assert json_patch_edits(awake) == {
        "/metadata/labels/model": "granite",
        "/metadata/labels/dual-pods.llm-d.ai~1sleeping": "false",
    }


async def test_hot_binds_the_launcher_holding_the_sleeping_instance_and_wakes_it() -> None:
    w = world(launcher())
    r, rec = make(w)
    rec.instances_of(L_IP)[IID] = state(IID)
    rec.asleep[f"{L_IP}:{PORT}"] = True
    await r.reconcile(ServerKey("uid-a"))
    assert ("create", L_IP, IID) not in rec.launcher_actions
    assert ("wake", L_IP) in rec.actions and rec.actuations == ["hot"]


async def test_reclaim_deletes_the_one_sleeper_in_the_way_before_binding() -> None:
    w = world(launcher(max_instances=1), max_instances=1)
    r, rec = make(w)
    rec.instances_of(L_IP)["Iotheri"] = state("Iotheri", port=8006, isc_name="isc-b")
    await r.reconcile(ServerKey("uid-a"))
    assert rec.launcher_actions[:3] == [("list", L_IP), ("delete", L_IP, "Iotheri"), ("list", L_IP)]
    assert list(rec.instances_of(L_IP)) == [IID]


async def test_stopped_instances_of_a_candidate_are_cleared_first() -> None:
    w = world(launcher())
    r, rec = make(w)
    rec.instances_of(L_IP)["Ideadi"] = state("Ideadi", port=8007, status="stopped")
    await r.reconcile(ServerKey("uid-a"))
    assert ("delete", L_IP, "Ideadi") in rec.launcher_actions


async def test_a_launcher_still_starting_is_waited_for_not_duplicated() -> None:
    w = world(launcher(ready=False))
    r, rec = make(w)
    outcome = await r.reconcile(ServerKey("uid-a"))
    assert not isinstance(outcome, Done) and "still starting" in str(outcome)
    assert not [a for a in rec.actions if a[0] == "create"]


async def test_cold_creates_a_launcher_bound_from_its_first_version() -> None:
    w = world()
    r, rec = make(w)
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    (created,) = [a[2] for a in rec.actions if a[0] == "create"]
    meta = created["metadata"]
    assert meta["generateName"] == f"launcher-{LC}-"
    assert meta["annotations"][api.REQUESTER_ANNOTATION] == "uid-a req-a"
    assert meta["annotations"][api.INSTANCE_ID_ANNOTATION] == IID
    assert meta["finalizers"] == [api.HEAD.runner_finalizer]
    assert created["spec"]["nodeSelector"][api.HOSTNAME_LABEL] == "node-1"
    assert [(lc_, ok) for lc_, _, ok in rec.durations] == [(LC, True)]


async def test_gpus_an_other_bound_launcher_serves_are_waited_for() -> None:
    other = serving_another()
    w = world(other)
    r, rec = make(w)
    outcome = await r.reconcile(ServerKey("uid-a"))
    assert "still held" in str(outcome)
    assert not [a for a in rec.actions if a[0] == "create"]


# ---------------------------------------------------------------- user mistakes (§9)


async def test_each_bad_input_is_a_status_error_and_touches_no_launcher() -> None:
    cases = [
        (
            world(launcher(), iscs=[isc(name="other")]),
            'failed to get InferenceServerConfig "isc-a": not found',
        ),
        (world(launcher(), iscs=[isc(options="--model m --port 9")]), "options must not contain --port"),
        (
            world(launcher(), iscs=[isc(labels={"dual-pods.llm-d.ai/x": "y"})]),
            'ISC label key "dual-pods.llm-d.ai/x" uses a reserved prefix',
        ),
        (
            world(launcher(), iscs=[isc(labels={"team": "b"})]),
            'ISC label key "team" collides with existing pod label',
        ),
    ]
    for w, message in cases:
        r, rec = make(w)
        assert await r.reconcile(ServerKey("uid-a")) == Done()
        assert message in status_errors(w), status_errors(w)
        assert patched(rec, "launcher-a") == [] and rec.launcher_actions == []


async def test_missing_launcher_config_and_launcher_path_off_are_status_errors() -> None:
    w = World([isc_requester(), launcher()], [node()], iscs=[isc()], lcs=[])
    r, _ = make(w)
    await r.reconcile(ServerKey("uid-a"))
    assert status_errors(w) == ['failed to get LauncherConfig "lc-a": not found']
    w = World([isc_requester()], [node()], launcher_path=False)
    r, _ = make(w)
    await r.reconcile(ServerKey("uid-a"))
    assert "the launcher path is off" in status_errors(w)[0]


async def test_server_patch_and_isc_together_are_refused() -> None:
    pod = isc_requester()
    pod["metadata"]["annotations"][api.HEAD.server_patch] = "spec: {}"
    w = World([pod, launcher()], [node()], iscs=[isc()], lcs=[lc()])
    r, rec = make(w)
    await r.reconcile(ServerKey("uid-a"))
    assert status_errors(w) == ["annotations server-patch and inference-server-config are mutually exclusive"]
    assert rec.launcher_actions == []


# ---------------------------------------------------------------- bound (R15–R19) and unbound (R20)


async def bound_world(**kw: Any) -> tuple[World, Reconciler, Recorder]:
    w = world(launcher(), **kw)
    r, rec = make(w)
    await r.reconcile(ServerKey("uid-a"))
    return w, r, rec


async def test_a_bound_instance_that_stopped_deletes_its_requester_with_preconditions() -> None:
    w, r, rec = await bound_world()
    rec.instances_of(L_IP)[IID] = state(IID, status="stopped")
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    deletes = [a for a in rec.actions if a[0] == "delete"]
    assert deletes == [("delete", "req-a", "uid-a", w.pods["req-a"]["metadata"]["resourceVersion"])]
    assert ("Warning", "InstanceStopped") in [(t, reason) for t, reason, _ in rec.events]


async def test_bookkeeping_removed_from_a_bound_launcher_is_a_status_error_only() -> None:
    w, r, rec = await bound_world()
    del w.pods["launcher-a"]["metadata"]["annotations"][api.SERVER_PORT_ANNOTATION]
    before = len(patched(rec, "launcher-a"))
    await r.reconcile(ServerKey("uid-a"))
    assert status_errors(w) == [
        f'bound launcher Pod "launcher-a" is missing annotation "{api.SERVER_PORT_ANNOTATION}"'
    ]
    assert len(patched(rec, "launcher-a")) == before


async def test_unbind_removes_routing_then_sleeps_then_lets_the_launcher_go() -> None:
    w, r, rec = await bound_world(iscs=[isc(labels={"model": "granite"})])
    w.pods["req-a"]["metadata"]["deletionTimestamp"] = "2026-01-01T02:00:00Z"
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    meta = w.pods["launcher-a"]["metadata"]
    assert "model" not in meta["labels"] and meta["labels"][api.SLEEPING_LABEL] == "true"
    assert not set(meta["annotations"]) & {api.REQUESTER_ANNOTATION, *api.BOOKKEEPING_ANNOTATIONS}
    assert api.DUAL_LABEL not in meta["labels"] and not meta.get("finalizers")
    assert meta["labels"]["team"] == "a"  # the template's own labels stay
    assert ("sleep", L_IP) in rec.actions and len(rec.instances_of(L_IP)) == 1  # asleep, kept
    assert [bound for _, bound in rec.dualities][-1] is False


async def test_unbind_deletes_an_instance_its_isc_has_made_obsolete() -> None:
    w, r, rec = await bound_world()
    w.iscs[ISC] = isc(options="--model other")
    w.pods["req-a"]["metadata"]["deletionTimestamp"] = "2026-01-01T02:00:00Z"
    await r.reconcile(ServerKey("uid-a"))
    assert ("sleep", L_IP) not in rec.actions and IID not in rec.instances_of(L_IP)


async def test_an_isc_change_deletes_its_obsolete_sleepers_but_not_others() -> None:
    w = world(launcher(), iscs=[isc(options="--model new")])
    r, rec = make(w)
    rec.instances_of(L_IP).update({IID: state(IID), "Ibi": state("Ibi", isc_name="isc-b")})
    rec.asleep[f"{L_IP}:{PORT}"] = True
    assert await r.reconcile(IscKey(ISC)) == Done()
    assert list(rec.instances_of(L_IP)) == ["Ibi"]


async def test_an_instance_that_keeps_dying_is_not_created_again_and_the_requester_stays() -> None:
    w, r, rec = await bound_world()
    for death in range(3):
        rec.instances_of(L_IP)[IID] = state(IID, status="stopped")
        await r.reconcile(ServerKey("uid-a"))
        if death < 2:  # the ReplicaSet's replacement: a fresh server state, the same instance id
            r.memory.servers.clear()
    deletes = [a for a in rec.actions if a[0] == "delete"]
    assert len(deletes) == 2
    (error,) = status_errors(w)
    assert "stopped 3 times within 10 minutes" in error and "unrecognized arguments" in error
    await r.reconcile(ServerKey("uid-a"))
    assert len([a for a in rec.actions if a[0] == "delete"]) == 2 and status_errors(w) == [error]


async def test_an_instance_that_never_answers_is_deleted_after_the_start_timeout() -> None:
    from dpctl.clients.http import HttpCallError

    w = world(launcher())
    rec = Recorder(w, gpus={REQ_IP: GPUS}, apply=True)
    r = Reconciler(w, rec.ports, Settings(instance_start_timeout_s=0.0))
    rec.fail["is_sleeping"] = HttpCallError("query_sleeping", "http://x", None, "connection refused")
    await r.reconcile(ServerKey("uid-a"))  # bound, created, not answering past the deadline
    assert rec.instances_of(L_IP) == {}
    assert "did not answer /is_sleeping within 0 s of its start" in status_errors(w)[0]
    await r.reconcile(ServerKey("uid-a"))  # its death: the requester is replaced
    assert [a[1] for a in rec.actions if a[0] == "delete"] == ["req-a"]


async def test_a_direct_runner_serving_another_requester_on_the_gpu_is_waited_for() -> None:
    w = World(
        [isc_requester(), launcher(), runner(name="req-z-server", bound_to=("uid-z", "req-z"))],
        [node()],
        gpu_map_cm({"node-1": 2}),
        iscs=[isc()],
        lcs=[lc()],
    )
    r, rec = make(w)
    assert "still held" in str(await r.reconcile(ServerKey("uid-a")))
    assert patched(rec, "launcher-a") == []


async def test_a_direct_requester_waits_for_a_launcher_serving_another_on_its_gpu() -> None:
    other = serving_another()
    w = World([requester(), other], [node()], gpu_map_cm({"node-1": 2}))
    r, rec = make(w)
    assert "still held" in str(await r.reconcile(ServerKey("uid-a")))
    assert not [a for a in rec.actions if a[0] == "create"]


async def test_a_candidate_is_listed_again_only_when_its_signature_or_our_own_change_says_so() -> None:
    idle = launcher()
    idle["metadata"]["annotations"][api.INSTANCE_SIGNATURE_ANNOTATION] = "sig-1"
    w = World([isc_requester(), idle], [node()], iscs=[isc()], lcs=[lc()])
    r, rec = make(w)
    rec.instances_of(L_IP)["Ioldi"] = state("Ioldi", port=8006, isc_name="isc-b")
    r.memory.listed("uid-l1", "sig-1", list(rec.instances_of(L_IP).values()))
    await r.reconcile(ServerKey("uid-a"))
    lists = [a for a in rec.launcher_actions if a[0] == "list"]
    assert len(lists) == 1  # the bound branch's own fresh listing; the choice used the cached one
    assert r.memory.listing("uid-l1", "sig-1") is None  # our create made it stale
    r.memory.listed("uid-l1", "sig-1", [])
    assert r.memory.listing("uid-l1", "sig-2") is None  # the notifier published a change


async def test_a_refused_instance_is_one_status_error_until_a_create_succeeds() -> None:
    from dpctl.clients.http import HttpCallError

    w = world(launcher())
    r, rec = make(w)
    rec.fail["create_instance"] = HttpCallError(
        "create_instance", "http://x", 400, "GPU UUID 'GPU-dead' not found"
    )
    for _ in range(3):
        assert "cannot create vLLM instance" in str(await r.reconcile(ServerKey("uid-a")))
    errors_written = [p for p in patched(rec, "req-a") if "cannot create" in json.dumps(p)]
    cleared = [p for p in patched(rec, "req-a")[1:] if '{\\"Errors\\":null}' in json.dumps(p)]
    assert len(errors_written) == 1 and cleared == []  # no flip between the error and none
    del rec.fail["create_instance"]
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert status_errors(w) == []


async def test_an_empty_gpu_list_is_a_status_error_that_waits_for_a_change() -> None:
    w = world(launcher())
    r, rec = make(w)
    rec.gpus[REQ_IP] = []
    assert await r.reconcile(ServerKey("uid-a")) == Done()
    assert status_errors(w)[0].startswith("the assigned set of GPUs is empty")
    assert rec.launcher_actions == []
