"""Restart recovery as a table: what a new kubelet makes of a pod a previous one admitted, from
the Pod's API status, the recorded allocation and what the allocators answered."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from dpctl.log import get as get_logger
from dpsim.kubelet.allocations import PodAllocation
from dpsim.kubelet.containers import CrashBackoff
from dpsim.kubelet.recovery import (
    RESTARTED_MESSAGE,
    Claim,
    Recovered,
    Retaken,
    needs_recovery,
    recover,
    startup_claims,
)
from dpsim.kubelet.resources import PodResources

NOW = 100.0
STAMP = "2026-12-07T15:00:00Z"
SHORTFALL = (
    "Allocate failed due to requested number of devices unavailable for nvidia.com/gpu."
    " Requested: 1, Available: 0, which is unexpected"
)
RUNNING = {"running": {"startedAt": "2026-12-07T14:00:00Z"}}
DONE = {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": "2026-12-07T14:01:00Z"}}


def status(name: str, state: dict[str, Any], restarts: int = 0) -> dict[str, Any]:
    return {"name": name, "state": state, "restartCount": restarts, "containerID": f"dpctl-sim://{name}"}


def pod(
    *,
    ip: str | None = "127.64.0.5",
    gpus: int = 1,
    app: dict[str, Any] | None = None,
    init: dict[str, Any] | None = None,
    policy: str = "Always",
    deleting: bool = False,
    phase: str = "Running",
    node: str = "node-1",
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "c", "image": "quay.io/x/requester:1"}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    spec: dict[str, Any] = {"nodeName": node, "containers": [container], "restartPolicy": policy}
    st: dict[str, Any] = {"phase": phase, "containerStatuses": [app] if app else []}
    if init is not None:
        spec["initContainers"] = [{"name": "i", "image": "busybox", "command": ["true"]}]
        st["initContainerStatuses"] = [init]
    if ip:
        st["podIP"] = ip
    meta: dict[str, Any] = {"name": "a", "namespace": "ns", "uid": "uid-a"}
    if deleting:
        meta["deletionTimestamp"] = STAMP
    return {"metadata": meta, "spec": spec, "status": st}


def alloc(ip: str | None = "127.64.0.5", gpus: tuple[str, ...] = ("GPU-1",)) -> PodAllocation:
    return PodAllocation("ns/a", "node-1", ip, gpus)


@dataclass(frozen=True)
class Row:
    pod: dict[str, Any]
    alloc: PodAllocation | None
    retaken: Retaken = field(default_factory=Retaken)
    pod_ip: str | None = "127.64.0.5"
    gpus: tuple[str, ...] = ("GPU-1",)
    terminal: tuple[str, str, str] | None = None  # phase, reason, message
    errors: tuple[str, ...] = ()
    # The app container: (restartCount, final, last termination's reason and exit code or None)
    app: tuple[int, bool, tuple[str, int] | None] = (0, False, None)
    init_done: bool | None = None


ROWS = [
    pytest.param(
        Row(pod(app=status("c", RUNNING)), alloc(), app=(0, False, ("ContainerStatusUnknown", 137))),
        id="recorded-gpus",
    ),
    pytest.param(
        Row(
            pod(app=status("c", RUNNING)),
            None,
            Retaken(fresh_gpus=("GPU-0",)),
            gpus=("GPU-0",),
            app=(0, False, ("ContainerStatusUnknown", 137)),
        ),
        id="lost-allocations-file",
    ),
    pytest.param(Row(pod(ip=None), alloc(ip="127.64.0.9"), pod_ip="127.64.0.9"), id="ip-from-the-record"),
    pytest.param(
        Row(pod(), alloc(), Retaken(ip_conflict=True), errors=("Pod IP is taken by another pod",)),
        id="ip-conflict",
    ),
    pytest.param(
        Row(pod(), alloc(), Retaken(gpu_conflict=True), errors=("Recorded GPUs are held by another pod",)),
        id="gpu-conflict-keeps-the-record",
    ),
    pytest.param(
        Row(
            pod(app=status("c", RUNNING)),
            None,
            Retaken(shortfall=SHORTFALL),
            gpus=(),
            terminal=("Failed", "UnexpectedAdmissionError", f"Pod was rejected: {SHORTFALL}"),
            app=(0, True, ("ContainerStatusUnknown", 137)),
        ),
        id="gpu-shortfall",
    ),
    pytest.param(
        Row(
            pod(gpus=0, app=status("c", RUNNING, restarts=3)),
            None,
            gpus=(),
            app=(3, False, ("ContainerStatusUnknown", 137)),
        ),
        id="running-container-reported-unknown-137",
    ),
    pytest.param(
        Row(
            pod(app=status("c", RUNNING), policy="Never"),
            alloc(),
            app=(0, True, ("ContainerStatusUnknown", 137)),
        ),
        id="never-policy-does-not-restart",
    ),
    pytest.param(
        Row(
            pod(app=status("c", RUNNING), deleting=True),
            alloc(),
            app=(0, True, ("ContainerStatusUnknown", 137)),
        ),
        id="deleting-does-not-restart",
    ),
    pytest.param(
        Row(pod(app=status("c", DONE)), alloc(), app=(0, True, ("Completed", 0))), id="terminated-container"
    ),
    pytest.param(Row(pod(init=status("i", DONE)), alloc(), init_done=True), id="init-container-done"),
    pytest.param(
        Row(pod(init=status("i", RUNNING)), alloc(), init_done=False),
        id="init-container-interrupted-runs-again",
    ),
]


def _recover(row: Row) -> Recovered:
    return recover(row.pod, row.alloc, row.retaken, partial(CrashBackoff, 1.0, 8.0), NOW, STAMP)


@pytest.mark.parametrize("row", ROWS)
def test_recover(row: Row) -> None:
    got = _recover(row)
    assert (got.pod_ip, got.gpus) == (row.pod_ip, row.gpus)
    terminal = (got.terminal, *got.terminal_reason) if got.terminal and got.terminal_reason else None
    assert terminal == row.terminal
    assert [r.message for r in got.reports if r.level == logging.ERROR] == list(row.errors)
    assert got.reports[-1].message == "Recovered pod from a previous kubelet"
    [app] = got.app
    last = (app.last.reason, app.last.exit_code) if app.last else None
    assert (app.restart_count, app.final, last) == row.app
    assert app.running is None  # nothing survived the previous kubelet
    if row.init_done is not None:
        [init] = got.init
        assert (init.final, init.ready) == (row.init_done, row.init_done)


def test_a_lost_container_keeps_its_id_and_is_due_for_restart_at_once() -> None:
    got = _recover(Row(pod(app=status("c", RUNNING)), alloc()))
    [app] = got.app
    assert app.last is not None
    assert (app.last.container_id, app.last.message, app.last.started_at) == (
        "dpctl-sim://c",
        RESTARTED_MESSAGE,
        "2026-12-07T14:00:00Z",
    )
    assert (app.not_before, app.waiting) == (NOW, None)  # no back-off, no CrashLoopBackOff


@pytest.mark.parametrize(
    ("status_ip", "recorded", "expected"),
    [(None, None, False), ("127.64.0.5", None, True), (None, alloc(), True)],
    ids=["never-admitted", "has-an-ip", "has-a-record"],
)
def test_needs_recovery(status_ip: str | None, recorded: PodAllocation | None, expected: bool) -> None:
    assert needs_recovery(pod(ip=status_ip), recorded) is expected


NODE_IPS = {"node-1": "127.64.0.1"}


@pytest.mark.parametrize(
    ("the_pod", "recorded", "expected"),
    [
        (pod(), {"uid-a": alloc()}, [Claim("uid-a", "node-1", "ns/a", "127.64.0.5", alloc())]),
        (
            pod(ip=None),
            {"uid-a": alloc(ip="127.64.0.9")},
            [Claim("uid-a", "node-1", "ns/a", "127.64.0.9", alloc(ip="127.64.0.9"))],
        ),
        (pod(), {}, [Claim("uid-a", "node-1", "ns/a", "127.64.0.5", None)]),
        (pod(ip="127.64.0.1"), {}, [Claim("uid-a", "node-1", "ns/a", None, None)]),
        (pod(phase="Succeeded"), {"uid-a": alloc()}, []),
        (pod(node="node-9"), {"uid-a": alloc()}, []),
    ],
    ids=["api-ip-and-record", "ip-from-the-record", "lost-record", "host-network", "ended", "not-our-node"],
)
def test_startup_claims(
    the_pod: dict[str, Any], recorded: dict[str, PodAllocation], expected: list[Claim]
) -> None:
    assert startup_claims([the_pod], recorded, NODE_IPS) == expected


def _resources(tmp_path: Path) -> PodResources:
    res = PodResources(tmp_path / "allocations.json", get_logger("test"))
    res.add_node("node-1", ["GPU-0", "GPU-1"], 0)
    return res


def test_retake_says_what_another_pod_holds(tmp_path: Path) -> None:
    res = _resources(tmp_path)
    res.ips.restore("uid-b", "node-1", "127.64.0.5")
    res.gpus.restore("uid-b", "node-1", ["GPU-1"])
    got = res.retake("uid-a", "node-1", "127.64.0.1", "127.64.0.5", ("GPU-1",), 1)
    assert got == Retaken(ip_conflict=True, gpu_conflict=True)


def test_retake_allocates_anew_when_no_gpus_were_recorded_or_says_why_not(tmp_path: Path) -> None:
    res = _resources(tmp_path)
    assert res.retake("uid-a", "node-1", "127.64.0.1", "127.64.0.1", (), 1) == Retaken(fresh_gpus=("GPU-0",))
    got = res.retake("uid-c", "node-1", "127.64.0.1", None, (), 2)
    assert got.shortfall is not None and "Requested: 2, Available: 1" in got.shortfall
