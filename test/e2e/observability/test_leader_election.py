"""Two controller processes with ``--leader-elect``: exactly one acts; SIGKILL it and the other
takes over once the Lease expires, and serves a requester that arrived while nobody led. Then a
third candidate joins and the leader is stopped cleanly (SIGTERM): the Lease is handed over at
once instead of expiring.

Processes rather than two chart replicas: the election runs through the same code either way
(the chart only adds ``--leader-elect --lease-name``, checked by ``test_chart_ha.py``), and a
process can be SIGKILLed at an exact moment, with its log kept for the assertions. That makes
this the harder case: a killed leader never hands its Lease over, so the standby must wait for
it to expire, and must not act before.

Short lease settings (6 s / 4 s / 1 s) keep the test quick. Throughout, a poller lists the Pods
about every 0.2 s and records any requester bound to two runners or any GPU with two bound
runners; the GPU ledger of the simulated devices is checked at the end (never two awake servers
on one GPU).
"""

from __future__ import annotations

import datetime as dt
import signal
import threading
from collections import Counter
from typing import Any

import pytest

from dpctl import api
from dpctl.api import LogMsg
from e2e.dualpods.conftest import ControllerProcess, dump
from e2e.recipe import (
    Kubectl,
    ServerPatch,
    bound_runner_of,
    cuda_visible_devices,
    is_ready,
    mkrs,
    requesters_of,
    runners,
    unique_name,
)
from helpers import wait_for

from .conftest import kv, log_lines

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

TIMEOUT = 120
LEASE = "dpctl-e2e"
LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 6, 4, 1
ELECTION = (
    "--leader-elect",
    f"--lease-name={LEASE}",
    f"--lease-duration={LEASE_DURATION}",
    f"--renew-deadline={RENEW_DEADLINE}",
    f"--retry-period={RETRY_PERIOD}",
)
# The standby polls every retry period (jittered up to 20 %); a 2-core machine shared with other
# clusters adds scheduling delay. Beyond this, the takeover is too slow to call "on expiry".
TAKEOVER_SLACK_S = 6.0
BECAME = "Became leader"
WAITING = "Waiting to become leader"
SYNCED = "Caches synced; starting workers"


class PodWatch:
    """Lists the Pods every ~0.2 s in a thread; records every observation that breaks a rule."""

    def __init__(self, kubectl: Kubectl) -> None:
        self.kubectl = kubectl
        self.observations = 0
        self.violations: list[str] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-watch", daemon=True)

    def __enter__(self) -> PodWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                pods = self.kubectl.pods()
            except Exception:  # a slow API server is not a violation; the next round will tell
                self.errors += 1
            else:
                self.check(pods)
            self._stop.wait(0.2)  # polling period, not synchronisation

    def check(self, pods: list[dict[str, Any]]) -> None:
        self.observations += 1
        per_requester: Counter[str] = Counter()
        per_gpu: Counter[tuple[str, str]] = Counter()
        for runner in runners(pods):
            bound = (runner["metadata"].get("annotations") or {}).get(api.REQUESTER_ANNOTATION)
            if not bound:
                continue
            per_requester[bound] += 1
            node = runner["spec"].get("nodeName") or runner["spec"]["nodeSelector"][api.HOSTNAME_LABEL]
            for gpu in cuda_visible_devices(runner).split(","):
                per_gpu[(node, gpu)] += 1
        for requester, n in per_requester.items():
            if n > 1:
                self.violations.append(f"requester {requester} has {n} runners")
        for node_gpu, n in per_gpu.items():
            if n > 1:
                self.violations.append(f"GPU {node_gpu} has {n} bound runners")


def _served(kubectl: Kubectl, rs: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The ReplicaSet's one requester and its runner, both Ready."""
    pods = kubectl.pods()
    reqs = [r for r in requesters_of(pods, rs) if not r["metadata"].get("deletionTimestamp")]
    if len(reqs) != 1:
        return None
    runner = bound_runner_of(pods, reqs[0])
    if runner is None or not (is_ready(reqs[0]) and is_ready(runner)):
        return None
    return dict(reqs[0]), dict(runner)


def _identity(proc: ControllerProcess) -> str:
    (line,) = log_lines(proc.log(), WAITING)
    return kv(line.text, "identity")


def _holder(kubectl: Kubectl) -> str:
    return kubectl.run("get", "lease", LEASE, "-o", "jsonpath={.spec.holderIdentity}").strip()


def test_one_leader_acts_and_the_standby_takes_over_when_it_is_killed(
    kubectl: Kubectl, gpu_map: dict[str, dict[str, int]], ledger: Any, start_controller: Any
) -> None:
    a = start_controller(2, *ELECTION)
    b = start_controller(2, *ELECTION)
    procs = [a, b]
    try:
        wait_for(lambda: all(p.count(WAITING) == 1 for p in procs), 60, "both candidates up")
        leader = wait_for(lambda: [p for p in procs if p.count(BECAME)], 60, "a leader")[0]
        standby = b if leader is a else a
        assert _holder(kubectl) == _identity(leader) != _identity(standby)
        wait_for(lambda: leader.count(SYNCED) == 1, 60, "the leader's workers started")

        with PodWatch(kubectl) as watch:
            rs1 = unique_name()
            kubectl.apply(mkrs(rs1, ServerPatch()))
            req1, runner1 = wait_for(lambda: _served(kubectl, rs1), TIMEOUT, "the first pair Ready")
            # Only the leader acted; the standby, with warm caches, did nothing.
            assert leader.count(LogMsg.CREATED_RUNNER) == 1
            for line in (BECAME, SYNCED, LogMsg.FOUND_GPUS, LogMsg.CREATED_RUNNER, LogMsg.RELAYED_READINESS):
                assert standby.count(line) == 0, line
            assert _holder(kubectl) == _identity(leader)

            # SIGKILL: no hand-over, the Lease must expire.
            assert leader.proc is not None
            leader.proc.send_signal(signal.SIGKILL)
            leader.proc.wait(30)
            killed_at = dt.datetime.now(dt.UTC)
            last_renewal = kubectl.get_json("lease", LEASE)["spec"]["renewTime"]
            # A requester created while there is no leader.
            rs2 = unique_name()
            kubectl.apply(mkrs(rs2, ServerPatch()))

            (became,) = wait_for(lambda: log_lines(standby.log(), BECAME), 60, "the standby leading")
            takeover_s = (became.at - killed_at).total_seconds()
            renewed = dt.datetime.fromisoformat(last_renewal.replace("Z", "+00:00"))
            after_renewal_s = (became.at - renewed).total_seconds()
            print(
                f"takeover: {takeover_s:.2f} s after SIGKILL, {after_renewal_s:.2f} s after the "
                f"last renewal (lease {LEASE_DURATION} s, retry {RETRY_PERIOD} s)"
            )
            # Not before the Lease expired: the standby waited a full duration after the last
            # renewal it saw; and not much later.
            assert after_renewal_s >= LEASE_DURATION - 0.5, after_renewal_s
            assert takeover_s <= LEASE_DURATION + TAKEOVER_SLACK_S, takeover_s
            assert _holder(kubectl) == _identity(standby)
            wait_for(lambda: standby.count(SYNCED) == 1, 30, "the new leader's workers started")

            req2, runner2 = wait_for(
                lambda: _served(kubectl, rs2), TIMEOUT, "the requester made leaderless, served"
            )
            assert standby.count(LogMsg.CREATED_RUNNER) == 1
            assert any(
                req2["metadata"]["name"] in line.text
                for line in log_lines(standby.log(), LogMsg.CREATED_RUNNER)
            )
            # The first pair went through the takeover untouched.
            still = _served(kubectl, rs1)
            assert still is not None
            assert still[0]["metadata"]["uid"] == req1["metadata"]["uid"]
            assert still[1]["metadata"]["uid"] == runner1["metadata"]["uid"]
            assert len(runners(kubectl.pods())) == 2
            assert runner2["metadata"]["uid"] != runner1["metadata"]["uid"]

            # A clean stop (SIGTERM) hands the Lease over at once: a third candidate need not
            # wait for it to expire.
            third = start_controller(2, *ELECTION)
            procs.append(third)
            wait_for(lambda: third.count(WAITING) == 1, 60, "a third candidate up")
            stopped_at = dt.datetime.now(dt.UTC)
            assert standby.stop(signal.SIGTERM) == 0
            (handed,) = wait_for(lambda: log_lines(third.log(), BECAME), 60, "the third candidate leading")
            handover_s = (handed.at - stopped_at).total_seconds()
            print(f"hand-over on SIGTERM: {handover_s:.2f} s")
            assert handover_s < LEASE_DURATION - 1, handover_s
            assert _holder(kubectl) == _identity(third)
            wait_for(lambda: third.count(SYNCED) == 1, 30, "the third leader's workers started")
            assert third.count(LogMsg.CREATED_RUNNER) == 0  # both pairs were served already
            assert _served(kubectl, rs1) is not None and _served(kubectl, rs2) is not None

        print(f"pod observations: {watch.observations} ({watch.errors} failed lists)")
        assert watch.observations >= 10, f"only {watch.observations} observations"
        assert watch.violations == [], watch.violations[:20]
        assert ledger.violations() == []
    except AssertionError:
        for p in procs:
            print(dump(kubectl, p))
        raise
