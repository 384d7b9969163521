"""Bad input, one row each (contract §6 invariant 6): every bad annotation, ``gpu-map`` entry, stub
answer and inference-server answer ends in a status error and/or an Event whose words say what is
wrong, and never in a controller crash (the process lives, its log has no traceback), a tight
retry loop (the controller's API writes and HTTP calls over a window after the error are
counted from its /metrics) or a change to the healthy pair that shares the namespace (same Pod
UIDs, still Ready).

The table in docs/reliability.md lists the same rows with what a user sees.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from dpctl import api
from dpctl.dualpods import podview
from dpctl.faults import ENABLE_ENV, RULES_ENV
from e2e.recipe import ServerPatch, is_ready, runners, status_errors
from helpers import wait_for

from .conftest import GOOD_PATCH, HEALTHY_NODE, ROW_NODE, TIMEOUT, Calls, Setup, create_pod, requester_pod

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

# How long the controller's calls are counted once the error shows, and what "not a loop" allows
# in that time: a user error is written once and then waits for a change; a failing stub is asked
# again with per-item backoff (doubling, at most 20 s apart).
WINDOW_S = 20.0
MAX_WRITES = 2
MAX_HTTP = 6


def _patch_with(change: Callable[[dict[str, Any]], None]) -> str:
    doc = yaml.safe_load(GOOD_PATCH.text())
    change(doc)
    return yaml.safe_dump(doc, sort_keys=False)


def _server(doc: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = doc["spec"]["containers"][0]
    return container


def _probe_port(port: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: _server(d)["readinessProbe"]["httpGet"].__setitem__("port", port)


def _spec_field(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["spec"].__setitem__(key, value)


# The runner's containerPort is out of range: dpctl's own validation checks types, the API server
# checks ranges, so only the create is refused.
_INVALID_PORT = 70000
ELSEWHERE = f"must run on the requester's Node '{ROW_NODE}'"


def _map_entry(node: str, text: str) -> Callable[[dict[str, dict[str, int]]], dict[str, str]]:
    def data(good: dict[str, dict[str, int]]) -> dict[str, str]:
        out = {n: json.dumps(m) for n, m in good.items()}
        out[node] = text
        return out

    return data


def _duplicate_index(good: dict[str, dict[str, int]]) -> dict[str, str]:
    out = {n: json.dumps(m) for n, m in good.items()}
    out[ROW_NODE] = json.dumps(dict.fromkeys(good[ROW_NODE], 0))
    return out


def _uuids_on_other_node(good: dict[str, dict[str, int]]) -> dict[str, str]:
    """node-2's GPUs listed under node-1 instead."""
    out = {n: json.dumps(m) for n, m in good.items()}
    other = next(n for n in good if n != ROW_NODE)
    out[other] = json.dumps({**good[other], **{u: 10 + i for u, i in good[ROW_NODE].items()}})
    out[ROW_NODE] = json.dumps({})
    return out


def _stub_env(*rules: Mapping[str, Any]) -> dict[str, str]:
    return {ENABLE_ENV: "1", RULES_ENV: json.dumps(list(rules))}


@dataclass(frozen=True)
class Row:
    id: str
    words: tuple[str, ...]  # all in one status error
    event: str = ""  # reason of a Warning Event about the requester, when there is one
    patch: ServerPatch | str | None = GOOD_PATCH
    admin_port: str | None = "8081"
    env: Mapping[str, str] = field(default_factory=dict)
    gpu_map: Callable[[dict[str, dict[str, int]]], Mapping[str, str] | None] | None = None


PATCH = api.ORIGINAL.server_patch
BIG = "# " + "x" * (250 * 1024) + "\n" + GOOD_PATCH.text()  # the API server allows 256 KiB of annotations

ROWS = [
    Row("not-yaml", (PATCH, "invalid YAML"), "BadServerPatch", patch="spec: [unclosed\n  containers: {\n"),
    Row(
        "not-a-mapping", (PATCH, "must be a YAML mapping", "not a list"), "BadServerPatch", patch="- a\n- b\n"
    ),
    Row(
        "unknown-field",
        ("the patched Pod is invalid", 'unknown field "spec.containers[0].bogusField"'),
        "BadServerPatch",
        patch=_patch_with(lambda d: _server(d).__setitem__("bogusField", 1)),
    ),
    Row(
        "wrong-type",
        ("the patched Pod is invalid", "spec.containers[0].command: expected a list"),
        "BadServerPatch",
        patch=_patch_with(lambda d: _server(d).__setitem__("command", "vllm serve")),
    ),
    Row(
        "inference-server-deleted",
        ('there is no container named "inference-server"',),
        "BadServerPatch",
        patch="spec:\n  containers:\n  - name: inference-server\n    $patch: delete\n",
    ),
    Row(
        "no-readiness-probe",
        ("readinessProbe.httpGet.port is missing",),
        "BadServerPatch",
        patch=_patch_with(lambda d: _server(d).__setitem__("readinessProbe", None)),
    ),
    Row(
        "named-port",
        ('named port "metrics" is not supported; give the number',),
        "BadServerPatch",
        patch=_patch_with(_probe_port("metrics")),
    ),
    Row(
        "template-syntax",
        (PATCH, "line 3", "Unexpected end of template"),
        "BadServerPatch",
        patch="metadata:\n  labels:\n    a: '{% if true %}x'\n",
    ),
    Row(
        "template-unknown-variable",
        ("no field 'Foo' in the template data (available: .NodeName)",),
        "BadServerPatch",
        patch="metadata:\n  labels:\n    node: '{{ .Foo }}'\n",
    ),
    Row(
        "sandbox-escape-call",
        ("function calls cannot be used in this template",),
        "BadServerPatch",
        patch="metadata:\n  labels:\n    x: '{{ cycler.__init__.__globals__.os.popen(\"id\").read() }}'\n",
    ),
    Row(
        "sandbox-escape-attribute",
        ("attribute access cannot be used in this template",),
        "BadServerPatch",
        patch="metadata:\n  labels:\n    x: '{{ self._TemplateReference__context }}'\n",
    ),
    Row(
        "sandbox-escape-include",
        ("{% include %} cannot be used in this template",),
        "BadServerPatch",
        patch="{% include '/etc/passwd' %}\n",
    ),
    Row("oversized-annotation", (PATCH, "bytes long; the limit is 65536"), "BadServerPatch", patch=BIG),
    Row(
        "patch-moves-node-name",
        (PATCH, f"spec.nodeName is '{HEALTHY_NODE}'", ELSEWHERE),
        "BadServerPatch",
        patch=_patch_with(_spec_field("nodeName", HEALTHY_NODE)),
    ),
    Row(
        "patch-moves-hostname-selector",
        (PATCH, f"spec.nodeSelector['{api.HOSTNAME_LABEL}'] is '{HEALTHY_NODE}'", ELSEWHERE),
        "BadServerPatch",
        patch=_patch_with(_spec_field("nodeSelector", {api.HOSTNAME_LABEL: HEALTHY_NODE})),
    ),
    Row(
        "patch-moves-node-affinity",
        (PATCH, "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution", ELSEWHERE),
        "BadServerPatch",
        patch=_patch_with(
            _spec_field(
                "affinity",
                {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {
                                            "key": api.HOSTNAME_LABEL,
                                            "operator": "In",
                                            "values": [HEALTHY_NODE],
                                        }
                                    ]
                                }
                            ]
                        }
                    }
                },
            )
        ),
    ),
    Row(
        "runner-refused-invalid",
        ("the server-running Pod", "is invalid", f"Invalid value: {_INVALID_PORT}"),
        "RunnerRefused",
        patch=_patch_with(lambda d: _server(d).__setitem__("ports", [{"containerPort": _INVALID_PORT}])),
    ),
    Row(
        "admin-port-not-a-number",
        (api.ORIGINAL.admin_port, "is not a port number"),
        "BadAdminPort",
        admin_port="eighty",
    ),
    Row(
        "admin-port-out-of-range",
        (api.ORIGINAL.admin_port, "out of range (1-65535)"),
        "BadAdminPort",
        admin_port="70000",
    ),
    Row("gpu-map-missing", ("ConfigMap gpu-map is not available",), "GpuMap", gpu_map=lambda _: None),
    Row(
        "gpu-map-entry-not-json",
        (f"entry for node '{ROW_NODE}' is not valid JSON",),
        "GpuMap",
        gpu_map=_map_entry(ROW_NODE, "{not json"),
    ),
    Row(
        "gpu-map-entry-wrong-types",
        ("an index must be an integer >= 0",),
        "GpuMap",
        gpu_map=_map_entry(ROW_NODE, '{"GPU-0000": "zero"}'),
    ),
    Row("gpu-map-duplicate-indices", ("gives index 0 to both",), "GpuMap", gpu_map=_duplicate_index),
    Row(
        "gpu-map-uuid-on-another-node",
        ("is mapped to node", f"but the requester runs on node '{ROW_NODE}'"),
        "GpuMap",
        gpu_map=_uuids_on_other_node,
    ),
    Row(
        "stub-not-json",
        ("cannot get the GPUs from the requester", "response is not JSON"),
        env=_stub_env({"path": api.ORIGINAL.accelerators_path, "status": 200, "body": "<html>oops"}),
    ),
    Row(
        "stub-empty",
        ("cannot get the GPUs from the requester", "empty response body"),
        env=_stub_env({"path": api.ORIGINAL.accelerators_path, "status": 200, "body": ""}),
    ),
    Row(
        "stub-500",
        ("cannot get the GPUs from the requester", "HTTP 500"),
        env=_stub_env({"path": api.ORIGINAL.accelerators_path, "status": 500, "body": "nvidia-smi failed"}),
    ),
    Row(
        "stub-hangs",
        ("cannot get the GPUs from the requester", "timed out after 5 s"),
        env=_stub_env({"path": api.ORIGINAL.accelerators_path, "hang": True}),
    ),
]


def _events_about(setup: Setup, name: str) -> list[dict[str, Any]]:
    items = setup.kubectl.get_json("events", "--field-selector", f"involvedObject.name={name}")["items"]
    return list(items)


def _row_pods(setup: Setup, row: str) -> list[dict[str, Any]]:
    return [p for p in setup.kubectl.pods() if podview.labels(p).get("row") == row]


def _cleanup(setup: Setup, row: str) -> None:
    setup.kubectl.run("delete", "pods", "-l", f"row={row}", "--wait=false", check=False)
    wait_for(lambda: not _row_pods(setup, row), TIMEOUT, f"the pods of row {row} gone")


def _window(setup: Setup) -> Calls:
    """The controller's calls over WINDOW_S, while the healthy pair and the controller are watched."""
    before = setup.calls()
    deadline = time.monotonic() + WINDOW_S
    while time.monotonic() < deadline:
        problems = setup.healthy_problems() + setup.controller_problems()
        assert not problems, problems
        time.sleep(1.0)  # the window is a measurement interval; each pass checks a condition
    return setup.calls().minus(before)


def _assert_undisturbed(setup: Setup) -> None:
    assert setup.healthy_problems() == []
    assert setup.controller_problems() == []


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id) for r in ROWS])
def test_bad_input_row(setup: Setup, row: Row) -> None:
    name = f"bad-{row.id}"[:50]
    if row.gpu_map is not None:
        setup.apply_gpu_map(row.gpu_map(setup.gpu_map))
    try:
        create_pod(
            setup.kubectl,
            requester_pod(name, row.id, row.patch, admin_port=row.admin_port, env=row.env or None),
        )

        def error() -> str:
            pod = setup.kubectl.pod(name)
            found = [e for e in status_errors(pod) if all(w in e for w in row.words)] if pod else []
            return found[0] if found else ""

        message = wait_for(error, TIMEOUT, f"a status error with {row.words}")
        if row.event:
            events = wait_for(
                lambda: [
                    e
                    for e in _events_about(setup, name)
                    if e.get("reason") == row.event
                    and e.get("type") == "Warning"
                    and message in e.get("message", "")
                ],
                60,
                f"a Warning Event {row.event} saying {message!r}",
            )
            assert events
        calls = _window(setup)
        assert calls.writes <= MAX_WRITES, f"{calls.api_writes} API writes in {WINDOW_S:g} s: a retry loop"
        assert calls.http <= MAX_HTTP, f"{calls.http} HTTP calls in {WINDOW_S:g} s: a retry loop"
        pod = setup.kubectl.pod(name)
        assert pod is not None and message in status_errors(pod), "the error went away by itself"
        assert not [r for r in runners(setup.kubectl.pods()) if podview.labels(r).get("row") == row.id]
        assert not [v for v in setup.ledger.violations() if name in v.intruder.pod]
        _assert_undisturbed(setup)
    finally:
        _cleanup(setup, row.id)
        if row.gpu_map is not None:
            setup.apply_gpu_map(setup.good_gpu_map_data())


def test_pod_without_server_patch_is_not_a_requester(setup: Setup) -> None:
    """Only the admin-port annotation: not a requester at all, so the controller leaves it alone."""
    name = "bad-no-server-patch"
    create_pod(setup.kubectl, requester_pod(name, "no-server-patch", None))
    try:
        wait_for(lambda: _running(setup, name), TIMEOUT, f"{name} running")
        calls = _window(setup)
        pod = setup.kubectl.pod(name)
        assert pod is not None
        assert api.ORIGINAL.status not in podview.annotations(pod)
        assert not podview.finalizers(pod)
        assert not _events_about(setup, name) or all(
            e.get("source", {}).get("component") != "dual-pods-controller"
            and e.get("reportingComponent") != "dual-pods-controller"
            for e in _events_about(setup, name)
        )
        assert not [
            r for r in runners(setup.kubectl.pods()) if podview.labels(r).get("row") == "no-server-patch"
        ]
        assert name not in setup.controller.log()
        assert calls.writes == 0 and calls.http == 0, calls
        _assert_undisturbed(setup)
    finally:
        _cleanup(setup, "no-server-patch")


def _running(setup: Setup, name: str) -> bool:
    pod = setup.kubectl.pod(name)
    return pod is not None and podview.container_running(pod)


def _bound_pair(setup: Setup, name: str) -> tuple[dict[str, Any], Mapping[str, Any]] | None:
    pods = setup.kubectl.pods()
    req = next((p for p in pods if podview.name(p) == name and not podview.is_deleting(p)), None)
    if req is None:
        return None
    for p in runners(pods):
        bound = podview.bound_requester(p)
        if bound and bound[0] == podview.uid(req):
            return req, p
    return None


def _served(setup: Setup, name: str) -> tuple[dict[str, Any], Mapping[str, Any]]:
    def ready_pair() -> tuple[dict[str, Any], Mapping[str, Any]] | None:
        pair = _bound_pair(setup, name)
        return pair if pair and is_ready(pair[0]) and is_ready(pair[1]) else None

    return wait_for(ready_pair, TIMEOUT, f"{name} served (bound and Ready)")


def _runner_events(setup: Setup, runner: str, reason: str, words: str) -> list[dict[str, Any]]:
    return [
        e for e in _events_about(setup, runner) if e.get("reason") == reason and words in e.get("message", "")
    ]


@pytest.mark.parametrize(
    "patch",
    [
        pytest.param(ServerPatch(startup_delay_s=1.0, sleep_mode=False), id="no-sleep-mode"),
        pytest.param(
            ServerPatch(
                startup_delay_s=1.0,
                extra_env=_stub_env({"path": api.SLEEP_PATH, "status": 404, "body": "Not Found"}),
            ),
            id="sleep-answers-404",
        ),
    ],
)
def test_server_that_cannot_sleep_is_deleted_on_unbind(setup: Setup, patch: ServerPatch) -> None:
    row = "cannot-sleep"
    name = "bad-cannot-sleep"
    create_pod(setup.kubectl, requester_pod(name, row, patch))
    try:
        _, runner = _served(setup, name)
        runner_name = podview.name(runner)
        setup.kubectl.run("delete", "pod", name, "--wait=false")
        wait_for(
            lambda: not _row_pods(setup, row), TIMEOUT, "the requester and its runner gone (not kept asleep)"
        )
        events = wait_for(
            lambda: _runner_events(setup, runner_name, "RunnerDeleted", "no-sleep-mode"),
            60,
            "a RunnerDeleted Event saying no-sleep-mode",
        )
        assert events[0]["type"] == "Warning"
        assert "Traceback" not in setup.controller.log()
        _assert_undisturbed(setup)
    finally:
        _cleanup(setup, row)


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        pytest.param(
            {"path": api.WAKE_UP_PATH, "status": 500, "body": "CUDA error: out of memory"},
            "HTTP 500",
            id="wake-500",
        ),
        pytest.param({"path": api.WAKE_UP_PATH, "hang": True}, "timed out after 30 s", id="wake-hangs"),
    ],
)
def test_sleeper_that_cannot_wake_is_replaced(setup: Setup, rule: dict[str, Any], words: str) -> None:
    """A sleeper whose /wake_up fails: the next requester shows why, the runner is deleted after
    repeated failures (and that requester with it, for its ReplicaSet to replace), nothing loops."""
    row = f"cannot-wake-{'hang' if rule.get('hang') else '500'}"
    patch = ServerPatch(startup_delay_s=1.0, extra_env=_stub_env(rule))
    first, second = f"{row}-a", f"{row}-b"
    create_pod(setup.kubectl, requester_pod(first, row, patch))
    try:
        _, runner = _served(setup, first)  # a cold start never calls /wake_up
        runner_name = podview.name(runner)
        setup.kubectl.run("delete", "pod", first, "--wait=false")

        def asleep() -> bool:
            pod = setup.kubectl.pod(runner_name)
            return bool(pod and podview.bound_requester(pod) is None and setup.kubectl.pod(first) is None)

        wait_for(asleep, TIMEOUT, f"{runner_name} asleep and unbound")
        before = setup.calls()
        create_pod(setup.kubectl, requester_pod(second, row, patch))  # same node, same GPU, same definition

        def error() -> str:
            pod = setup.kubectl.pod(second)
            found = [e for e in status_errors(pod) if "cannot wake the inference server" in e] if pod else []
            return found[0] if found else ""

        message = wait_for(error, 180, "a status error saying the sleeper cannot be woken")
        assert words in message
        wait_for(
            lambda: _runner_events(setup, runner_name, "RunnerDeleted", "wake-failed"),
            240,
            "the runner deleted after repeated wake failures",
        )
        wait_for(lambda: not _row_pods(setup, row), TIMEOUT, "the runner and its requester gone")
        calls = setup.calls().minus(before)
        assert calls.http <= 40, f"{calls.http} HTTP calls while failing to wake: a retry loop"
        assert not [v for v in setup.ledger.violations() if row in v.intruder.pod]
        _assert_undisturbed(setup)
    finally:
        _cleanup(setup, row)


def test_refused_runner_is_tried_again_when_the_requester_changes_and_its_error_then_goes(
    setup: Setup,
) -> None:
    """A runner the API server refuses waits for the requester to change; a fixed server-patch
    then gets a runner, and the status error goes with the condition it described."""
    row, name = "refused-then-fixed", "bad-refused-then-fixed"
    bad = _patch_with(lambda d: _server(d).__setitem__("ports", [{"containerPort": _INVALID_PORT}]))
    create_pod(setup.kubectl, requester_pod(name, row, bad))
    try:

        def refusal() -> str:
            pod = setup.kubectl.pod(name)
            found = [e for e in status_errors(pod) if "is invalid" in e] if pod else []
            return found[0] if found else ""

        wait_for(refusal, TIMEOUT, "the API server's refusal in the status annotation")
        creates = setup.calls().api_writes.get("pods", 0.0)
        setup.kubectl.run("annotate", "pod", name, "example.com/touched=1")  # a change, not a fix
        wait_for(
            lambda: setup.calls().api_writes.get("pods", 0.0) > creates,
            TIMEOUT,
            "the runner's create sent again after the requester changed",
        )
        assert refusal(), "the refusal still holds, so its error stays"
        setup.kubectl.run(
            "annotate", "pod", name, "--overwrite", f"{api.ORIGINAL.server_patch}={GOOD_PATCH.text()}"
        )
        _served(setup, name)
        wait_for(
            lambda: (pod := setup.kubectl.pod(name)) is not None and status_errors(pod) == [],
            TIMEOUT,
            "the status error gone once the runner exists",
        )
        assert "Traceback" not in setup.controller.log()
        assert "failed unexpectedly" not in setup.controller.log()
        assert not [v for v in setup.ledger.violations() if name in v.intruder.pod]
        _assert_undisturbed(setup)
    finally:
        _cleanup(setup, row)
