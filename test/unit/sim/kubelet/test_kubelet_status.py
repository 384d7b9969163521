"""Container lifecycles and the Pod status built from them: transitions, phases, conditions, patches."""

from __future__ import annotations

import pytest

from dpsim.kubelet.containers import (
    CRASH_LOOP_BACK_OFF,
    ContainerRecord,
    CrashBackoff,
    Termination,
    recover,
    termination_for_exit,
    will_restart,
)
from dpsim.kubelet.status import (
    ConditionClock,
    PodStatusInput,
    owned_conditions,
    pod_phase,
    status_body,
    status_patch,
    status_up_to_date,
)

T0, T1, T2 = "2026-01-01T00:00:00Z", "2026-01-01T00:00:05Z", "2026-01-01T00:00:09Z"


def rec(name: str = "c", init: bool = False) -> ContainerRecord:
    return ContainerRecord(name, "img", CrashBackoff(1.0, 8.0), init=init)


def running(name: str = "c") -> ContainerRecord:
    r = rec(name)
    r.on_started("id-1", T0, 0.0, "img@sha256:x")
    return r


def exited(code: int, final: bool, name: str = "c", init: bool = False) -> ContainerRecord:
    r = rec(name, init)
    r.on_started("id-1", T0, 0.0, "img@sha256:x")
    r.on_exited(termination_for_exit(code, T0, T1, "id-1"), 5.0)
    r.final = final
    return r


def test_backoff_first_restart_at_once_then_doubling_to_the_cap_and_reset_after_a_long_run() -> None:
    b = CrashBackoff(1.0, 8.0)
    assert [b.delay_after_exit(0.1) for _ in range(6)] == [0.0, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert b.delay_after_exit(17.0) == 0.0


@pytest.mark.parametrize(
    ("policy", "code", "restart"),
    [
        ("Always", 0, True),
        ("Always", 1, True),
        ("OnFailure", 0, False),
        ("OnFailure", 2, True),
        ("Never", 1, False),
    ],
)
def test_restart_policy(policy: str, code: int, restart: bool) -> None:
    assert will_restart(policy, code) is restart


def test_container_status_through_a_crash_loop() -> None:
    r = rec()
    assert r.to_api()["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert r.to_api()["lastState"] == {}
    r.on_started("id-1", T0, 0.0, "img@x")
    s = r.to_api()
    assert s["state"] == {"running": {"startedAt": T0}}
    assert (s["restartCount"], s["containerID"], s["imageID"]) == (0, "id-1", "img@x")
    ran = r.on_exited(termination_for_exit(3, T0, T1, "id-1"), 5.0)
    assert ran == 5.0
    assert r.schedule_restart(5.0, ran) == 0.0
    r.on_started("id-2", T1, 5.5, "img@x")
    r.on_exited(termination_for_exit(3, T1, T2, "id-2"), 6.0)
    assert r.schedule_restart(6.0, 0.5) == 1.0
    s = r.to_api("p_ns(uid)")
    assert s["restartCount"] == 1
    assert s["state"]["waiting"]["reason"] == CRASH_LOOP_BACK_OFF
    assert s["state"]["waiting"]["message"] == "back-off 1s restarting failed container=c pod=p_ns(uid)"
    assert s["lastState"]["terminated"]["exitCode"] == 3
    assert s["lastState"]["terminated"]["reason"] == "Error"
    assert s["containerID"] == "id-2"


def test_final_state_shows_the_last_termination_and_the_one_before() -> None:
    r = exited(1, final=False)
    r.on_started("id-2", T1, 6.0, "img@x")
    r.on_exited(termination_for_exit(0, T1, T2, "id-2"), 7.0)
    r.final = True
    s = r.to_api()
    assert s["state"]["terminated"]["reason"] == "Completed"
    assert s["lastState"]["terminated"]["exitCode"] == 1
    assert (s["ready"], s["started"], s["restartCount"]) == (False, False, 1)


def test_start_failure_counts_as_an_instance() -> None:
    r = rec()
    r.on_start_failed(Termination(128, "StartError", T0, T0, "exec: nope", None))
    r.on_start_failed(Termination(128, "StartError", T1, T1, "exec: nope", None))
    assert r.restart_count == 1
    r.final = True
    assert r.to_api()["state"]["terminated"]["message"] == "exec: nope"


@pytest.mark.parametrize(
    ("policy", "app", "init", "terminating", "phase"),
    [
        ("Always", [rec()], [], False, "Pending"),
        ("Always", [running(), rec("d")], [], False, "Pending"),
        ("Always", [running()], [], False, "Running"),
        ("Always", [exited(1, final=False)], [], False, "Running"),
        ("Never", [exited(0, final=True)], [], False, "Succeeded"),
        ("Never", [exited(2, final=True)], [], False, "Failed"),
        ("Never", [exited(0, final=True), running("d")], [], False, "Running"),
        ("OnFailure", [exited(0, final=True)], [], False, "Succeeded"),
        ("OnFailure", [exited(1, final=False)], [], False, "Running"),
        ("Always", [rec()], [running("i")], False, "Pending"),
        ("Always", [rec()], [exited(1, final=False, name="i", init=True)], False, "Pending"),
        ("Never", [rec()], [exited(1, final=True, name="i", init=True)], False, "Failed"),
        ("Always", [exited(143, final=True)], [], True, "Failed"),
        ("Always", [exited(0, final=True)], [], True, "Succeeded"),
    ],
)
def test_phase_rules(
    policy: str, app: list[ContainerRecord], init: list[ContainerRecord], terminating: bool, phase: str
) -> None:
    assert pod_phase(policy, init, app, terminating) == phase


def test_conditions_name_the_unready_containers_and_honour_readiness_gates() -> None:
    a, b = running("a"), running("b")
    a.ready = True
    conds = {c.type: c for c in owned_conditions("Running", [], [a, b], True, [], {})}
    assert conds["Ready"].status == "False"
    assert conds["Ready"].message == "containers with unready status: [b]"
    assert conds["ContainersReady"].reason == "ContainersNotReady"
    assert conds["Initialized"].status == "True"
    assert conds["PodReadyToStartContainers"].status == "True"
    b.ready = True
    conds = {c.type: c for c in owned_conditions("Running", [], [a, b], True, ["g"], {})}
    assert (conds["ContainersReady"].status, conds["Ready"].status) == ("True", "False")
    assert conds["Ready"].reason == "ReadinessGatesNotReady"
    conds = {c.type: c for c in owned_conditions("Running", [], [a, b], True, ["g"], {"g": "True"})}
    assert conds["Ready"].status == "True"


def test_init_pending_and_completed_pods() -> None:
    i = running("i")
    conds = {c.type: c for c in owned_conditions("Pending", [i], [rec()], True, [], {})}
    assert conds["Initialized"].message == "containers with incomplete status: [i]"
    done = {c.type: c for c in owned_conditions("Succeeded", [], [exited(0, True)], False, [], {})}
    assert (done["Ready"].reason, done["ContainersReady"].reason) == ("PodCompleted", "PodCompleted")
    assert done["PodReadyToStartContainers"].status == "False"


def test_transition_times_move_only_on_a_change_of_status() -> None:
    clock = ConditionClock.from_api([{"type": "Ready", "status": "False", "lastTransitionTime": T0}])
    r = running()
    first = clock.stamp(owned_conditions("Running", [], [r], True, [], {}), T1, 1)
    times = {c["type"]: c["lastTransitionTime"] for c in first}
    assert times["Ready"] == T0
    assert times["Initialized"] == T1
    r.ready = True
    second = {c["type"]: c for c in clock.stamp(owned_conditions("Running", [], [r], True, [], {}), T2, 1)}
    assert second["Ready"]["lastTransitionTime"] == T2
    assert second["Initialized"]["lastTransitionTime"] == T1
    # A True condition clears the reason and message a merge patch would otherwise keep.
    assert second["Ready"]["reason"] is None
    assert second["Ready"]["message"] is None


def test_status_body_and_patch_keep_the_api_rules() -> None:
    a, b = running("a"), rec("b")
    clock = ConditionClock()
    body = status_body(
        PodStatusInput(
            phase="Pending",
            conditions=clock.stamp(owned_conditions("Pending", [], [a, b], True, [], {}), T0, 2),
            init=[],
            app=[a, b],
            pod_ip="127.64.0.2",
            host_ip="127.64.0.1",
            start_time=T0,
            pod_ref="p",
            generation=2,
        )
    )
    assert body["podIPs"][0]["ip"] == body["podIP"]
    assert body["hostIPs"][0]["ip"] == body["hostIP"]
    assert [s["name"] for s in body["containerStatuses"]] == ["a", "b"]
    assert "qosClass" not in body
    assert "initContainerStatuses" not in body
    assert status_patch("uid-1", body)["metadata"] == {"uid": "uid-1"}


def test_up_to_date_ignores_fields_the_server_adds_and_conditions_of_others() -> None:
    wanted = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True", "reason": None}],
        "containerStatuses": [{"name": "c", "ready": True}],
    }
    current = {
        "phase": "Running",
        "qosClass": "BestEffort",
        "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
        "containerStatuses": [{"name": "c", "ready": True, "volumeMounts": []}],
    }
    assert status_up_to_date(wanted, current)
    assert not status_up_to_date({**wanted, "phase": "Failed"}, current)
    stale = {**current, "conditions": [{"type": "Ready", "status": "True", "reason": "Old"}]}
    assert not status_up_to_date(wanted, stale)
    assert not status_up_to_date(wanted, {**current, "containerStatuses": []})


def test_recover_rebuilds_history_and_says_when_the_process_was_lost() -> None:
    r = rec()
    api = {
        "name": "c",
        "restartCount": 2,
        "imageID": "img@x",
        "state": {"running": {"startedAt": T1}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": T0, "finishedAt": T1}},
    }
    assert recover(r, api)
    assert r.restart_count == 2
    assert r.last is not None and r.last.exit_code == 1
    done = rec()
    assert not recover(done, {"name": "c", "state": {"terminated": {"exitCode": 0, "finishedAt": T2}}})
    assert done.final and done.succeeded
