"""The pod sync loop against a fake API and a fake runtime: admission, starts, restarts, back-off,
image errors, status writes, graceful deletion, a vanished pod, and recovery after a restart."""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest

from dpctl.kube import ApiError, Resource
from dpctl.log import get as get_logger
from dpctl.workqueue.outcome import Done, RequeueAfter
from dpsim.kubelet.containers import rfc3339
from dpsim.kubelet.nodes import NodeAgent
from dpsim.kubelet.podman import PodmanError, Pulled, create_argv
from dpsim.kubelet.podrecord import SyncSettings
from dpsim.kubelet.podsync import PodSyncer
from dpsim.kubelet.runtime import ContainerSpec, Exit, Launch, Mount
from dpsim.kubelet.tokens import ClusterAccess, TokenManager, service_account_dir
from helpers import async_wait_for

UUIDS = ("GPU-0", "GPU-1", "GPU-2", "GPU-3")


class FakeKube:
    """Records writes; applies status patches to the pods the test holds, as the API server would."""

    def __init__(self, pods: dict[str, dict[str, Any]]) -> None:
        self.pods = pods
        self.patches: list[dict[str, Any]] = []
        self.deletes: list[tuple[str, str | None, int | None]] = []

    async def patch(
        self, res: Resource, name: str, body: Any, namespace: str | None = None, **kw: Any
    ) -> Any:
        assert kw.get("subresource") == "status"
        pod = next(p for p in self.pods.values() if p["metadata"]["name"] == name)
        if body["metadata"]["uid"] != pod["metadata"]["uid"]:
            raise ApiError(409, "Conflict", "uid precondition")
        self.patches.append(copy.deepcopy(body["status"]))
        pod["status"] = copy.deepcopy(body["status"])
        return pod

    async def delete(self, res: Resource, name: str, namespace: str | None = None, **kw: Any) -> Any:
        self.deletes.append((name, kw.get("uid"), kw.get("grace_period_seconds")))
        return {}

    async def get(self, res: Resource, name: str, namespace: str | None = None, **kw: Any) -> Any:
        raise ApiError(404, "NotFound", f"{res.plural} {name} not found")

    async def create(self, res: Resource, body: Any, namespace: str | None = None, **kw: Any) -> Any:
        return {"status": {"token": "tok"}}


@dataclass
class FakeHandle:
    launch: Launch
    on_exit: Callable[[Exit], None]
    exit: Exit | None = None
    stops: list[float] = field(default_factory=list)

    @property
    def container_id(self) -> str:
        return self.launch.container_id

    def status(self) -> Exit | None:
        return self.exit

    def finish(self, code: int) -> None:
        if self.exit is None:
            self.exit = Exit(code, dt.datetime.now(dt.UTC))
            self.on_exit(self.exit)

    async def stop(self, grace: float) -> Exit:
        self.stops.append(grace)
        self.finish(143)
        assert self.exit is not None
        return self.exit

    def kill(self) -> None:
        self.finish(137)

    async def exec_sync(self, argv: list[str], timeout: float) -> int:
        return 0


class FakeRuntime:
    def __init__(self) -> None:
        self.handles: list[FakeHandle] = []

    async def start(self, launch: Launch, on_exit: Callable[[Exit], None]) -> FakeHandle:
        self.handles.append(FakeHandle(launch, on_exit))
        return self.handles[-1]

    async def shutdown(self, grace: float) -> None:
        pass


@dataclass
class FakeNode:
    name: str = "node-1"
    ip: str = "127.64.0.1"
    runs_pods: bool = True
    labels: dict[str, str] = field(default_factory=lambda: {"kubernetes.io/hostname": "node-1", "zone": "a"})

    @property
    def table(self) -> Any:
        return type("T", (), {"uuids": UUIDS})()


def make_pod(name: str, image: str = "quay.io/x/requester:1", gpus: int = 1, **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "c", "image": image}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "generation": 1},
        "spec": {
            "nodeName": "node-1",
            "containers": [container],
            "automountServiceAccountToken": False,
            **spec,
        },
        "status": {"phase": "Pending"},
    }


@dataclass
class World:
    syncer: PodSyncer
    kube: FakeKube
    runtime: FakeRuntime
    pods: dict[str, dict[str, Any]]
    enqueued: list[str]
    state: Path
    events: list[tuple[str, str, str]]

    def add(self, pod: dict[str, Any]) -> str:
        uid = str(pod["metadata"]["uid"])
        self.pods[uid] = pod
        return uid

    def status(self, uid: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.pods[uid]["status"])

    def container(self, uid: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.status(uid)["containerStatuses"][0])


@pytest.fixture
async def world(tmp_path: Path) -> World:
    pods: dict[str, dict[str, Any]] = {}
    return _world(tmp_path, pods)


def _world(
    tmp_path: Path, pods: dict[str, dict[str, Any]], podman: Any = None, pull_error_shown: float = 0.0
) -> World:
    kube = FakeKube(pods)
    runtime = FakeRuntime()
    enqueued: list[str] = []
    events: list[tuple[str, str, str]] = []
    settings = SyncSettings(
        state_dir=tmp_path,
        python="/py",
        shim_dir=tmp_path / "bin",
        backoff_base=1.0,
        backoff_cap=8.0,
        max_grace=30.0,
        base_env={"PATH": "/usr/bin"},
        node_allocatable={"cpu": "32"},
        pull_error_shown=pull_error_shown,
        api_server="https://127.0.0.1:6443",
    )
    node = cast(NodeAgent, FakeNode())
    tokens = TokenManager(cast(Any, kube), ClusterAccess("https://127.0.0.1:1", None))
    syncer = PodSyncer(
        cast(Any, kube),
        settings,
        runtime,
        pods.get,
        {"node-1": node},
        tokens,
        cast(aiohttp.ClientSession, None),
        enqueued.append,
        Recorder(events),
        get_logger("test"),
        podman,
    )
    syncer.add_node(node, 0)
    return World(syncer, kube, runtime, pods, enqueued, tmp_path, events)


@dataclass
class Recorder:
    events: list[tuple[str, str, str]]

    def emit(self, pod: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


async def test_admits_starts_and_reports_running(world: World) -> None:
    uid = world.add(make_pod("a", env=None))
    assert await world.syncer.sync(uid) == Done()
    [handle] = world.runtime.handles
    env = handle.launch.env
    assert handle.launch.argv == ("/py", "-m", "dpctl", "requester")
    assert env["NVIDIA_VISIBLE_DEVICES"] == "GPU-0"
    assert env["DPCTL_LISTEN_HOST"] == "127.64.0.2"
    assert env["DPCTL_SIM_POD"] == "ns/a"
    assert env["PATH"].startswith(str(world.state / "bin") + ":")
    status = world.status(uid)
    assert (status["phase"], status["podIP"], status["hostIP"]) == ("Running", "127.64.0.2", "127.64.0.1")
    assert world.container(uid)["state"]["running"]
    assert [r for _, r, _ in world.events] == ["Pulled", "Created", "Started"]
    assert json.loads((world.state / "allocations.json").read_text())["pods"][uid]["gpus"] == ["GPU-0"]
    patches = len(world.kube.patches)
    assert await world.syncer.sync(uid) == Done()
    assert len(world.kube.patches) == patches  # nothing changed, nothing written


async def test_a_container_started_while_its_node_is_removed_is_killed(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Soak finding: a start in flight when the node was removed left its process running for
    ever (it held its GPU awake in the ledger): kill_node had collected the handles before the
    start returned, then dropped the record that the new handle went into."""
    uid = world.add(make_pod("a"))
    start = world.runtime.start

    async def start_then_remove(launch: Launch, on_exit: Callable[[Exit], None]) -> FakeHandle:
        handle = await start(launch, on_exit)
        await world.syncer.kill_node("node-1")  # the admin API's remove, while the start is in flight
        return handle

    monkeypatch.setattr(world.runtime, "start", start_then_remove)
    await world.syncer.sync(uid)
    [handle] = world.runtime.handles
    assert handle.exit is not None and handle.exit.exit_code == 137
    assert uid not in world.syncer.records


async def test_crash_restarts_at_once_then_backs_off(world: World) -> None:
    uid = world.add(make_pod("a"))
    await world.syncer.sync(uid)
    world.runtime.handles[0].finish(1)
    assert world.enqueued == [uid]
    assert await world.syncer.sync(uid) == Done()
    assert len(world.runtime.handles) == 2
    assert world.container(uid)["restartCount"] == 1
    assert world.container(uid)["lastState"]["terminated"]["exitCode"] == 1
    world.runtime.handles[1].finish(1)
    outcome = await world.syncer.sync(uid)
    assert isinstance(outcome, RequeueAfter)
    assert 0.5 < outcome.seconds <= 1.0
    assert world.container(uid)["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert world.status(uid)["phase"] == "Running"
    assert world.syncer.gpus.held_by(uid) == ("GPU-0",)  # a restarting pod keeps its GPU


async def test_never_policy_ends_the_pod_and_frees_its_gpu(world: World) -> None:
    uid = world.add(make_pod("a", restartPolicy="Never"))
    await world.syncer.sync(uid)
    world.runtime.handles[0].finish(0)
    assert await world.syncer.sync(uid) == Done()
    assert world.status(uid)["phase"] == "Succeeded"
    assert world.container(uid)["state"]["terminated"]["reason"] == "Completed"
    assert world.syncer.gpus.free("node-1") == list(UUIDS)
    assert world.syncer.ips.in_use("node-1") == 0
    assert world.kube.deletes == []


async def test_a_failed_pull_shows_err_image_pull_until_the_error_resync_whatever_syncs_come(
    tmp_path: Path,
) -> None:
    world = _world(tmp_path, {}, pull_error_shown=600.0)
    uid = world.add(make_pod("a", image="quay.io/nobody/mystery:1"))
    await world.syncer.sync(uid)
    outcome = await world.syncer.sync(uid)  # as a watch event of the status write would cause
    assert world.container(uid)["state"]["waiting"]["reason"] == "ErrImagePull"
    assert isinstance(outcome, RequeueAfter) and outcome.seconds <= 1.0  # the pull's back-off first
    assert [r for _, r, _ in world.events] == ["Failed", "Failed"]


async def test_unknown_image_waits_in_image_pull_errors(world: World) -> None:
    uid = world.add(make_pod("a", image="quay.io/nobody/mystery:1"))
    outcome = await world.syncer.sync(uid)
    assert isinstance(outcome, RequeueAfter)
    waiting = world.container(uid)["state"]["waiting"]
    assert waiting["reason"] == "ErrImagePull"
    assert "mystery" in waiting["message"]
    await world.syncer.sync(uid)
    waiting = world.container(uid)["state"]["waiting"]
    assert waiting["reason"] == "ImagePullBackOff"
    assert "no program" in waiting["message"]
    assert world.status(uid)["phase"] == "Pending"
    assert world.runtime.handles == []
    reasons = [(t, r) for t, r, _ in world.events]
    assert reasons == [
        ("Warning", "Failed"),
        ("Warning", "Failed"),
        ("Normal", "BackOff"),
        ("Warning", "Failed"),
    ]
    assert "has no program for image" in world.events[0][2]


async def test_graceful_deletion_stops_reports_and_deletes(world: World) -> None:
    uid = world.add(make_pod("a", terminationGracePeriodSeconds=7))
    await world.syncer.sync(uid)
    world.pods[uid]["metadata"]["deletionTimestamp"] = rfc3339(dt.datetime.now(dt.UTC))
    world.pods[uid]["metadata"]["deletionGracePeriodSeconds"] = 7
    outcome = await world.syncer.sync(uid)  # the stop runs in a task
    assert isinstance(outcome, RequeueAfter)
    await async_wait_for(lambda: world.runtime.handles[0].stops, 5, "the stop")
    assert world.runtime.handles[0].stops == [7.0]
    assert await world.syncer.sync(uid) == Done()
    assert world.status(uid)["phase"] == "Failed"
    assert world.container(uid)["state"]["terminated"]["exitCode"] == 143
    assert world.kube.deletes == [("a", uid, 0)]
    assert world.syncer.gpus.free("node-1") == list(UUIDS)


async def test_a_pod_asking_for_more_gpus_than_are_free_is_rejected_as_a_kubelet_does(world: World) -> None:
    first = world.add(make_pod("a", gpus=3))
    second = world.add(make_pod("b", gpus=2))
    await world.syncer.sync(first)
    assert await world.syncer.sync(second) == Done()
    status = world.status(second)
    words = "Node didn't have enough resource: nvidia.com/gpu, requested: 2, used: 3, capacity: 4"
    assert (status["phase"], status["reason"]) == ("Failed", "OutOfnvidia.com/gpu")
    assert status["message"] == f"Pod was rejected: {words}"
    assert ("Warning", "OutOfnvidia.com/gpu", words) in world.events
    assert world.container(second)["state"]["terminated"]["reason"] == "ContainerStatusUnknown"
    assert len(world.runtime.handles) == 1  # only the first pod started
    assert world.syncer.gpus.free("node-1") == ["GPU-3"]


NOT_ON_THIS_NODE = [
    pytest.param({"nodeSelector": {"zone": "b"}}, id="node-selector"),
    pytest.param({"nodeSelector": {"kubernetes.io/hostname": "node-2"}}, id="hostname-selector"),
    pytest.param(
        {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}
                        ]
                    }
                }
            }
        },
        id="required-node-affinity",
    ),
]


@pytest.mark.parametrize("placement", NOT_ON_THIS_NODE)
async def test_a_pod_bound_to_a_node_its_placement_excludes_is_rejected_not_run(
    world: World, placement: dict[str, Any]
) -> None:
    uid = world.add(make_pod("a", **placement))
    assert await world.syncer.sync(uid) == Done()
    status = world.status(uid)
    words = "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"
    assert (status["phase"], status["reason"], status["message"]) == (
        "Failed",
        "NodeAffinity",
        f"Pod was rejected: {words}",
    )
    assert world.events == [("Warning", "NodeAffinity", words)]
    assert world.runtime.handles == []
    assert world.syncer.gpus.free("node-1") == list(UUIDS)


async def test_a_pod_whose_placement_matches_its_nodes_labels_runs(world: World) -> None:
    uid = world.add(make_pod("a", nodeSelector={"zone": "a", "kubernetes.io/hostname": "node-1"}))
    await world.syncer.sync(uid)
    assert world.status(uid)["phase"] == "Running"
    assert len(world.runtime.handles) == 1


async def test_a_vanished_pod_has_its_processes_stopped_and_files_removed(world: World) -> None:
    uid = world.add(make_pod("a"))
    await world.syncer.sync(uid)
    pod_dir = world.syncer.records[uid].dir
    assert pod_dir.is_dir()
    del world.pods[uid]
    assert isinstance(await world.syncer.sync(uid), RequeueAfter)
    await async_wait_for(world.runtime.handles[0].status, 5, "the stop")
    assert await world.syncer.sync(uid) == Done()
    assert not pod_dir.exists()
    assert uid not in world.syncer.records


async def test_a_restarted_kubelet_keeps_ip_and_gpus_and_restarts_lost_containers(world: World) -> None:
    uid = world.add(make_pod("a"))
    other = world.add(make_pod("b"))
    await world.syncer.sync(uid)
    await world.syncer.sync(other)
    before = world.container(uid)
    # A new kubelet process: the same API objects and state dir, nothing running.
    again = _world(world.state, world.pods)
    again.syncer.restore(list(world.pods.values()))
    await again.syncer.sync(other)
    await again.syncer.sync(uid)
    after = world.container(uid)
    assert after["restartCount"] == 1
    assert after["lastState"]["terminated"]["reason"] == "ContainerStatusUnknown"
    assert after["lastState"]["terminated"]["containerID"] == before["containerID"]
    assert world.status(uid)["podIP"] == "127.64.0.2"
    assert again.syncer.gpus.held_by(uid) == ("GPU-0",)
    assert again.syncer.gpus.held_by(other) == ("GPU-1",)
    assert again.runtime.handles[-1].launch.env["NVIDIA_VISIBLE_DEVICES"] == "GPU-0"


async def test_init_containers_run_in_order_before_the_app(world: World) -> None:
    pod = make_pod("a", gpus=0)
    pod["spec"]["initContainers"] = [
        {"name": "i1", "image": "busybox", "command": ["true"]},
        {"name": "i2", "image": "busybox", "command": ["echo", "$(X)"], "env": [{"name": "X", "value": "y"}]},
    ]
    uid = world.add(pod)
    await world.syncer.sync(uid)
    assert [h.launch.argv for h in world.runtime.handles] == [("true",)]
    assert world.container(uid)["state"]["waiting"]["reason"] == "PodInitializing"
    world.runtime.handles[0].finish(0)
    await world.syncer.sync(uid)
    assert world.runtime.handles[1].launch.argv == ("echo", "y")
    world.runtime.handles[1].finish(0)
    await world.syncer.sync(uid)
    assert world.runtime.handles[2].launch.argv[:4] == ("/py", "-m", "dpctl", "requester")
    status = world.status(uid)
    assert [s["state"]["terminated"]["reason"] for s in status["initContainerStatuses"]] == ["Completed"] * 2
    assert status["phase"] == "Running"


# -- images under --podman-images: real containers ------------------------------------------------

REGISTRY = "127.0.0.1:5000/fma"


@dataclass
class FakePodman(FakeRuntime):
    """The podman runtime's surface the launcher uses; ``missing`` images fail to pull."""

    missing: set[str] = field(default_factory=set)
    pulls: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def runs(self, image: str) -> bool:
        return image.startswith("127.0.0.1:")

    async def pull(self, image: str, policy: str) -> Pulled:
        self.pulls.append((image, policy))
        if image in self.missing:
            raise PodmanError(
                f"initializing source docker://{image}: reading manifest latest: manifest unknown"
            )
        return Pulled(image.rsplit(":", 1)[0] + "@sha256:abc", 1234, 0.5)


async def test_an_image_under_podman_images_that_cannot_be_pulled_waits_as_on_a_real_node(
    tmp_path: Path,
) -> None:
    image = f"{REGISTRY}/nope:latest"
    podman = FakePodman(missing={image})
    world = _world(tmp_path, {}, podman)
    uid = world.add(make_pod("a", image=image, imagePullPolicy="Always"))
    await world.syncer.sync(uid)
    waiting = world.container(uid)["state"]["waiting"]
    assert waiting["reason"] == "ErrImagePull"
    assert waiting["message"].endswith("manifest unknown")  # the runtime's error, as the kubelet shows it
    await world.syncer.sync(uid)
    waiting = world.container(uid)["state"]["waiting"]
    assert waiting["reason"] == "ImagePullBackOff"
    assert waiting["message"].startswith(f'Back-off pulling image "{image}": ErrImagePull: initializing')
    assert podman.handles == [] and world.runtime.handles == []
    expected = [
        ("Pulling", f'Pulling image "{image}"'),
        ("Failed", f'Failed to pull image "{image}": initializing'),
        ("Failed", "Error: ErrImagePull"),
        ("BackOff", f'Back-off pulling image "{image}"'),
        ("Failed", "Error: ImagePullBackOff"),
    ]
    assert len(world.events) == len(expected), world.events
    for (_, reason, message), (want_reason, want_start) in zip(world.events, expected, strict=True):
        assert reason == want_reason and message.startswith(want_start), (reason, message)


async def test_an_image_under_podman_images_runs_as_a_container_of_the_pod(tmp_path: Path) -> None:
    podman = FakePodman()
    world = _world(tmp_path, {}, podman)
    pod = make_pod("a", image=f"{REGISTRY}/requester:latest", automountServiceAccountToken=True)
    pod["spec"]["volumes"] = [
        {"name": "tmp", "emptyDir": {}},
        {"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
    ]
    c = pod["spec"]["containers"][0]
    c["imagePullPolicy"] = "IfNotPresent"
    c["env"] = [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]
    c["command"] = ["dpctl", "requester"]
    c["securityContext"] = {"runAsUser": 65532, "runAsGroup": 65532, "readOnlyRootFilesystem": True}
    c["volumeMounts"] = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"},
    ]
    uid = world.add(pod)
    await world.syncer.sync(uid)
    assert world.runtime.handles == [], "not a process"
    (handle,) = podman.handles
    spec = handle.launch.container
    assert spec is not None
    assert (spec.image, spec.command, spec.user, spec.read_only_root) == (
        f"{REGISTRY}/requester:latest",
        ("dpctl", "requester"),
        "65532:65532",
        True,
    )
    mounts = {m.target: m.source for m in spec.mounts}
    assert mounts["/var/run/secrets/kubernetes.io/serviceaccount"] == service_account_dir(
        world.syncer.records[uid].dir
    )
    assert (mounts["/tmp"].stat().st_mode & 0o777) == 0o777
    env = handle.launch.env
    assert (env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"]) == ("127.0.0.1", "6443")
    assert env["POD_NAMESPACE"] == "ns"
    assert env["NVIDIA_VISIBLE_DEVICES"].startswith("GPU-")
    assert not [k for k in env if k.startswith("DPCTL_SIM_") or k in ("KUBECONFIG", "PYTHONPATH")]
    assert podman.pulls == [(f"{REGISTRY}/requester:latest", "IfNotPresent")]
    assert world.container(uid)["imageID"] == f"{REGISTRY}/requester@sha256:abc"
    assert any(r == "Pulled" and "Successfully pulled image" in m for _, r, m in world.events)


def test_podman_create_argv_keeps_kubernetes_command_semantics(tmp_path: Path) -> None:
    spec = ContainerSpec(
        image="127.0.0.1:5000/fma/c:1",
        command=("dpctl", "controller"),
        args=("--v=5",),
        hostname="pod-a",
        user="65532:65532",
        read_only_root=True,
        drop_all_caps=True,
        no_new_privileges=True,
        mounts=(Mount(tmp_path, "/tmp"),),
    )
    launch = Launch(
        "dpctl-sim://" + "a" * 64, (), {"FOO": "secret value"}, tmp_path, tmp_path / "0.log", spec
    )
    argv = create_argv(launch, spec, {"k": "v"})
    assert argv[-2:] == ["127.0.0.1:5000/fma/c:1", "--v=5"]  # args after the image replace its cmd
    assert argv[argv.index("--entrypoint") + 1] == '["dpctl", "controller"]'
    assert argv[argv.index("--env") + 1] == "FOO", "values are inherited, never on the command line"
    assert "secret value" not in " ".join(argv)
    for flag in ("--read-only", "--read-only-tmpfs=false"):
        assert flag in argv
    assert argv[argv.index("--network") + 1] == "host"
    assert argv[argv.index("--log-opt") + 1] == f"path={tmp_path / '0.log'}"
    assert f"{tmp_path}:/tmp:rw" in argv
    no_command = create_argv(launch, ContainerSpec("img", (), (), "h"), {})
    assert "--entrypoint" not in no_command and no_command[-1] == "img"
