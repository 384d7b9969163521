"""The fleet report of `dpctl status`, from hand-built Pods, Nodes and gpu-map, no I/O.

``sample_report()`` is the fleet the output-format tests of test_statuscmd.py print too: a bound
pair with two sleepers of different ages on its GPU, a lone sleeper, a requester with a status
error, a free GPU, a cordoned Node, a NotReady Node with a bad gpu-map entry, and a requester the
scheduler has not placed.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from dpctl import api
from dpctl.status import fleet

from ..dualpods.fakes import gpu_map_cm, gpu_uuid, node, requester, runner

NOW = dt.datetime(2026, 1, 2, 12, 0, tzinfo=dt.UTC)
SERVER_PATCH_ERROR = "the server-patch is not valid YAML: mapping values are not allowed here (line 3)"
DUPLICATE_INDEX_ERROR = (
    "the gpu-map entry for node 'node-3' gives index 0 to both 'GPU-node-3-0' and 'GPU-node-3-1'"
)


def ready_node(name: str, gpus: int = 4, ready: bool = True, unschedulable: bool = False) -> dict[str, Any]:
    n = node(name, unschedulable=unschedulable)
    n["status"] = {
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        "allocatable": {api.GPU_RESOURCE: str(gpus), "cpu": "16"},
    }
    return n


def with_gpus(pod: dict[str, Any], *uuids: str) -> dict[str, Any]:
    pod["metadata"]["annotations"][api.ACCELERATORS_ANNOTATION] = ",".join(uuids)
    return pod


def with_status(pod: dict[str, Any], *errors: str) -> dict[str, Any]:
    pod["metadata"]["annotations"][api.ORIGINAL.status] = json.dumps({"Errors": list(errors)})
    return pod


def unscheduled(name: str, uid: str, message: str) -> dict[str, Any]:
    pod = requester(name, uid, node=None)
    pod["status"] = {
        "phase": "Pending",
        "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
        ],
    }
    return pod


def sample_pods() -> list[dict[str, Any]]:
    return [
        # node-1 GPU 0: a bound pair, and two sleepers used 5 minutes and 2 hours ago.
        with_gpus(requester("req-a", "uid-a", ready=True), gpu_uuid("node-1", 0)),
        runner("req-a-server", "uid-ra", gpus=(0,), sleeping_label="false", used_at="2026-01-02T11:58:00Z"),
        runner(
            "old-b-server",
            "uid-sb",
            gpus=(0,),
            bound_to=None,
            nominal="hash-b",
            sleeping_label="true",
            used_at="2026-01-02T11:55:00Z",
        ),
        runner(
            "old-c-server",
            "uid-sc",
            gpus=(0,),
            bound_to=None,
            nominal="hash-c",
            sleeping_label="true",
            used_at="2026-01-02T10:00:00Z",
        ),
        # node-1 GPU 1: a lone sleeper, unused for a day and a half. GPU 3: nothing.
        runner(
            "old-d-server",
            "uid-sd",
            gpus=(1,),
            bound_to=None,
            nominal="hash-d",
            sleeping_label="true",
            used_at="2026-01-01T00:00:00Z",
        ),
        # node-1 GPU 2: a requester whose server-patch is broken.
        with_status(with_gpus(requester("req-e", "uid-e"), gpu_uuid("node-1", 2)), SERVER_PATCH_ERROR),
        # node-2 (cordoned) GPU 1: a pair whose runner is still starting.
        with_gpus(requester("req-f", "uid-f", node="node-2"), gpu_uuid("node-2", 1)),
        runner(
            "req-f-server",
            "uid-rf",
            node="node-2",
            gpus=(1,),
            bound_to=("uid-f", "req-f"),
            ready=False,
            used_at="2026-01-02T11:59:30Z",
        ),
        # node-3 (NotReady, bad gpu-map entry): a requester the controller cannot map.
        with_status(
            with_gpus(requester("req-g", "uid-g", node="node-3"), "GPU-node-3-0"), DUPLICATE_INDEX_ERROR
        ),
        unscheduled("req-h", "uid-h", "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."),
    ]


def sample_gpu_map() -> dict[str, Any]:
    cm = gpu_map_cm({"node-1": 4, "node-2": 2})
    cm["data"]["node-3"] = json.dumps({"GPU-node-3-0": 0, "GPU-node-3-1": 0})
    return cm


def sample_nodes() -> list[dict[str, Any]]:
    return [
        ready_node("node-1"),
        ready_node("node-2", gpus=2, unschedulable=True),
        ready_node("node-3", gpus=2, ready=False),
        ready_node("cpu-node", gpus=0),
    ]


def sample_report() -> fleet.FleetReport:
    return fleet.build("team-a", sample_pods(), sample_nodes(), sample_gpu_map(), NOW)


def gpu(report: fleet.FleetReport, node_name: str, index: int | None, uuid: str = "") -> fleet.Gpu:
    (n,) = [n for n in report.nodes if n.name == node_name]
    (g,) = [g for g in n.gpus if g.index == index and (index is not None or g.uuid == uuid)]
    return g


def names(refs: tuple[fleet.RunnerRef, ...]) -> list[str]:
    return [r.name for r in refs]


def test_the_sample_fleet_per_node_and_gpu() -> None:
    report = sample_report()
    assert report.namespace == "team-a" and report.generated_at == NOW
    assert report.nodes_readable and report.gpu_map_found
    # Nodes without GPUs (cpu-node) are left out; every GPU of the map is listed, used or not.
    assert [(n.name, n.ready, n.cordoned, n.gpu_map_entry) for n in report.nodes] == [
        ("node-1", True, False, "ok"),
        ("node-2", True, True, "ok"),
        ("node-3", False, False, "invalid"),
    ]
    assert [(g.index, g.uuid) for g in report.nodes[0].gpus] == [(i, gpu_uuid("node-1", i)) for i in range(4)]

    pair = gpu(report, "node-1", 0)
    assert pair.requester == fleet.PodRef(name="req-a", ready=True)
    assert pair.runner is not None
    assert (pair.runner.name, pair.runner.ready, pair.runner.sleeping) == ("req-a-server", True, False)
    # Least recently used first: the sleeper the next creation on this GPU would evict leads.
    assert names(pair.sleepers) == ["old-c-server", "old-b-server"]
    assert [s.last_used for s in pair.sleepers] == [
        dt.datetime(2026, 1, 2, 10, 0, tzinfo=dt.UTC),
        dt.datetime(2026, 1, 2, 11, 55, tzinfo=dt.UTC),
    ]
    assert all(s.sleeping and not s.terminating for s in pair.sleepers)

    lone = gpu(report, "node-1", 1)
    assert lone.requester is None and lone.runner is None and names(lone.sleepers) == ["old-d-server"]
    broken = gpu(report, "node-1", 2)
    assert broken.requester == fleet.PodRef(name="req-e", ready=False) and broken.runner is None
    free = gpu(report, "node-1", 3)
    assert free.requester is None and free.runner is None and free.sleepers == ()

    starting = gpu(report, "node-2", 1)
    assert starting.runner is not None
    # Bound without the FYI label yet: bound means awake.
    assert (starting.runner.name, starting.runner.ready, starting.runner.sleeping) == (
        "req-f-server",
        False,
        False,
    )
    # The bad entry maps nothing, so the requester's GPU shows by UUID alone.
    assert report.nodes[2].gpus == (
        fleet.Gpu(
            index=None,
            uuid="GPU-node-3-0",
            requester=fleet.PodRef(name="req-g", ready=False),
            runner=None,
            sleepers=(),
        ),
    )


def test_the_sample_fleet_errors() -> None:
    assert [(p.object, p.message) for p in sample_report().errors] == [
        ("configmap/gpu-map", DUPLICATE_INDEX_ERROR),
        ("pod/req-e", SERVER_PATCH_ERROR),
        ("pod/req-g", DUPLICATE_INDEX_ERROR),
        ("pod/req-h", "not scheduled yet: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."),
    ]


def test_a_bound_runner_names_the_gpu_and_requester_before_the_accelerators_annotation() -> None:
    pods = [requester("req-a", "uid-a", ready=True), runner("req-a-server", "uid-r", gpus=(2, 3))]
    report = fleet.build("ns", pods, [ready_node("node-1")], gpu_map_cm({"node-1": 4}), NOW)
    for index in (2, 3):
        g = gpu(report, "node-1", index)
        assert g.requester == fleet.PodRef(name="req-a", ready=True)
        assert g.runner is not None and g.runner.name == "req-a-server"
    assert report.errors == ()


def test_a_runner_bound_to_a_gone_requester_still_names_it() -> None:
    pods = [runner("req-a-server", "uid-r", gpus=(0,), bound_to=("uid-gone", "req-gone"))]
    report = fleet.build("ns", pods, [ready_node("node-1")], gpu_map_cm({"node-1": 1}), NOW)
    assert gpu(report, "node-1", 0).requester == fleet.PodRef(name="req-gone", ready=False)
    assert [(p.object, p.message) for p in report.errors] == [
        ("pod/req-a-server", "bound to requester req-gone (UID uid-gone), which is gone")
    ]


def test_an_index_missing_from_the_map_still_gets_a_row() -> None:
    pods = [runner("s-server", "uid-s", gpus=(7,), bound_to=None)]
    report = fleet.build("ns", pods, [ready_node("node-1")], gpu_map_cm({"node-1": 1}), NOW)
    lost = gpu(report, "node-1", 7)
    assert lost.uuid == "" and names(lost.sleepers) == ["s-server"]


def test_two_bound_runners_on_one_gpu_is_an_error_and_terminating_ones_yield() -> None:
    pods = [
        with_gpus(requester("req-a", "uid-a"), gpu_uuid("node-1", 0)),
        runner("a-server", "uid-ra", gpus=(0,), bound_to=("uid-a", "req-a")),
        with_gpus(requester("req-b", "uid-b"), gpu_uuid("node-1", 0)),
        runner("b-server", "uid-rb", gpus=(0,), bound_to=("uid-b", "req-b")),
    ]
    report = fleet.build("ns", pods, [ready_node("node-1")], gpu_map_cm({"node-1": 1}), NOW)
    assert [(p.object, p.message) for p in report.errors] == [
        ("node/node-1", "GPU 0 has 2 bound runners (a-server, b-server); at most one may be awake")
    ]

    pods[1] = runner("a-server", "uid-ra", gpus=(0,), bound_to=("uid-a", "req-a"), deleting=True)
    report = fleet.build("ns", pods, [ready_node("node-1")], gpu_map_cm({"node-1": 1}), NOW)
    assert report.errors == ()
    shown = gpu(report, "node-1", 0).runner
    assert shown is not None and (shown.name, shown.terminating) == ("b-server", False)


def test_the_sleeping_label_wins_over_binding() -> None:
    waking = runner("w-server", "uid-w", gpus=(0,), sleeping_label="true")
    unlabelled_sleeper = runner("s-server", "uid-s", gpus=(1,), bound_to=None)
    report = fleet.build(
        "ns",
        [requester("req-a", "uid-a"), waking, unlabelled_sleeper],
        [ready_node("node-1")],
        gpu_map_cm({"node-1": 2}),
        NOW,
    )
    woken = gpu(report, "node-1", 0).runner
    assert woken is not None and woken.sleeping
    assert gpu(report, "node-1", 1).sleepers[0].sleeping


def test_a_terminating_sleeper_is_shown_as_such() -> None:
    going = runner("s-server", "uid-s", gpus=(0,), bound_to=None, deleting=True)
    report = fleet.build("ns", [going], [ready_node("node-1")], gpu_map_cm({"node-1": 1}), NOW)
    assert gpu(report, "node-1", 0).sleepers[0].terminating


def test_requester_problems() -> None:
    bad_status = requester("req-a", "uid-a")
    bad_status["metadata"]["annotations"][api.ORIGINAL.status] = "not json"
    report = fleet.build(
        "ns",
        [
            with_gpus(bad_status, gpu_uuid("node-1", 0)),
            requester("req-b", "uid-b"),  # scheduled, GPUs not read yet
            requester("req-c", "uid-c", node="node-9"),
            requester("req-d", "uid-d", node=None),
        ],
        [ready_node("node-1")],
        gpu_map_cm({"node-1": 1}),
        NOW,
    )
    assert [(p.object, p.message) for p in report.errors] == [
        ("pod/req-a", "annotation dual-pod.llm-d.ai/status is not the controller's JSON: 'not json'"),
        ("pod/req-b", "no GPUs known yet: the controller has not read them from its stub"),
        ("pod/req-c", "no GPUs known yet: the controller has not read them from its stub"),
        ("pod/req-c", "scheduled to node 'node-9', which does not exist"),
        ("pod/req-d", "not scheduled yet"),
    ]


def test_runner_in_trouble_is_an_error() -> None:
    pods = [
        with_gpus(requester("req-a", "uid-a"), gpu_uuid("node-1", 0)),
        runner("req-a-server", "uid-r", gpus=(0,), ready=False, restarts=3),
    ]
    report = fleet.build("ns", pods, [ready_node("node-1")], gpu_map_cm({"node-1": 1}), NOW)
    assert [(p.object, p.message) for p in report.errors] == [
        ("pod/req-a-server", "inference server restarted 3 times and is not ready")
    ]


def test_gpu_map_problems() -> None:
    cm = gpu_map_cm({"node-1": 1})
    cm["data"]["node-2"] = json.dumps({gpu_uuid("node-1", 0): 0})
    nodes = [ready_node("node-1", gpus=1), ready_node("node-2", gpus=1), ready_node("node-4", gpus=8)]
    report = fleet.build("ns", [], nodes, cm, NOW)
    assert [(p.object, p.message) for p in report.errors] == [
        ("configmap/gpu-map", "GPU GPU-node-1-0 is listed for nodes node-1, node-2"),
        ("configmap/gpu-map", "node 'node-4' has 8 allocatable nvidia.com/gpu but no entry in gpu-map"),
    ]
    assert [(n.name, n.allocatable_gpus, n.gpu_map_entry, n.gpus) for n in report.nodes][2] == (
        "node-4",
        8,
        "absent",
        (),
    )


def test_without_a_gpu_map_the_pods_still_show() -> None:
    pods = [with_gpus(requester("req-a", "uid-a"), "GPU-x"), runner("req-a-server", "uid-r", gpus=(0,))]
    report = fleet.build("ns", pods, [ready_node("node-1")], None, NOW)
    assert not report.gpu_map_found
    assert [(p.object, p.message) for p in report.errors] == [
        ("configmap/gpu-map", "ConfigMap gpu-map not found in the namespace")
    ]
    assert [
        (g.index, g.uuid, g.requester is not None, g.runner is not None) for g in report.nodes[0].gpus
    ] == [
        (0, "", True, True),
        (None, "GPU-x", True, False),
    ]


def test_unreadable_nodes_leave_their_state_unknown() -> None:
    report = fleet.build("ns", [], None, gpu_map_cm({"node-1": 1}), NOW)
    assert not report.nodes_readable
    assert [(n.name, n.found, n.ready, n.cordoned, n.allocatable_gpus) for n in report.nodes] == [
        ("node-1", None, None, None, None)
    ]
    assert [(p.object, p.message) for p in report.errors] == [
        ("nodes", "cannot list Nodes: readiness and cordons not shown")
    ]


def test_a_map_entry_for_a_node_that_does_not_exist() -> None:
    report = fleet.build("ns", [], [], gpu_map_cm({"node-1": 1}), NOW)
    assert [(n.name, n.found, n.ready) for n in report.nodes] == [("node-1", False, None)]
