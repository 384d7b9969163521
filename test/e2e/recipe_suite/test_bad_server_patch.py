"""A broken server-patch is the user's mistake: the requester's status annotation says what is
wrong and where, no runner is made, the controller does not loop on it, and fixing the
ReplicaSet's template (then replacing its Pod) recovers.
"""

from __future__ import annotations

import json

import pytest

from dpctl import api
from dpctl.api import LogMsg
from e2e.recipe import Kubectl, ServerPatch, mkrs, name_of, status_errors, unique_name
from helpers import wait_for

from .conftest import Dpctlr, T
from .steps import assert_pair, live_requesters, only_runners, pair_ready

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

GOOD = ServerPatch().text()
# (the broken patch, words the status error must contain)
BROKEN = {
    "yaml-error": (GOOD.replace("metadata:\n", "metadata: [\n", 1), ["invalid YAML", "line "]),
    "unknown-field": (
        GOOD.replace("readinessProbe:", "readinessProbez:", 1),
        ['unknown field "spec.containers[0].readinessProbez"'],
    ),
    "template-error": (
        GOOD.replace("--port=8000", "--port=8000-{{ .NodeNam }}", 1),
        ["no field 'NodeNam'", ".NodeName"],
    ),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_broken_server_patch_is_a_status_error_without_runner_and_fixing_the_template_recovers(
    kubectl: Kubectl, dpctlr: Dpctlr, gpu_map: dict[str, dict[str, int]], kind: str, dialect: api.Dialect
) -> None:
    patch, words = BROKEN[kind]
    rs = unique_name()
    kubectl.apply(mkrs(rs, patch))
    (req,) = wait_for(
        lambda: [r for r in live_requesters(kubectl, rs) if status_errors(r)],
        T,
        "a status error on the requester",
    )
    (error,) = status_errors(req)
    assert error.startswith(dialect.server_patch), error
    for w in words:
        assert w in error, f"{w!r} not in the status error {error!r}"
    dpctlr.wait_processed(0, "the requester")
    assert only_runners(kubectl) == []
    assert dpctlr.count("Server-requesting Pod cannot be served", requester=name_of(req)) == 1
    assert dpctlr.count(LogMsg.CREATED_RUNNER) == 0
    events = kubectl.run("get", "events", "--field-selector", f"involvedObject.name={name_of(req)}")
    assert "BadServerPatch" in events, events

    # Fix the ReplicaSet's template; the ReplicaSet keeps its Pod, so replace it.
    kubectl.apply(mkrs(rs, ServerPatch()))
    kubectl.delete_pod(name_of(req))
    req2, runner = pair_ready(kubectl, rs)
    assert name_of(req2) != name_of(req)
    assert_pair(req2, runner, gpu_map)


def test_a_requester_with_both_dialects_server_patches_gets_a_status_error_in_both_and_nothing_else(
    kubectl: Kubectl, dpctlr: Dpctlr, gpu_map: dict[str, dict[str, int]], dialect: api.Dialect
) -> None:
    rs = unique_name()
    both = mkrs(rs, ServerPatch())
    annotations = both["spec"]["template"]["metadata"]["annotations"]
    (other,) = [d for d in api.DIALECTS if d is not dialect]
    annotations[other.server_patch] = annotations[dialect.server_patch]
    kubectl.apply(both)
    (req,) = wait_for(
        lambda: [
            r
            for r in live_requesters(kubectl, rs)
            if all(d.status in (r["metadata"].get("annotations") or {}) for d in api.DIALECTS)
        ],
        T,
        "the status annotation of both dialects on the requester",
    )
    for d in api.DIALECTS:
        (error,) = json.loads(req["metadata"]["annotations"][d.status])["Errors"]
        assert api.ORIGINAL.server_patch in error and api.HEAD.server_patch in error, error
    dpctlr.wait_processed(0, "the requester")
    assert only_runners(kubectl) == []
    assert dpctlr.count("Server-requesting Pod cannot be served", requester=name_of(req)) == 1
    events = kubectl.run("get", "events", "--field-selector", f"involvedObject.name={name_of(req)}")
    assert "TwoDialects" in events, events
