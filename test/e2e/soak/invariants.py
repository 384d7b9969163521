"""The soak's invariant checks (contract §6): one that runs throughout, one once the faults stop.

:class:`GpuWatch` (a thread) reads the emulator's GPU ledger every poll. The ledger records, at
the moment it happens, every inference server that starts or wakes on a GPU another live server
holds awake, so reading the new records each poll sees every breach of invariant 1, however
short. A breach caused by a restart the driver forced (a killed vLLM process, a Node re-added
with its Pods) is *excused* and counted apart: a restarting vLLM loads its model onto its GPUs
before anyone can ask it anything, so no controller can prevent that. Every other breach — a
wake, or the first start of a runner the controller created — is a violation.

:func:`convergence_problems` describes what is not yet right once the faults stopped: every
runner bound to a live requester or unbound and asleep (``/is_sleeping`` true), no requester
with two runners, nothing Terminating, every running requester on a Ready Node served (bound,
its runner Ready, no status errors) and Ready exactly when its runner is, and every GPU held
awake in the ledger held by a bound runner. Empty means converged.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dpctl import api
from dpctl.dualpods import podview
from dpsim.emulator.ledger import Action, Ledger, Violation
from e2e.recipe import Kubectl

from .driver import http

POLL_S = 0.5


class GpuWatch(threading.Thread):
    """Invariant 1 on every poll of the ledger, from the time it is started."""

    def __init__(self, ledger: Ledger, namespace: str, restarted: Callable[[], Mapping[str, float]]) -> None:
        super().__init__(name="gpu-watch", daemon=True)
        self.ledger = ledger
        self.namespace = namespace
        self.restarted = restarted
        self.polls = 0
        self.violations: list[str] = []
        self.excused: list[str] = []
        self.errors: list[str] = []
        self._seen = len(ledger.violations())
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(POLL_S):
            self.poll()

    def stop(self) -> None:
        self._halt.set()
        self.join(10)
        self.poll()  # whatever happened since the last poll

    def poll(self) -> None:
        try:
            found = self.ledger.violations()
        except Exception as err:  # a busy sqlite file: the next poll reads it
            self.errors.append(repr(err))
            return
        self.polls += 1
        new, self._seen = found[self._seen :], len(found)
        for v in new:
            (self.excused if self._excused(v) else self.violations).append(f"GPU conflict: {v}")

    def _excused(self, v: Violation) -> bool:
        if v.action is not Action.START:
            return False  # only the controller wakes servers
        since = self.restarted().get(v.intruder.pod_uid)
        return since is not None and v.at >= since


def _is_sleeping(runner: Mapping[str, Any]) -> bool | None:
    port = podview.server_port(runner)
    if not podview.pod_ip(runner) or port is None:
        return None
    status, body = http("GET", f"http://{podview.pod_ip(runner)}:{port}{api.IS_SLEEPING_PATH}")
    if status != 200:
        return None
    try:
        return bool(json.loads(body)["is_sleeping"])
    except (ValueError, KeyError, TypeError):
        return None


def _node_ready(node: Mapping[str, Any]) -> bool:
    return podview.pod_ready(node) and not podview.node_unschedulable(node)  # same Ready condition shape


def _owner(pod: Mapping[str, Any]) -> str:
    for ref in podview.meta(pod).get("ownerReferences") or []:
        if ref.get("kind") == "ReplicaSet":
            return str(ref.get("name"))
    return ""


def _terminal(pod: Mapping[str, Any]) -> bool:
    return podview.status(pod).get("phase") in ("Failed", "Succeeded")


def convergence_problems(kubectl: Kubectl, ledger: Ledger, replicas: Mapping[str, int]) -> list[str]:
    """What is not right yet; ``replicas`` is what each ReplicaSet was last asked for."""
    pods: Sequence[Mapping[str, Any]] = kubectl.pods()
    nodes = kubectl.get_json("nodes")["items"]
    ready_nodes = {podview.name(n) for n in nodes if _node_ready(n)}
    problems: list[str] = []
    by_uid = {podview.uid(p): p for p in pods}
    for pod in pods:
        if podview.is_deleting(pod):
            problems.append(f"{podview.name(pod)} is Terminating (finalizers {podview.finalizers(pod)})")
    runners_of: Counter[str] = Counter()
    bound_runner: dict[str, Mapping[str, Any]] = {}
    for runner in (p for p in pods if podview.is_runner(p)):
        name = podview.name(runner)
        bound = podview.bound_requester(runner)
        if bound is None:
            if _is_sleeping(runner) is not True:
                problems.append(f"runner {name} is unbound but not asleep")
            continue
        requester = by_uid.get(bound[0])
        if requester is None or podview.is_deleting(requester) or _terminal(requester):
            problems.append(f"runner {name} is bound to requester {bound[1]} ({bound[0]}), which is gone")
            continue
        runners_of[bound[0]] += 1
        bound_runner[bound[0]] = runner
        if podview.pod_ready(requester) != podview.pod_ready(runner):
            problems.append(
                f"requester {bound[1]} Ready={podview.pod_ready(requester)} but its runner {name} "
                f"Ready={podview.pod_ready(runner)}"
            )
    live: Counter[str] = Counter()
    for requester in (p for p in pods if podview.is_requester(p)):
        name, uid = podview.name(requester), podview.uid(requester)
        if runners_of[uid] > 1:
            problems.append(f"requester {name} has {runners_of[uid]} runners")
        if podview.is_deleting(requester) or _terminal(requester):
            continue
        live[_owner(requester)] += 1
        errors = _status_errors(requester)
        if errors:
            problems.append(f"requester {name} has status errors {errors}")
        node = podview.node_name(requester)
        if node not in ready_nodes or not podview.container_running(requester):
            problems.append(f"requester {name} is not running on a Ready Node (node {node!r})")
            continue
        its_runner = bound_runner.get(uid)
        if its_runner is None:
            problems.append(f"requester {name} runs on {node} but has no runner")
        elif not podview.pod_ready(its_runner) or not podview.pod_ready(requester):
            problems.append(f"requester {name} and runner {podview.name(its_runner)} are not both Ready")
    for rs, want in sorted(replicas.items()):
        if live[rs] != want:
            problems.append(f"ReplicaSet {rs} has {live[rs]} live requesters, not {want}")
    for rs in sorted(set(live) - set(replicas)):
        problems.append(f"{live[rs]} requesters of {rs or 'no ReplicaSet'} are still there")
    bound_names = {f"{kubectl.namespace}/{podview.name(r)}" for r in bound_runner.values()}
    for gpu, holder in ledger.awake_holders().items():
        if holder.pod.startswith(f"{kubectl.namespace}/") and holder.pod not in bound_names:
            problems.append(f"GPU {gpu} is held awake by {holder.pod}, which is not a bound runner")
    return problems


def _status_errors(pod: Mapping[str, Any]) -> list[str]:
    raw = podview.annotations(pod).get(api.ORIGINAL.status)
    if not raw:
        return []
    try:
        return list(json.loads(raw).get("Errors") or [])
    except (ValueError, AttributeError):
        return [f"unreadable status annotation {raw!r}"]


def pod_uids(kubectl: Kubectl) -> frozenset[str]:
    return frozenset(podview.uid(p) for p in kubectl.pods())
