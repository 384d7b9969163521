"""`dpctl status`: output formats of the sample fleet, flags and namespace defaulting, and the
reads against a fake API server on loopback (including unreachable and forbidden)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from dpctl import api, cli
from dpctl.status import cmd as statuscmd
from dpctl.status import fleet

from ..dualpods.fakes import gpu_map_cm, requester, runner
from .test_fleet import NOW, ready_node, sample_report

REPO = Path(__file__).resolve().parents[3]

GOLDEN_TABLE = """\
NODE     STATUS                     ALLOCATABLE   GPU-MAP
node-1   Ready                      4             4 GPUs
node-2   Ready,SchedulingDisabled   2             2 GPUs
node-3   NotReady                   2             invalid

NODE     GPU   UUID           REQUESTER   READY   RUNNER         READY   STATE   SLEEPERS
node-1   0     GPU-node-1-0   req-a       true    req-a-server   true    awake   old-c-server(120m),old-b-server(5m)
node-1   1     GPU-node-1-1   -           -       -              -       -       old-d-server(36h)
node-1   2     GPU-node-1-2   req-e       false   -              -       -       -
node-1   3     GPU-node-1-3   -           -       -              -       -       -
node-2   0     GPU-node-2-0   -           -       -              -       -       -
node-2   1     GPU-node-2-1   req-f       false   req-f-server   false   awake   -
node-3   -     GPU-node-3-0   req-g       false   -              -       -       -

OBJECT              ERROR
configmap/gpu-map   the gpu-map entry for node 'node-3' gives index 0 to both 'GPU-node-3-0' and 'GPU-node-3-1'
pod/req-e           the server-patch is not valid YAML: mapping values are not allowed here (line 3)
pod/req-g           the gpu-map entry for node 'node-3' gives index 0 to both 'GPU-node-3-0' and 'GPU-node-3-1'
pod/req-h           not scheduled yet: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.
"""


# ---------------------------------------------------------------- output formats


def test_table_of_the_sample_fleet() -> None:
    assert statuscmd.render(sample_report(), "table") == GOLDEN_TABLE


def test_json_is_the_model_dumped_with_stable_camel_case_keys() -> None:
    report = sample_report()
    out = statuscmd.render(report, "json")
    doc = json.loads(out)
    assert list(doc) == [
        "namespace",
        "generatedAt",
        "nodesReadable",
        "gpuMapFound",
        "nodes",
        "launchers",
        "errors",
    ]
    assert list(doc["nodes"][0]) == [
        "name",
        "found",
        "ready",
        "cordoned",
        "allocatableGpus",
        "gpuMapEntry",
        "gpus",
    ]
    assert doc["generatedAt"] == "2026-01-02T12:00:00Z"
    pair = doc["nodes"][0]["gpus"][0]
    assert pair["runner"] == {
        "name": "req-a-server",
        "ready": True,
        "sleeping": False,
        "terminating": False,
        "lastUsed": "2026-01-02T11:58:00Z",
    }
    assert [s["lastUsed"] for s in pair["sleepers"]] == ["2026-01-02T10:00:00Z", "2026-01-02T11:55:00Z"]
    assert fleet.FleetReport.model_validate_json(out) == report


def test_yaml_is_the_same_document() -> None:
    report = sample_report()
    doc = yaml.safe_load(statuscmd.render(report, "yaml"))
    assert doc == json.loads(statuscmd.render(report, "json"))
    assert fleet.FleetReport.model_validate(doc) == report


def test_an_empty_namespace_says_so() -> None:
    report = fleet.build("empty", [], [ready_node("cpu", gpus=0)], gpu_map_cm({}), NOW)
    assert statuscmd.render_table(report) == (
        "No GPUs, requesters, runners or launchers found in empty namespace.\n"
    )


def test_terminating_runners_in_the_table() -> None:
    pods = [
        requester("req-a", "uid-a"),
        runner("req-a-server", "uid-r", gpus=(0,), deleting=True),
        runner("s-server", "uid-s", gpus=(0,), bound_to=None, deleting=True, used_at="2026-01-02T11:59:00Z"),
    ]
    report = fleet.build("ns", pods, [ready_node("node-1", gpus=1)], gpu_map_cm({"node-1": 1}), NOW)
    row = statuscmd.render_table(report).splitlines()[4].split()
    assert row[-2:] == ["terminating", "s-server(60s,terminating)"]


def test_the_map_column_counts_only_what_the_map_lists() -> None:
    pods = [runner("lost-server", "uid-l", gpus=(7,), bound_to=None)]
    report = fleet.build("ns", pods, [ready_node("node-1", gpus=1)], gpu_map_cm({"node-1": 1}), NOW)
    lines = statuscmd.render_table(report).splitlines()
    assert lines[1].split() == ["node-1", "Ready", "1", "1", "GPU"]
    assert lines[5].split() == ["node-1", "7", "-", "-", "-", "-", "-", "-", "lost-server(35h)"]


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-5, "0s"),
        (0, "0s"),
        (59, "59s"),
        (119, "119s"),
        (125, "2m5s"),
        (300, "5m"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600 + 20 * 60, "3h20m"),
        (7 * 3600, "7h"),
        (30 * 3600, "30h"),
        (3 * 86400 + 5 * 3600, "3d5h"),
        (2 * 86400, "2d"),
        (100 * 86400, "100d"),
        (3 * 365 * 86400 + 10 * 86400, "3y10d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_ages_read_like_kubectl(seconds: int, shown: str) -> None:
    assert statuscmd.age(dt.timedelta(seconds=seconds)) == shown


# ---------------------------------------------------------------- flags and namespace


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    statuscmd.add_arguments(parser)
    return parser.parse_args(argv)


def test_kubectl_global_flags_are_accepted_in_either_spelling() -> None:
    args = parse("--namespace=team-a", "--kubeconfig", "/k", "--context=c1", "-o", "yaml")
    assert (args.namespace, args.kubeconfig, args.context, args.output) == ("team-a", "/k", "c1", "yaml")
    args = parse("-n", "team-b")
    assert (args.namespace, args.kubeconfig, args.context, args.output) == ("team-b", None, None, "table")


def write_kubeconfig(path: Path, server: str, namespaces: dict[str, str | None], current: str) -> Path:
    contexts = []
    for name, ns in namespaces.items():
        context: dict[str, Any] = {"cluster": "c", "user": "u"}
        if ns:
            context["namespace"] = ns
        contexts.append({"name": name, "context": context})
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": contexts,
        "current-context": current,
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def test_namespace_defaults_to_the_kubeconfig_contexts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kc = str(
        write_kubeconfig(
            tmp_path / "kc", "http://127.0.0.1:1", {"one": "team-a", "two": "team-b", "bare": None}, "one"
        )
    )
    assert statuscmd.default_namespace(kc, None) == "team-a"
    assert statuscmd.default_namespace(kc, "two") == "team-b"
    assert statuscmd.default_namespace(kc, "bare") == "default"
    assert statuscmd.default_namespace(str(tmp_path / "missing"), None) == "default"


def test_namespace_in_a_pod_is_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "namespace").write_text("dpctl-system\n")
    monkeypatch.setattr(statuscmd, "SERVICE_ACCOUNT_NAMESPACE", tmp_path / "namespace")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    assert statuscmd.default_namespace(None, None) == "dpctl-system"
    monkeypatch.setenv("POD_NAMESPACE", "from-env")
    assert statuscmd.default_namespace(None, None) == "from-env"


def test_status_is_a_dpctl_subcommand_and_a_kubectl_plugin() -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["status", "--help"])
    assert exit_.value.code == 0
    plugin = REPO / "hack" / "kubectl-dpctl"
    assert os.access(plugin, os.X_OK)
    # As kubectl runs a plugin: found on PATH, arguments after the plugin name passed unchanged.
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    done = subprocess.run(
        [str(plugin), "status", "--help"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "--namespace" in done.stdout and "--kubeconfig" in done.stdout and "--context" in done.stdout


# ---------------------------------------------------------------- against an API server


def status_body(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message}
    return web.json_response(body, status=code)


class FakeApi:
    """Answers the three reads `dpctl status` makes, or refuses them as told."""

    def __init__(self) -> None:
        self.pods: list[dict[str, Any]] = []
        self.nodes: list[dict[str, Any]] = []
        self.gpu_map: dict[str, Any] | None = None
        self.forbid: set[str] = set()
        self.seen: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{ns}/pods", self._list("pods", lambda: self.pods))
        app.router.add_get("/api/v1/nodes", self._list("nodes", lambda: self.nodes))
        app.router.add_get("/api/v1/namespaces/{ns}/configmaps/{name}", self._configmap)
        return app

    def _list(self, what: str, items: Callable[[], list[dict[str, Any]]]) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.Response:
            self.seen.append(request.path)
            if what in self.forbid:
                return status_body(
                    403, "Forbidden", f'{what} is forbidden: User "u" cannot list resource "{what}"'
                )
            return web.json_response({"kind": "List", "metadata": {"resourceVersion": "7"}, "items": items()})

        return handler

    async def _configmap(self, request: web.Request) -> web.Response:
        self.seen.append(request.path)
        if "configmaps" in self.forbid:
            return status_body(403, "Forbidden", 'configmaps "gpu-map" is forbidden')
        if self.gpu_map is None or request.match_info["name"] != api.GPU_MAP_NAME:
            return status_body(404, "NotFound", f'configmaps "{request.match_info["name"]}" not found')
        return web.json_response(self.gpu_map)


@pytest.fixture
async def fake_api(tmp_path: Path) -> AsyncIterator[tuple[FakeApi, str]]:
    fake = FakeApi()
    runner_ = web.AppRunner(fake.app())
    await runner_.setup()
    site = web.TCPSite(runner_, "127.0.0.1", 0)
    await site.start()
    port = runner_.addresses[0][1]
    kc = write_kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{port}", {"ctx": "team-a"}, "ctx")
    yield fake, str(kc)
    await runner_.cleanup()


async def test_collect_reads_pods_nodes_and_the_gpu_map(fake_api: tuple[FakeApi, str]) -> None:
    fake, kc = fake_api
    fake.pods = [requester("req-a", "uid-a", ready=True), runner("req-a-server", "uid-r", gpus=(1,))]
    fake.nodes = [ready_node("node-1", gpus=2)]
    fake.gpu_map = gpu_map_cm({"node-1": 2})
    report = await statuscmd.collect("team-a", kc, None)
    assert fake.seen == [
        "/api/v1/namespaces/team-a/pods",
        "/api/v1/nodes",
        "/api/v1/namespaces/team-a/configmaps/gpu-map",
    ]
    assert report.nodes_readable and report.gpu_map_found and report.errors == ()
    (n,) = report.nodes
    assert n.gpus[1].requester == fleet.PodRef(name="req-a", ready=True)
    assert n.gpus[1].runner is not None and n.gpus[1].runner.name == "req-a-server"


async def test_forbidden_nodes_and_absent_gpu_map_are_part_of_the_report(
    fake_api: tuple[FakeApi, str],
) -> None:
    fake, kc = fake_api
    fake.forbid = {"nodes"}
    report = await statuscmd.collect("team-a", kc, None)
    assert not report.nodes_readable and not report.gpu_map_found
    assert [p.object for p in report.errors] == ["configmap/gpu-map", "nodes"]


@pytest.mark.parametrize("what", ["pods", "configmaps"])
async def test_forbidden_pods_or_configmaps_stop_it(fake_api: tuple[FakeApi, str], what: str) -> None:
    fake, kc = fake_api
    fake.forbid = {what}
    with pytest.raises(statuscmd.StatusError, match=r"^forbidden: .*is forbidden"):
        await statuscmd.collect("team-a", kc, None)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_run_exits_1_when_the_api_server_is_unreachable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = f"http://127.0.0.1:{closed_port()}"
    kc = write_kubeconfig(tmp_path / "kc", server, {"ctx": "team-a"}, "ctx")
    assert statuscmd.run(parse("--kubeconfig", str(kc))) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"dpctl status: cannot reach the API server at {server}: ")


def test_run_exits_1_without_credentials(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing"
    assert statuscmd.run(parse("-n", "x", "--kubeconfig", str(missing))) == 1
    assert capsys.readouterr().err == f"dpctl status: kubeconfig {missing} does not exist\n"
    (tmp_path / "empty").write_text("apiVersion: v1\nkind: Config\n")
    assert statuscmd.run(parse("-n", "x", "--kubeconfig", str(tmp_path / "empty"))) == 1
    assert capsys.readouterr().err.startswith("dpctl status: cannot load Kubernetes credentials: ")


async def test_run_prints_the_report(
    fake_api: tuple[FakeApi, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, kc = fake_api
    fake.gpu_map = gpu_map_cm({"node-1": 1})
    fake.nodes = [ready_node("node-1", gpus=1)]
    # run() owns its event loop, as the command does; this test's loop serves the fake meanwhile.
    code = await asyncio.to_thread(statuscmd.run, parse("--kubeconfig", kc, "-o", "json"))
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["namespace"] == "team-a"  # from the kubeconfig's context
    assert fake.seen[0] == "/api/v1/namespaces/team-a/pods"
