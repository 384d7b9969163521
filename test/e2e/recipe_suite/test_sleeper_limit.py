"""Recipe Example 8: the sleeper limit, with ``SleeperLimit`` 1 and 2 set through the chart.

All requesters are pinned to a Node whose other GPUs are held by placeholder Pods, so each one
gets the same GPU and its runner joins the sleepers there. With limit N, N+1 sleepers can exist;
the next runner created on that GPU deletes exactly one of them: the least recently used (bound
or unbound last), which without reuse is the oldest.
"""

from __future__ import annotations

import re

import pytest

from dpctl import api
from dpctl.api import LogMsg
from e2e.recipe import Kubectl, ServerPatch, cuda_visible_devices, mkrs, name_of, unique_name
from helpers import wait_for

from .conftest import Dpctlr, Gpus, T
from .steps import Pod, assert_pair, only_runners, pair_ready, scale_to_zero_keeps_sleeper

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

LIMITS = pytest.mark.parametrize("dpctlr", [1, 2], indirect=True, ids=["SleeperLimit=1", "SleeperLimit=2"])


def _new_pair(kubectl: Kubectl, node: str) -> tuple[str, Pod, Pod]:
    rs = unique_name()
    kubectl.apply(mkrs(rs, ServerPatch(), node_selector={api.HOSTNAME_LABEL: node}))
    req, runner = pair_ready(kubectl, rs)
    return rs, req, runner


def _make_sleeper(kubectl: Kubectl, dpctlr: Dpctlr, node: str) -> tuple[str, Pod]:
    """ "Create a server-requesting Pod, wait for its server-running Pod to appear and become
    ready, then delete the server-requesting Pod; observe that the server-running Pod remains.\""""
    rs, req, runner = _new_pair(kubectl, node)
    return rs, scale_to_zero_keeps_sleeper(kubectl, dpctlr, rs, req, runner)


def _build_sleepers(kubectl: Kubectl, dpctlr: Dpctlr, gpus: Gpus) -> tuple[str, list[tuple[str, Pod]]]:
    """N+1 sleepers on one GPU, oldest first; nothing deleted on the way."""
    node = gpus.worker()
    gpus.leave_free(node, 1)
    sleepers = [_make_sleeper(kubectl, dpctlr, node) for _ in range(dpctlr.sleeper_limit + 1)]
    devices = {cuda_visible_devices(s) for _, s in sleepers}
    assert len(devices) == 1, f"the sleepers are on different GPUs: {devices}"
    assert only_runners(kubectl) == sorted(name_of(s) for _, s in sleepers)
    assert dpctlr.count(LogMsg.SLEEPER_LIMIT_DELETE) == 0
    return node, sleepers


def _one_more_deletes(
    kubectl: Kubectl,
    dpctlr: Dpctlr,
    gpu_map: dict[str, dict[str, int]],
    node: str,
    victim: Pod,
    kept: list[Pod],
) -> None:
    """One more requester on the GPU: its new runner's creation deletes exactly ``victim``."""
    _, req, runner = _new_pair(kubectl, node)
    assert_pair(req, runner, gpu_map)
    assert runner["metadata"]["uid"] not in {s["metadata"]["uid"] for s in [victim, *kept]}
    wait_for(lambda: kubectl.pod(name_of(victim)) is None, T, f"the sleeper {name_of(victim)} deleted")
    assert only_runners(kubectl) == sorted([name_of(runner), *(name_of(s) for s in kept)])
    deletions = dpctlr.lines(LogMsg.SLEEPER_LIMIT_DELETE)
    deleted = {m.group(1) for line in deletions if (m := re.search(r' runner="([^"]+)"', line))}
    assert deleted == {name_of(victim)}, deletions


@LIMITS
def test_example_8_one_more_runner_on_a_gpu_with_limit_plus_one_sleepers_deletes_the_oldest(
    kubectl: Kubectl, dpctlr: Dpctlr, gpu_map: dict[str, dict[str, int]], gpus: Gpus
) -> None:
    node, sleepers = _build_sleepers(kubectl, dpctlr, gpus)
    (_, oldest), *rest = sleepers
    _one_more_deletes(kubectl, dpctlr, gpu_map, node, oldest, [s for _, s in rest])


@LIMITS
def test_example_8_after_reusing_the_oldest_sleeper_the_least_recently_used_one_is_deleted(
    kubectl: Kubectl, dpctlr: Dpctlr, gpu_map: dict[str, dict[str, int]], gpus: Gpus
) -> None:
    node, sleepers = _build_sleepers(kubectl, dpctlr, gpus)
    (oldest_rs, oldest), (_, second), *rest = sleepers

    # "Make a server-requesting Pod that causes the oldest runner to be re-used. Then delete that
    # requester." Waking and binding a sleeper creates nothing, so nothing is deleted yet.
    kubectl.scale(oldest_rs, 1)
    req, runner = pair_ready(kubectl, oldest_rs)
    assert runner["metadata"]["uid"] == oldest["metadata"]["uid"]
    assert dpctlr.count(LogMsg.BOUND_RUNNER, runner=name_of(oldest)) == 1
    scale_to_zero_keeps_sleeper(kubectl, dpctlr, oldest_rs, req, runner)
    assert dpctlr.count(LogMsg.SLEEPER_LIMIT_DELETE) == 0

    # "Then force a deletion; observe that the deleted one is the least recently used."
    _one_more_deletes(kubectl, dpctlr, gpu_map, node, second, [oldest, *(s for _, s in rest)])
