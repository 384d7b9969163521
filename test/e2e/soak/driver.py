"""The soak's seeded random driver: the load (ReplicaSets come, scale and go; Pods and Nodes are
deleted, cordoned, made NotReady, removed and re-added) interleaved with faults (the controller
SIGKILLed and restarted, the API server restarted, every resourceVersion expired, stubs and
inference servers answering 500, garbage or nothing, their processes killed).

One thread, one step at a time: :meth:`Driver.step` first runs the due entries of its agenda
(the second half of a fault or an operation: uncordon, make Ready, re-add, restart), then picks
one operation or fault with the seeded generator. A pick that does not apply (nothing to delete,
a Node already down) is skipped, not counted; one that fails because the cluster is in the middle
of a fault (the API server restarting) is counted under ``failed``. :meth:`Driver.finish` undoes
everything still pending, so the system can settle.

Every HTTP fault is bounded (``times``), and :meth:`Driver.finish` clears what is left. Pods whose
inference server restarts because the driver made it (a killed process, a re-added Node) are
remembered in ``restarted``: a restarted vLLM loads its model onto its GPUs before anyone can ask
it anything, which no controller can prevent, so the invariant checker tells those GPU conflicts
apart from the ones the controller causes.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import os
import random
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpctl import api
from dpctl.dualpods import podview
from dpctl.faults import CONTROL_PATH, ENABLE_ENV, RULES_ENV
from dpsim.kubelet.ctl import node_action
from dpsim.localcluster.controlplane import ControlPlane
from dpsim.simenv import POD_UID_ENV, STATE_DIR_ENV
from e2e.dualpods.conftest import ControllerProcess
from e2e.recipe import Kubectl, ServerPatch, mkrs

EMULATOR_PORT = 8000
MAX_REPLICASETS = 3
# Requested GPUs across the ReplicaSets (the cluster has 2 x 4); leaves room to move.
GPU_BUDGET = 6
FAULT_SHARE = 0.35
# A pick that does not apply (nothing to delete, a Node already down) is replaced, this often.
PICKS_PER_STEP = 4
HTTP_TIMEOUT_S = 3.0
ACTION_TIMEOUT_S = 90.0

# Least time between two restarts of the API server (plain, or expiring every resourceVersion).
API_FAULT_GAP_S = 60.0

_INJECTED = "injected by the soak"


def _rules(*rules: Mapping[str, Any]) -> str:
    return json.dumps(list(rules))


# Two server definitions: sleepers of one can never serve the other, so the sleeper limit works.
# Variant b's servers fail their first wake, its stubs their first GPU queries (rules at start).
VARIANTS: dict[str, tuple[ServerPatch, dict[str, str]]] = {
    "a": (
        ServerPatch(startup_delay_s=1.5, extra_env={ENABLE_ENV: "1"}),
        {ENABLE_ENV: "1"},
    ),
    "b": (
        ServerPatch(
            startup_delay_s=3.0,
            extra_env={
                ENABLE_ENV: "1",
                RULES_ENV: _rules({"path": api.WAKE_UP_PATH, "status": 500, "body": _INJECTED, "times": 1}),
            },
        ),
        {
            ENABLE_ENV: "1",
            RULES_ENV: _rules(
                {"path": api.ORIGINAL.accelerators_path, "status": 500, "body": _INJECTED, "times": 1},
                {"path": api.ORIGINAL.accelerators_path, "status": 200, "body": "<html>not JSON", "times": 1},
            ),
        },
    ),
}

# Faults a running stub can be given (on its SPI port); each bounded by `times`.
STUB_FAULTS: list[tuple[str, list[dict[str, Any]]]] = [
    (
        "stub-gpus-500",
        [{"path": api.ORIGINAL.accelerators_path, "status": 500, "body": _INJECTED, "times": 3}],
    ),
    (
        "stub-gpus-garbage",
        [{"path": api.ORIGINAL.accelerators_path, "status": 200, "body": "{[", "times": 2}],
    ),
    ("stub-gpus-empty", [{"path": api.ORIGINAL.accelerators_path, "status": 200, "body": "", "times": 2}]),
    ("stub-gpus-hang", [{"path": api.ORIGINAL.accelerators_path, "hang": True, "times": 1}]),
    ("stub-ready-500", [{"path": api.BECOME_READY_PATH, "status": 500, "body": _INJECTED, "times": 3}]),
    ("stub-unready-500", [{"path": api.BECOME_UNREADY_PATH, "status": 500, "body": _INJECTED, "times": 2}]),
    ("stub-relay-hang", [{"path": api.BECOME_READY_PATH, "hang": True, "times": 1}]),
    ("stub-probe-hang", [{"path": api.READY_PATH, "hang": True, "times": 4}]),
]

# Faults a running inference server can be given.
SERVER_FAULTS: list[tuple[str, list[dict[str, Any]]]] = [
    ("server-wake-500", [{"path": api.WAKE_UP_PATH, "status": 500, "body": _INJECTED, "times": 2}]),
    ("server-wake-500x3", [{"path": api.WAKE_UP_PATH, "status": 500, "body": _INJECTED, "times": 3}]),
    ("server-sleep-500", [{"path": api.SLEEP_PATH, "status": 500, "body": _INJECTED, "times": 2}]),
    (
        "server-is-sleeping-garbage",
        [{"path": api.IS_SLEEPING_PATH, "status": 200, "body": "yes", "times": 3}],
    ),
    ("server-wake-hang", [{"path": api.WAKE_UP_PATH, "hang": True, "times": 1}]),
    ("server-sleep-hang", [{"path": api.SLEEP_PATH, "hang": True, "times": 1}]),
    ("server-is-sleeping-hang", [{"path": api.IS_SLEEPING_PATH, "hang": True, "times": 2}]),
    ("server-health-500", [{"path": api.HEALTH_PATH, "status": 500, "body": _INJECTED, "times": 5}]),
]


def http(method: str, url: str, body: Any = None, timeout: float = HTTP_TIMEOUT_S) -> tuple[int, bytes]:
    """One plain HTTP call to a Pod; (status, body), status 0 when nothing answered."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def _tail(path: Path, size: int = 4096) -> str:
    with path.open("rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - size))
        return f.read().decode(errors="replace")


def container_pids(state_dir: Path, pod_uid: str) -> list[int]:
    """Processes of a Pod's containers on the simulated nodes (they carry its UID in their env)."""
    wanted = {f"{STATE_DIR_ENV}={state_dir}".encode(), f"{POD_UID_ENV}={pod_uid}".encode()}
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = set((entry / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if wanted <= env:
            pids.append(int(entry.name))
    return pids


# An operation or fault: whether it applied (or the name it is counted under).
Action = Callable[[list[Mapping[str, Any]]], "str | bool | None"]


@dataclass
class World:
    """What the driver acts on."""

    kubectl: Kubectl
    controller: ControllerProcess
    control_plane: ControlPlane
    state_dir: Path
    nodes: list[str]


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    what: str = field(compare=False)
    action: Callable[[], None] = field(compare=False)


def _live(
    pods: Sequence[Mapping[str, Any]], pred: Callable[[Mapping[str, Any]], bool]
) -> list[Mapping[str, Any]]:
    return [p for p in pods if pred(p) and not podview.is_deleting(p)]


class Driver:
    """The load and the faults, one seeded pick per :meth:`step` (see the module docstring)."""

    def __init__(self, world: World, rng: random.Random) -> None:
        self.w = world
        self.rng = rng
        self.operations: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.crashes: list[str] = []  # the controller exited by itself, not at start-up
        self.startup_exits = 0  # the controller exited at start: the API server was down
        self._api_fault_at = -API_FAULT_GAP_S
        self.restarted: dict[str, float] = {}  # pod UID -> when (wall clock) the driver first made it restart
        self.history: list[str] = []
        self._agenda: list[_Due] = []
        self._seq = itertools.count()
        self._rs_names = itertools.count(1)
        self.replicasets: dict[str, tuple[int, int]] = {}  # name -> (replicas, GPUs each)
        self.cordoned: set[str] = set()
        self.down: dict[str, str] = {}  # node -> "removed" | "not-ready"
        self.controller_down = False
        self._started = time.monotonic()
        self._ops: list[tuple[str, float, Action]] = [
            ("create-replicaset", 3, self.create_replicaset),
            ("scale-replicaset", 6, self.scale_replicaset),
            ("delete-replicaset", 1, self.delete_replicaset),
            ("delete-runner", 1, self.delete_runner),
            ("delete-requester", 1.5, self.delete_requester),
            ("cordon-node", 1, self.cordon_node),
            ("remove-node", 0.5, self.remove_node),
        ]
        self._faults: list[tuple[str, float, Action]] = [
            ("controller-sigkill", 1.5, self.kill_controller),
            ("apiserver-restart", 0.5, self.restart_apiserver),
            ("resourceversions-expired", 0.5, self.expire_resource_versions),
            ("stub-http", 3, self.stub_fault),
            ("server-http", 3, self.server_fault),
            ("container-killed", 1.5, self.kill_container),
            ("node-not-ready", 1, self.node_not_ready),
        ]

    # ---- the loop -----------------------------------------------------------------------------

    def step(self) -> None:
        self.supervise()
        self.run_due()
        pods = self._pods()
        for _ in range(PICKS_PER_STEP):
            menu, counter = (
                (self._faults, self.faults)
                if self.rng.random() < FAULT_SHARE
                else (self._ops, self.operations)
            )
            if self._pick(menu, pods, counter):
                return

    def supervise(self) -> None:
        """Restart a controller that exited by itself, as its Pod's kubelet would.

        Exiting because the API server cannot be reached at start is how the controller is meant
        to fail (fast, with the reason; the kubelet restarts it); anything else is a crash.
        """
        proc = self.w.controller.proc
        if self.controller_down or proc is None or proc.poll() is None:
            return
        tail = _tail(self.w.controller.log_path)
        if proc.returncode == 1 and "Cannot reach the API server" in tail:
            self.startup_exits += 1
        else:
            self.crashes.append(f"the controller exited by itself with code {proc.returncode}: {tail[-500:]}")
        self._note(f"controller exited with {proc.returncode}; starting it again")
        self.w.controller.stop()
        self.w.controller.start()

    def pause(self) -> float:
        """Seconds until the next step: load shaping, seeded like everything else."""
        return self.rng.uniform(0.5, 2.5)

    def finish(self) -> None:
        """Undo everything pending now, clear every HTTP fault, make sure the controller runs."""
        while self._agenda:
            self._run(heapq.heappop(self._agenda))
        for pod in self._pods():
            ip = podview.pod_ip(pod)
            if not ip:
                continue
            port = api.DEFAULT_SPI_PORT if podview.is_requester(pod) else EMULATOR_PORT
            http("DELETE", f"http://{ip}:{port}{CONTROL_PATH}")
        for node in self.w.nodes:
            with contextlib.suppress(RuntimeError):
                node_action(self.w.state_dir, node, "add")  # 409 when it is there already
            with contextlib.suppress(RuntimeError):
                node_action(self.w.state_dir, node, "ready")
            self.w.kubectl.run("uncordon", node, check=False)
        if self.w.controller.proc is None:
            self.w.controller.start()
            self.controller_down = False

    def run_due(self) -> None:
        now = time.monotonic()
        while self._agenda and self._agenda[0].at <= now:
            self._run(heapq.heappop(self._agenda))

    def _run(self, due: _Due) -> None:
        self._note(f"(due) {due.what}")
        try:
            due.action()
        except (AssertionError, RuntimeError, OSError, subprocess.SubprocessError) as err:
            self.failed[due.what] += 1
            self._note(f"(due) {due.what} failed: {err}")

    def _later(self, seconds: float, what: str, action: Callable[[], None]) -> None:
        heapq.heappush(self._agenda, _Due(time.monotonic() + seconds, next(self._seq), what, action))

    def _pick(
        self,
        menu: list[tuple[str, float, Action]],
        pods: list[Mapping[str, Any]],
        counter: Counter[str],
    ) -> bool:
        """Try one pick; whether it applied (a failure counts as applied: it was tried)."""
        name, _, action = self.rng.choices(menu, weights=[w for _, w, _ in menu])[0]
        began = time.monotonic()
        try:
            done = action(pods)
        except (AssertionError, RuntimeError, OSError, subprocess.SubprocessError) as err:
            self.failed[name] += 1
            self._note(f"{name} failed: {err}")
            return True
        if done:
            counter[done if isinstance(done, str) else name] += 1
            self._note(f"  ({name} took {time.monotonic() - began:.1f} s)")
        return bool(done)

    def _note(self, what: str) -> None:
        self.history.append(f"{time.monotonic() - self._started:8.1f}s {what}")

    def _pods(self) -> list[Mapping[str, Any]]:
        try:
            return list(self.w.kubectl.pods())
        except (AssertionError, ValueError, subprocess.SubprocessError):
            return []

    def _gpus_asked(self) -> int:
        return sum(replicas * gpus for replicas, gpus in self.replicasets.values())

    def _up_nodes(self) -> list[str]:
        return [n for n in self.w.nodes if n not in self.down]

    # ---- operations ---------------------------------------------------------------------------

    def create_replicaset(self, _: list[Mapping[str, Any]]) -> bool:
        gpus = 2 if self.rng.random() < 0.15 else 1
        replicas = self.rng.randint(1, 2)
        if len(self.replicasets) >= MAX_REPLICASETS or self._gpus_asked() + replicas * gpus > GPU_BUDGET:
            return False
        variant = self.rng.choice(sorted(VARIANTS))
        patch, requester_env = VARIANTS[variant]
        n = next(self._rs_names)
        name = f"soak-{variant}-{n}"
        rs = mkrs(name, patch, replicas=replicas, gpus=gpus, requester_env=requester_env)
        # Each ReplicaSet selects only its own Pods (the recipe's selector is shared by all).
        instance = f"{variant}{n}"
        rs["spec"]["selector"]["matchLabels"]["instance"] = instance
        rs["spec"]["template"]["metadata"]["labels"]["instance"] = instance
        self.w.kubectl.apply(rs)
        self.replicasets[name] = (replicas, gpus)
        self._note(f"create {name} replicas={replicas} gpus={gpus}")
        return True

    def scale_replicaset(self, _: list[Mapping[str, Any]]) -> bool:
        if not self.replicasets:
            return False
        name = self.rng.choice(sorted(self.replicasets))
        old, gpus = self.replicasets[name]
        replicas = self.rng.randint(0, 2)
        if replicas == old or self._gpus_asked() + (replicas - old) * gpus > GPU_BUDGET:
            return False
        self.w.kubectl.scale(name, replicas)
        self.replicasets[name] = (replicas, gpus)
        self._note(f"scale {name} {old}->{replicas}")
        return True

    def delete_replicaset(self, _: list[Mapping[str, Any]]) -> bool:
        if not self.replicasets:
            return False
        name = self.rng.choice(sorted(self.replicasets))
        self.w.kubectl.run("delete", "rs", name, "--wait=false")
        del self.replicasets[name]
        self._note(f"delete rs {name}")
        return True

    def _delete_pod(self, pods: list[Mapping[str, Any]], what: str) -> bool:
        if not pods:
            return False
        pod = self.rng.choice(pods)
        self.w.kubectl.run("delete", "pod", podview.name(pod), "--wait=false")
        self._note(f"delete {what} {podview.name(pod)}")
        return True

    def delete_runner(self, pods: list[Mapping[str, Any]]) -> bool:
        return self._delete_pod(_live(pods, podview.is_runner), "runner")

    def delete_requester(self, pods: list[Mapping[str, Any]]) -> bool:
        return self._delete_pod(_live(pods, podview.is_requester), "requester")

    def cordon_node(self, _: list[Mapping[str, Any]]) -> bool:
        candidates = [n for n in self._up_nodes() if n not in self.cordoned]
        if self.cordoned or not candidates:
            return False
        node = self.rng.choice(candidates)
        self.w.kubectl.run("cordon", node)
        self.cordoned.add(node)
        self._note(f"cordon {node}")

        def uncordon() -> None:
            self.cordoned.discard(node)
            self.w.kubectl.run("uncordon", node)

        self._later(self.rng.uniform(5, 25), f"uncordon {node}", uncordon)
        return True

    def remove_node(self, pods: list[Mapping[str, Any]]) -> bool:
        if self.down:
            return False
        node = self.rng.choice(self.w.nodes)
        self.down[node] = "removed"
        node_action(self.w.state_dir, node, "remove", ACTION_TIMEOUT_S)
        self._note(f"remove node {node}")

        def add() -> None:
            # Pods still bound to it come back with it: their containers restart (a reboot).
            now = time.time()
            for pod in self._pods():
                if podview.node_name(pod) == node:
                    self.restarted.setdefault(podview.uid(pod), now)
            node_action(self.w.state_dir, node, "add", ACTION_TIMEOUT_S)
            self.down.pop(node, None)

        self._later(self.rng.uniform(10, 40), f"add node {node}", add)
        return True

    # ---- faults -------------------------------------------------------------------------------

    def kill_controller(self, _: list[Mapping[str, Any]]) -> bool:
        if self.controller_down:
            return False
        self.w.controller.stop(signal.SIGKILL)
        self.controller_down = True
        self._note("SIGKILL controller")

        def restart() -> None:
            self.w.controller.start()
            self.controller_down = False

        self._later(self.rng.uniform(0, 5), "start controller", restart)
        return True

    def _api_fault_allowed(self) -> bool:
        """The kube-controller-manager takes a while to catch up after the API server restarts;
        restarting it again at once would only measure that."""
        now = time.monotonic()
        if now - self._api_fault_at < API_FAULT_GAP_S:
            return False
        self._api_fault_at = now
        return True

    def restart_apiserver(self, _: list[Mapping[str, Any]]) -> bool:
        if not self._api_fault_allowed():
            return False
        self._note("restart apiserver")
        self.w.control_plane.restart_apiserver()
        return True

    def expire_resource_versions(self, _: list[Mapping[str, Any]]) -> bool:
        if not self._api_fault_allowed():
            return False
        self._note("expire resourceVersions")
        self.w.control_plane.expire_resource_versions()
        return True

    def _http_fault(
        self, pods: list[Mapping[str, Any]], port: int, menu: list[tuple[str, list[dict[str, Any]]]]
    ) -> str | None:
        pods = [p for p in pods if podview.pod_ip(p) and podview.container_running(p)]
        if not pods:
            return None
        pod = self.rng.choice(pods)
        name, rules = self.rng.choice(menu)
        status, body = http("PUT", f"http://{podview.pod_ip(pod)}:{port}{CONTROL_PATH}", rules)
        if status != 200:
            raise RuntimeError(f"{name} on {podview.name(pod)}: HTTP {status} {body[:100]!r}")
        self._note(f"{name} on {podview.name(pod)}")
        return name

    def stub_fault(self, pods: list[Mapping[str, Any]]) -> str | None:
        return self._http_fault(_live(pods, podview.is_requester), api.DEFAULT_SPI_PORT, STUB_FAULTS)

    def server_fault(self, pods: list[Mapping[str, Any]]) -> str | None:
        return self._http_fault(_live(pods, podview.is_runner), EMULATOR_PORT, SERVER_FAULTS)

    def kill_container(self, pods: list[Mapping[str, Any]]) -> str | None:
        pods = _live(pods, lambda p: podview.is_requester(p) or podview.is_runner(p))
        pods = [p for p in pods if podview.container_running(p)]
        if not pods:
            return None
        pod = self.rng.choice(pods)
        uid = podview.uid(pod)
        self.restarted.setdefault(uid, time.time())
        pids = container_pids(self.w.state_dir, uid)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        kind = "runner" if podview.is_runner(pod) else "requester"
        self._note(f"SIGKILL {kind} {podview.name(pod)} pids={pids}")
        return f"container-killed-{kind}" if pids else None

    def node_not_ready(self, _: list[Mapping[str, Any]]) -> bool:
        if self.down:
            return False
        node = self.rng.choice(self.w.nodes)
        self.down[node] = "not-ready"
        node_action(self.w.state_dir, node, "not-ready", ACTION_TIMEOUT_S)
        self._note(f"node {node} NotReady")

        def ready() -> None:
            node_action(self.w.state_dir, node, "ready", ACTION_TIMEOUT_S)
            self.down.pop(node, None)

        self._later(self.rng.uniform(5, 30), f"node {node} Ready", ready)
        return True
