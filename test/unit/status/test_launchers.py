"""`dpctl status` on the launcher path: launcher Pods with their LauncherConfig, Node, bound
requester and instances (from hand-built answers, no I/O), their tables, and the questions the
command asks a launcher and its instances (against fakes on loopback, unreachable ones too).
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from dpctl import api
from dpctl.launcher.api import INSTANCES_PATH, InstanceState
from dpctl.status import cmd as statuscmd
from dpctl.status import fleet

from ..dualpods.fakes import NS, gpu_map_cm, gpu_uuid
from .test_fleet import NOW, ready_node

BOUND_ID = "Iabc123i"
SLEEPER_ID = "Idef456i"


def isc_requester(
    name: str, uid: str, isc: str = "granite-2b", ready: bool = True, *uuids: str
) -> dict[str, Any]:
    ann = {api.INFERENCE_SERVER_CONFIG_ANNOTATION: isc, api.HEAD.admin_port: "8081"}
    if uuids:
        ann[api.ACCELERATORS_ANNOTATION] = ",".join(uuids)
    return {
        "metadata": {"name": name, "namespace": NS, "uid": uid, "annotations": ann, "labels": {}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "inference-server"}]},
        "status": {
            "phase": "Running",
            "podIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def launcher_pod(
    name: str,
    node: str = "node-1",
    bound_to: tuple[str, str] | None = None,
    instance_id: str = BOUND_ID,
    gpus: tuple[str, ...] = (),
    sleeping: str = "true",
    ready: bool = True,
    ip: str = "127.0.0.1",
    used_at: str = "2026-01-02T11:50:00Z",
    deleting: bool = False,
) -> dict[str, Any]:
    labels = {
        api.COMPONENT_LABEL: api.LAUNCHER_COMPONENT,
        api.LAUNCHER_CONFIG_NAME_LABEL: "vllm-launcher",
        api.NODE_NAME_LABEL: node,
        api.SLEEPING_LABEL: sleeping,
    }
    ann: dict[str, str] = {}
    if bound_to is not None:
        labels[api.DUAL_LABEL] = bound_to[1]
        ann.update(
            {
                api.REQUESTER_ANNOTATION: f"{bound_to[0]} {bound_to[1]}",
                api.INSTANCE_ID_ANNOTATION: instance_id,
                api.SERVER_PORT_ANNOTATION: "8005",
                api.VLLM_CONFIG_ANNOTATION: json.dumps({"options": "--port 8005", "gpu_uuids": list(gpus)}),
                api.ISC_ROUTING_METADATA_ANNOTATION: "{}",
            }
        )
    pod: dict[str, Any] = {
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "labels": labels,
            "annotations": ann,
            "creationTimestamp": "2026-01-02T11:00:00Z",
            "managedFields": [{"manager": api.FIELD_MANAGER, "operation": "Update", "time": used_at}],
        },
        "spec": {"nodeSelector": {api.HOSTNAME_LABEL: node}, "nodeName": node},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }
    if deleting:
        pod["metadata"]["deletionTimestamp"] = "2026-01-02T11:59:00Z"
    return pod


def state(
    instance_id: str, port: int, *uuids: str, status: str = "running", isc: str = "granite-2b"
) -> InstanceState:
    return InstanceState.model_validate(
        {
            "status": status,
            "instance_id": instance_id,
            "revision": 1,
            "options": f"--model m --port {port}",
            "gpu_uuids": list(uuids),
            "annotations": {api.ISC_NAME_KEY: isc, api.INFERENCE_PORT_KEY: str(port)},
            **({"exit_code": 1} if status == "stopped" else {}),
        }
    )


def sample() -> fleet.FleetReport:
    """node-1: launcher-a bound to req-a (GPU 0, awake) with a sleeper on GPU 1; launcher-b
    unbound with one asleep and one stopped instance; launcher-c unreachable; launcher-d starting."""
    g0, g1, g2 = (gpu_uuid("node-1", i) for i in range(3))
    pods = [
        isc_requester("req-a", "uid-a", "granite-2b", True, g0),
        launcher_pod("launcher-a", bound_to=("uid-a", "req-a"), gpus=(g0,), sleeping="false"),
        launcher_pod("launcher-b", used_at="2026-01-02T10:00:00Z"),
        launcher_pod("launcher-c", ip="127.0.0.9"),
        launcher_pod("launcher-d", ready=False),
    ]
    seen = {
        "launcher-a": fleet.LauncherSeen(
            instances=(
                fleet.InstanceSeen(state(BOUND_ID, 8005, g0), sleeping=False),
                fleet.InstanceSeen(state(SLEEPER_ID, 8006, g1, isc="opt-125m"), sleeping=True),
            )
        ),
        "launcher-b": fleet.LauncherSeen(
            instances=(
                fleet.InstanceSeen(state("Iaaai", 8005, g2), sleeping=True),
                fleet.InstanceSeen(state("Ibbbi", 8007, g2, status="stopped")),
                fleet.InstanceSeen(state("Iccci", 8008, g2), error="connection refused"),
            )
        ),
        "launcher-c": fleet.LauncherSeen(error="could not connect within 5 s (is the Pod reachable?)"),
    }
    return fleet.build(NS, pods, [ready_node("node-1")], gpu_map_cm({"node-1": 4}), NOW, seen)


def by_name(report: fleet.FleetReport, name: str) -> fleet.Launcher:
    (launcher,) = [la for la in report.launchers if la.name == name]
    return launcher


def test_a_bound_launcher_names_its_config_node_requester_and_instances() -> None:
    report = sample()
    a = by_name(report, "launcher-a")
    assert (a.launcher_config, a.node, a.ready, a.terminating, a.api) == (
        "vllm-launcher",
        "node-1",
        True,
        False,
        "ok",
    )
    assert a.requester == fleet.PodRef(name="req-a", ready=True)
    assert (a.instance_id, a.sleeping, a.last_used) == (BOUND_ID, False, NOW.replace(minute=50, hour=11))
    assert [(i.id, i.isc, i.port, i.gpu_indices, i.state, i.bound) for i in a.instances] == [
        (BOUND_ID, "granite-2b", 8005, (0,), "awake", True),
        (SLEEPER_ID, "opt-125m", 8006, (1,), "asleep", False),
    ]
    # In the GPU table the bound launcher is the requester's runner, awake by its label.
    gpu0 = report.nodes[0].gpus[0]
    assert gpu0.requester == fleet.PodRef(name="req-a", ready=True)
    assert gpu0.runner is not None and (gpu0.runner.name, gpu0.runner.sleeping) == ("launcher-a", False)


def test_errors_null_is_no_error() -> None:
    req = isc_requester("req-a", "uid-a")
    req["metadata"]["annotations"][api.HEAD.status] = '{"Errors":null}'
    report = fleet.build(NS, [req], [ready_node("node-1")], gpu_map_cm({"node-1": 1}), NOW)
    assert [p.object for p in report.errors] == ["pod/req-a"]  # only: no GPUs known yet
    req["metadata"]["annotations"][api.HEAD.status] = '{"Errors":["ISC missing"]}'
    report = fleet.build(NS, [req], [ready_node("node-1")], gpu_map_cm({"node-1": 1}), NOW)
    assert ("pod/req-a", "ISC missing") in [(p.object, p.message) for p in report.errors]


def test_unbound_unreachable_and_starting_launchers() -> None:
    report = sample()
    b = by_name(report, "launcher-b")
    assert b.requester is None and b.instance_id == "" and b.sleeping
    assert [(i.id, i.state, i.exit_code, i.error) for i in b.instances] == [
        ("Iaaai", "asleep", None, ""),
        ("Ibbbi", "stopped", 1, ""),
        ("Iccci", "unknown", None, "connection refused"),
    ]
    c = by_name(report, "launcher-c")
    assert (c.api, c.instances) == ("unreachable", ())
    d = by_name(report, "launcher-d")
    assert (d.api, d.ready, d.instances) == ("not-asked", False, ())
    assert [(p.object, p.message) for p in report.errors] == [
        (
            "pod/launcher-c",
            "cannot list the launcher's instances: could not connect within 5 s (is the Pod reachable?)",
        )
    ]


def test_the_launcher_tables() -> None:
    out = statuscmd.render_table(sample())
    tables = out.split("\n\n")
    launchers = [line.split() for line in tables[2].splitlines()]
    assert launchers[0] == [
        "LAUNCHER",
        "CONFIG",
        "NODE",
        "READY",
        "REQUESTER",
        "READY",
        "SLEEPING",
        "LAST-USED",
        "API",
    ]
    assert launchers[1:] == [
        ["launcher-a", "vllm-launcher", "node-1", "true", "req-a", "true", "false", "10m", "ok"],
        ["launcher-b", "vllm-launcher", "node-1", "true", "-", "-", "true", "120m", "ok"],
        ["launcher-c", "vllm-launcher", "node-1", "true", "-", "-", "true", "10m", "unreachable"],
        ["launcher-d", "vllm-launcher", "node-1", "false", "-", "-", "true", "10m", "not-asked"],
    ]
    instances = [line.split() for line in tables[3].splitlines()]
    assert instances == [
        ["LAUNCHER", "INSTANCE", "ISC", "PORT", "GPUS", "STATE", "REQUESTER"],
        ["launcher-a", BOUND_ID, "granite-2b", "8005", "0", "awake", "req-a"],
        ["launcher-a", SLEEPER_ID, "opt-125m", "8006", "1", "asleep", "-"],
        ["launcher-b", "Iaaai", "granite-2b", "8005", "2", "asleep", "-"],
        ["launcher-b", "Ibbbi", "granite-2b", "8007", "2", "stopped(exit", "1)", "-"],
        ["launcher-b", "Iccci", "granite-2b", "8008", "2", "unknown", "-"],
    ]
    assert tables[4].startswith("OBJECT")
    # JSON round-trips, launchers included.
    assert fleet.FleetReport.model_validate_json(statuscmd.render(sample(), "json")) == sample()


def test_launcher_problems() -> None:
    g0 = gpu_uuid("node-1", 0)
    garbled = launcher_pod("launcher-g", bound_to=("uid-a", "req-a"), gpus=(g0,))
    del garbled["metadata"]["annotations"][api.SERVER_PORT_ANNOTATION]
    pods = [
        isc_requester("req-a", "uid-a", "granite-2b", True, g0),
        garbled,
        launcher_pod("launcher-h", bound_to=("uid-gone", "req-gone"), instance_id="Igonei"),
        launcher_pod("launcher-s", bound_to=("uid-a", "req-a"), instance_id="Istoppedi", gpus=(g0,)),
        launcher_pod("launcher-t", bound_to=("uid-gone", "req-gone"), deleting=True),
    ]
    seen = {
        "launcher-h": fleet.LauncherSeen(),
        "launcher-s": fleet.LauncherSeen(
            instances=(fleet.InstanceSeen(state("Istoppedi", 8005, g0, status="stopped")),)
        ),
        "launcher-x": fleet.LauncherSeen(
            instances=(
                fleet.InstanceSeen(state("I1i", 8005, g0), sleeping=False),
                fleet.InstanceSeen(state("I2i", 8006, g0), sleeping=False),
            )
        ),
    }
    pods.append(launcher_pod("launcher-x"))
    report = fleet.build(NS, pods, [ready_node("node-1")], gpu_map_cm({"node-1": 1}), NOW, seen)
    errors = [(p.object, p.message) for p in report.errors]
    assert (
        "pod/launcher-g",
        'bound launcher Pod "launcher-g" is missing annotation "dual-pods.llm-d.ai/server-port"',
    ) in errors
    assert ("pod/launcher-h", "bound to requester req-gone (UID uid-gone), which is gone") in errors
    assert ("pod/launcher-h", "bound instance Igonei is not in the launcher's instance list") in errors
    assert ("pod/launcher-s", "bound instance Istoppedi has stopped") in errors
    assert (
        "node/node-1",
        f"GPU {g0} has 2 awake instances (launcher-x/I1i, launcher-x/I2i); at most one may be",
    ) in errors
    assert ("pod/launcher-x", "instance I1i is awake but the launcher is not bound") in errors
    # A terminating launcher's binding is on its way out: no complaint about it.
    assert not [e for e in errors if e[0] == "pod/launcher-t"]


# ---------------------------------------------------------------- asking the launchers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeLauncher:
    """A launcher API and its instances' /is_sleeping, each instance on its own loopback port."""

    def __init__(self) -> None:
        self.listing: Any = {"revision": 0, "total_instances": 0, "running_instances": 0, "instances": []}
        self.sleeping: dict[int, Any] = {}  # port -> answer (a bool, or an HTTP status to fail with)

    def launcher_app(self) -> web.Application:
        app = web.Application()

        async def listing(_: web.Request) -> web.Response:
            return web.json_response(self.listing)

        app.router.add_get(INSTANCES_PATH, listing)
        return app

    def instance_app(self, port: int) -> web.Application:
        app = web.Application()

        async def is_sleeping(_: web.Request) -> web.Response:
            answer = self.sleeping[port]
            if isinstance(answer, bool):
                return web.json_response({"is_sleeping": answer})
            return web.Response(status=int(answer), text="loading")

        app.router.add_get(api.IS_SLEEPING_PATH, is_sleeping)
        return app


@pytest.fixture
async def fake_launcher() -> AsyncIterator[tuple[FakeLauncher, int, list[int]]]:
    fake = FakeLauncher()
    runners = []
    ports = [free_port(), free_port(), free_port()]
    for app, port in [(fake.launcher_app(), ports[0]), *((fake.instance_app(p), p) for p in ports[1:])]:
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
    yield fake, ports[0], ports[1:]
    for runner in runners:
        await runner.cleanup()


async def test_ask_launchers_reads_instances_and_their_sleep_state(
    fake_launcher: tuple[FakeLauncher, int, list[int]],
) -> None:
    fake, launcher_port, (p1, p2) = fake_launcher
    closed = free_port()
    fake.listing["instances"] = [
        state("Iawakei", p1, "GPU-0").model_dump(exclude_none=True),
        state("Iloadingi", p2, "GPU-1").model_dump(exclude_none=True),
        state("Igonei", closed, "GPU-2", status="stopped").model_dump(exclude_none=True),
    ]
    fake.sleeping = {p1: False, p2: 503}
    pods = [
        launcher_pod("launcher-a"),
        launcher_pod("launcher-starting", ready=False),  # not asked
        isc_requester("req-a", "uid-a"),
    ]
    seen = await statuscmd.ask_launchers(pods, launcher_port)
    assert list(seen) == ["launcher-a"]
    got = {i.state.instance_id: (i.sleeping, i.error) for i in seen["launcher-a"].instances}
    assert got["Iawakei"] == (False, "")
    assert got["Igonei"] == (None, "")  # stopped: not asked
    sleeping, error = got["Iloadingi"]
    assert sleeping is None and error.startswith("HTTP 503")


async def test_ask_launchers_reports_unreachable_and_garbled_launchers(
    fake_launcher: tuple[FakeLauncher, int, list[int]],
) -> None:
    fake, launcher_port, _ = fake_launcher
    closed = free_port()
    (unreachable,) = (await statuscmd.ask_launchers([launcher_pod("launcher-c")], closed)).values()
    assert unreachable.instances == () and unreachable.error.startswith("connection refused")
    fake.listing = {"not": "a listing"}
    (garbled,) = (await statuscmd.ask_launchers([launcher_pod("launcher-g")], launcher_port)).values()
    assert garbled.error.startswith("expected a JSON object with instances")
    assert await statuscmd.ask_launchers([], launcher_port) == {}
