"""The log relay (contract §2b): ``kubectl logs <requester>`` shows its runner's vLLM log.

Every line the runner's inference server writes appears in the requester's log once, in order,
soon after it was written, across a controller restart, and the relay ends when the pair is
unbound; the next requester bound to the same runner gets the whole log again.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dpctl import api
from e2e.recipe import Kubectl, ServerPatch, mkrs, name_of, pod_get, unique_name
from helpers import wait_for

from .conftest import METRICS_PORT, Dpctlr, Gpus, T, skip_unless_local
from .steps import Pod, pair_ready, scale_to_zero_keeps_sleeper

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

# How soon a line written by the server must be in the requester's log (the figure).
RELAY_WITHIN_S = 5.0


def runner_lines(kubectl: Kubectl, runner: Mapping[str, Any]) -> list[tuple[dt.datetime, str]]:
    """The runner's inference-server log as (time the kubelet got the line, line)."""
    out = kubectl.run("logs", name_of(runner), "-c", api.INFERENCE_SERVER_CONTAINER, "--timestamps")
    lines = []
    for raw in out.splitlines():
        stamp, _, text = raw.partition(" ")
        lines.append((dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")), text))
    return lines


def relayed(kubectl: Kubectl, requester: Mapping[str, Any], expected: list[str]) -> list[str]:
    """The lines of the requester's log that are lines of the runner's (the stub's own are not)."""
    wanted = set(expected)
    return [line for line in kubectl.run("logs", name_of(requester)).splitlines() if line in wanted]


def assert_relayed_exactly(kubectl: Kubectl, requester: Pod, runner: Pod) -> list[str]:
    """Wait until the requester's log holds the runner's, each line once and in order."""
    lines = [text for _, text in runner_lines(kubectl, runner)]
    assert lines, f"{name_of(runner)} has written nothing"
    wait_for(
        lambda: relayed(kubectl, requester, lines) == lines, T, f"{name_of(runner)}'s log in the requester's"
    )
    return lines


def relay_streams(kubectl: Kubectl, dpctlr: Dpctlr) -> float:
    pod = dpctlr.pod()
    assert pod is not None
    text = pod_get(kubectl, pod, METRICS_PORT, "/metrics", direct=dpctlr.cluster.is_local).decode()
    for family in text_string_to_metric_families(text):
        if family.name == "dpctl_log_relay_streams":
            return family.samples[0].value
    raise AssertionError("no dpctl_log_relay_streams on /metrics")


def test_the_runners_log_is_in_the_requesters_soon_once_and_across_a_controller_restart(
    cluster: Any, kubectl: Kubectl, dpctlr: Dpctlr, gpu_map: dict[str, dict[str, int]], gpus: Gpus
) -> None:
    skip_unless_local(cluster, "reading /metrics of the controller Pod directly")
    node = gpus.worker()
    gpus.leave_free(node, 1)  # so the next requester gets the same GPU, and the same runner
    rs = unique_name()
    kubectl.apply(mkrs(rs, ServerPatch(), node_selector={api.HOSTNAME_LABEL: node}))
    req, runner = pair_ready(kubectl, rs)

    # Soon: each startup line is in the requester's log within RELAY_WITHIN_S of being written.
    written = runner_lines(kubectl, runner)
    lines = [text for _, text in written]
    seen: dict[str, float] = {}

    def all_seen() -> bool:
        now = time.time()
        for line in relayed(kubectl, req, lines):
            seen.setdefault(line, now)  # when each line was first in the requester's log
        return len(seen) == len(lines)

    wait_for(all_seen, T, "the startup lines in the requester's log", max_interval=0.2)
    late = {
        text: seen[text] - at.timestamp()
        for at, text in written
        if seen[text] - at.timestamp() > RELAY_WITHIN_S
    }
    assert not late, f"lines relayed more than {RELAY_WITHIN_S} s after they were written: {late}"
    assert_relayed_exactly(kubectl, req, runner)
    assert relay_streams(kubectl, dpctlr) == 1

    # A new controller sends the log from the start again: the stub prints no line twice.
    dpctlr.kill()
    wait_for(lambda: relay_streams(kubectl, dpctlr) == 1, T, "the new controller's relay")
    assert_relayed_exactly(kubectl, req, runner)

    # Unbinding ends the relay; the runner's sleep is logged by the runner after that.
    sleeper = scale_to_zero_keeps_sleeper(kubectl, dpctlr, rs, req, runner)
    wait_for(lambda: relay_streams(kubectl, dpctlr) == 0, T, "no relay once the pair is unbound")

    # The next requester bound to the same runner gets all of its log, sleep and wake included.
    kubectl.scale(rs, 1)
    req2, woken = pair_ready(kubectl, rs)
    assert woken["metadata"]["uid"] == sleeper["metadata"]["uid"]
    lines = assert_relayed_exactly(kubectl, req2, woken)
    assert any("fall asleep" in line for line in lines) and any("wake up" in line for line in lines)
