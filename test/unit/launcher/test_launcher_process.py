"""`dpctl launcher` as a real process over real HTTP (L1–L10), its instances real children: the
vLLM emulator (as in the local cluster), ``env`` (a child that prints its environment and exits
at once) and a child that ignores SIGTERM. No cluster: each launcher serves on a loopback port.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.client import HTTPResponse
from pathlib import Path
from typing import Any

import pytest

from dpctl.clients import HttpCallError, HttpClient, LauncherClient
from dpctl.launcher.main import add_arguments
from dpctl.launcher.notifier import HttpLauncher, signature
from helpers import wait_for

EMULATOR = f"{sys.executable} -m dpctl vllm-emulator serve"
# Ignores SIGTERM, as does the grandchild it starts; both pids go to the log first.
STUBBORN = (
    f'{sys.executable} -c "import os,signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN);'
    " pid=os.fork(); print('pids', os.getpid(), pid if pid else os.getpid(), flush=True); time.sleep(600)\""
)
GRACE_S = 1.0
START_DEADLINE_S = 30.0
IO_TIMEOUT_S = 10.0


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Launcher:
    url: str
    proc: subprocess.Popen[bytes]
    log_dir: Path
    out: Path

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Reply:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=IO_TIMEOUT_S) as resp:
                return Reply(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as e:
            return Reply(e.code, dict(e.headers), e.read())

    def put(self, instance_id: str, options: str, **fields: Any) -> Reply:
        return self.call("PUT", f"/v2/vllm/instances/{instance_id}", {"options": options, **fields})

    def state(self, instance_id: str) -> dict[str, Any]:
        reply = self.call("GET", f"/v2/vllm/instances/{instance_id}")
        assert reply.status == 200, reply
        state: dict[str, Any] = reply.json()
        return state

    def log_text(self, instance_id: str) -> str:
        reply = self.call("GET", f"/v2/vllm/instances/{instance_id}/log")
        return reply.body.decode() if reply.status == 200 else ""

    def watch(self, query: str = "") -> HTTPResponse:
        resp: HTTPResponse = urllib.request.urlopen(
            self.url + "/v2/vllm/instances/watch" + query, timeout=IO_TIMEOUT_S
        )
        return resp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_launcher(tmp: Path, command: str) -> Launcher:
    port = free_port()
    log_dir = tmp / "logs"
    log_dir.mkdir()
    out = tmp / "launcher.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPCTL_")}
    # The emulator loads its "model" at once and offers /sleep and /wake_up, as in the local cluster.
    env.update(VLLM_EMULATOR_STARTUP_DELAY="0", VLLM_SERVER_DEV_MODE="1", DPCTL_LISTEN_HOST="127.0.0.1")
    with out.open("wb") as f:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("dpctl")),
                "launcher",
                "--port",
                str(port),
                "--mock-gpus",
                "--mock-gpu-count",
                "4",
                "--log-dir",
                str(log_dir),
                "--stop-grace-seconds",
                str(GRACE_S),
                "--instance-command",
                command,
            ],
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
        )
    launcher = Launcher(f"http://127.0.0.1:{port}", proc, log_dir, out)
    wait_for(
        lambda: proc.poll() is None and launcher.call("GET", "/health").status == 200,
        START_DEADLINE_S,
        f"the launcher to serve; its log: {out}",
    )
    return launcher


def stop_launcher(launcher: Launcher) -> int:
    launcher.proc.send_signal(signal.SIGTERM)
    try:
        return launcher.proc.wait(START_DEADLINE_S)
    finally:
        if launcher.proc.poll() is None:
            launcher.proc.kill()
            launcher.proc.wait()


@pytest.fixture(scope="module")
def emulated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    launcher = start_launcher(tmp_path_factory.mktemp("emulated"), EMULATOR)
    yield launcher
    stop_launcher(launcher)


@pytest.fixture(scope="module")
def env_printer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    launcher = start_launcher(tmp_path_factory.mktemp("env"), "env")
    yield launcher
    stop_launcher(launcher)


def new_id() -> str:
    return f"i-{uuid.uuid4().hex[:10]}"


def emulator_options(port: int) -> str:
    return f"Qwen/Qwen3-0.6B --port {port} --enable-sleep-mode"


async def test_the_notifier_reads_the_launchers_list_over_http(emulated: Launcher) -> None:
    instance_id = new_id()
    emulated.put(instance_id, emulator_options(free_port()))
    http = HttpClient()
    try:
        listing = await HttpLauncher(LauncherClient(http), emulated.url + "/").instances()
    finally:
        await http.close()
    assert [instance_id, "running"] in [[i["instance_id"], i["status"]] for i in listing["instances"]]
    assert signature(listing) == signature(emulated.call("GET", "/v2/vllm/instances").json())
    emulated.call("DELETE", f"/v2/vllm/instances/{instance_id}")


def test_health_and_index(emulated: Launcher) -> None:
    assert emulated.call("GET", "/health").json() == {"status": "OK"}
    index = emulated.call("GET", "/").json()
    assert (index["name"], index["version"]) == ("Multi-Instance vLLM Management API", "2.0")
    assert index["endpoints"]["watch_instances"] == "GET /v2/vllm/instances/watch"
    assert len(index["endpoints"]) == 10


def test_put_starts_an_emulator_that_serves_on_its_port_with_the_gpus_as_cuda_indices(
    emulated: Launcher,
) -> None:
    instance_id, port = new_id(), free_port()
    reply = emulated.put(
        instance_id,
        emulator_options(port),
        gpu_uuids=["GPU-3", "GPU-1"],
        env_vars={"A": "b"},
        annotations={"isc-name": "s", "inference-port": str(port)},
        unknown="ignored",
    )
    assert reply.status == 201, reply
    state = reply.json()
    assert state == {
        "status": "running",
        "instance_id": instance_id,
        "revision": state["revision"],
        "options": emulator_options(port),
        "gpu_uuids": ["GPU-3", "GPU-1"],
        "env_vars": {"A": "b", "CUDA_VISIBLE_DEVICES": "3,1"},
        "annotations": {"isc-name": "s", "inference-port": str(port)},
    }
    assert emulated.state(instance_id) == state

    def is_sleeping() -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/is_sleeping", timeout=IO_TIMEOUT_S) as resp:
            return json.loads(resp.read())

    assert wait_for(is_sleeping, START_DEADLINE_S, "the emulator to answer") == {"is_sleeping": False}
    assert emulated.call("DELETE", f"/v2/vllm/instances/{instance_id}").status == 200


def test_post_creates_an_instance_with_a_fresh_uuid4(emulated: Launcher) -> None:
    reply = emulated.call("POST", "/v2/vllm/instances", {"options": emulator_options(free_port())})
    assert reply.status == 201, reply
    instance_id = reply.json()["instance_id"]
    assert uuid.UUID(instance_id).version == 4
    assert emulated.call("DELETE", f"/v2/vllm/instances/{instance_id}").json()["status"] == "stopped"


def test_put_of_an_existing_id_is_409(emulated: Launcher) -> None:
    instance_id = new_id()
    assert emulated.put(instance_id, emulator_options(free_port())).status == 201
    reply = emulated.put(instance_id, emulator_options(free_port()))
    assert (reply.status, reply.json()) == (409, {"detail": f"Instance with ID {instance_id} already exists"})
    emulated.call("DELETE", f"/v2/vllm/instances/{instance_id}")


def test_concurrent_puts_of_one_id_create_it_once(emulated: Launcher) -> None:
    instance_id = new_id()
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: emulated.put(instance_id, emulator_options(free_port())), range(4)))
    assert sorted(r.status for r in replies) == [201, 409, 409, 409]
    ids = emulated.call("GET", "/v2/vllm/instances?detail=false").json()["instance_ids"]
    assert ids.count(instance_id) == 1
    emulated.call("DELETE", f"/v2/vllm/instances/{instance_id}")


def test_an_unknown_gpu_uuid_is_400_and_creates_nothing(emulated: Launcher) -> None:
    instance_id = new_id()
    reply = emulated.put(instance_id, "m", gpu_uuids=["GPU-0", "GPU-9"])
    assert reply.status == 400
    assert "GPU UUID 'GPU-9' not found" in reply.json()["detail"]
    assert emulated.call("POST", "/v2/vllm/instances", {"options": "m", "gpu_uuids": ["nope"]}).status == 400
    assert emulated.call("GET", f"/v2/vllm/instances/{instance_id}").status == 404


@pytest.mark.parametrize(
    "body", [b"{}", b"not json", b'{"options": 3}', b'{"options": "m", "gpu_uuids": "GPU-0"}']
)
def test_a_body_that_is_not_a_vllm_config_is_422_with_what_is_wrong(emulated: Launcher, body: bytes) -> None:
    reply = emulated.call("PUT", f"/v2/vllm/instances/{new_id()}", body)
    assert reply.status == 422
    assert reply.json()["detail"][0]["loc"][0] == "body"


def test_list_with_and_without_detail(emulated: Launcher) -> None:
    instance_id = new_id()
    emulated.put(instance_id, emulator_options(free_port()))
    full = emulated.call("GET", "/v2/vllm/instances").json()
    assert set(full) == {"revision", "total_instances", "running_instances", "instances"}
    assert instance_id in [i["instance_id"] for i in full["instances"]]
    assert full["total_instances"] == len(full["instances"]) >= full["running_instances"] >= 1
    assert emulated.call("GET", "/v2/vllm/instances?detail=true").json()["revision"] == full["revision"]
    short = emulated.call("GET", "/v2/vllm/instances?detail=false").json()
    assert short == {
        "revision": full["revision"],
        "instance_ids": short["instance_ids"],
        "count": len(short["instance_ids"]),
    }
    assert instance_id in short["instance_ids"]
    assert emulated.call("GET", "/v2/vllm/instances?detail=maybe").status == 422
    emulated.call("DELETE", f"/v2/vllm/instances/{instance_id}")


def test_unknown_ids_are_404_on_every_instance_endpoint(emulated: Launcher) -> None:
    for method, path in [
        ("GET", "/v2/vllm/instances/x"),
        ("DELETE", "/v2/vllm/instances/x"),
        ("GET", "/v2/vllm/instances/x/log"),
    ]:
        reply = emulated.call(method, path)
        assert (reply.status, reply.json()) == (404, {"detail": "Instance x not found"}), (method, path)


def test_unknown_paths_and_methods_answer_json(emulated: Launcher) -> None:
    assert emulated.call("GET", "/v3").json() == {"detail": "Not Found"}
    reply = emulated.call("PATCH", "/health")
    assert (reply.status, reply.json()) == (405, {"detail": "Method Not Allowed"})


def test_delete_stops_the_emulator_removes_its_log_and_frees_the_id(emulated: Launcher) -> None:
    instance_id, port = new_id(), free_port()
    emulated.put(instance_id, emulator_options(port))
    log_file = wait_for(
        lambda: next(emulated.log_dir.glob(f"launcher-*-vllm-{instance_id}.log"), None), 5, "the log file"
    )
    wait_for(
        lambda: "Starting vLLM API server" in emulated.log_text(instance_id),
        START_DEADLINE_S,
        "the emulator to bind",
    )
    reply = emulated.call("DELETE", f"/v2/vllm/instances/{instance_id}")
    assert reply.status == 200
    assert reply.json()["status"] == "stopped"
    assert not log_file.exists()
    assert emulated.call("GET", f"/v2/vllm/instances/{instance_id}").status == 404
    # SIGTERM ended the emulator: its port is free for the instance that reuses the id.
    assert emulated.put(instance_id, emulator_options(port)).status == 201
    emulated.call("DELETE", f"/v2/vllm/instances/{instance_id}")


def test_delete_all_stops_every_instance(tmp_path: Path) -> None:
    launcher = start_launcher(tmp_path, EMULATOR)
    try:
        ids = {new_id() for _ in range(2)}
        for i in ids:
            launcher.put(i, emulator_options(free_port()))
        reply = launcher.call("DELETE", "/v2/vllm/instances").json()
        assert (reply["status"], reply["total_stopped"]) == ("all_stopped", 2)
        assert {s["instance_id"] for s in reply["stopped_instances"]} == ids
        assert {s["status"] for s in reply["stopped_instances"]} == {"stopped"}
        assert launcher.call("GET", "/v2/vllm/instances").json()["total_instances"] == 0
    finally:
        stop_launcher(launcher)


def test_a_child_that_exits_at_once_is_stopped_with_its_exit_code_and_keeps_its_id_and_log(
    emulated: Launcher,
) -> None:
    instance_id = new_id()
    assert emulated.put(instance_id, "m --port not-a-port").status == 201
    state = wait_for(
        lambda: (s := emulated.state(instance_id))["status"] == "stopped" and s, START_DEADLINE_S, "STOPPED"
    )
    assert "argument --port: invalid value" in emulated.log_text(instance_id)
    assert emulated.put(instance_id, "m").status == 409
    running = emulated.call("GET", "/v2/vllm/instances").json()
    assert instance_id in [i["instance_id"] for i in running["instances"] if i["status"] == "stopped"]
    deleted = emulated.call("DELETE", f"/v2/vllm/instances/{instance_id}").json()
    assert (deleted["status"], deleted["revision"]) == ("stopped", state["revision"] + 1)


def test_child_env_has_the_cuda_indices_in_pci_order_and_the_given_variables(env_printer: Launcher) -> None:
    instance_id = new_id()
    env_printer.put(instance_id, "", gpu_uuids=["GPU-2"], env_vars={"HF_HOME": "/models"})
    text = wait_for(lambda: env_printer.log_text(instance_id), START_DEADLINE_S, "the child's output")
    lines = set(text.splitlines())
    assert {"CUDA_VISIBLE_DEVICES=2", "CUDA_DEVICE_ORDER=PCI_BUS_ID", "HF_HOME=/models"} <= lines
    env_printer.call("DELETE", f"/v2/vllm/instances/{instance_id}")


def test_a_child_without_gpus_gets_no_cuda_variables(env_printer: Launcher) -> None:
    instance_id = new_id()
    state = env_printer.put(instance_id, "").json()
    assert "env_vars" not in state
    text = wait_for(lambda: env_printer.log_text(instance_id), START_DEADLINE_S, "the child's output")
    assert "CUDA_VISIBLE_DEVICES=" not in text and "CUDA_DEVICE_ORDER=" not in text
    env_printer.call("DELETE", f"/v2/vllm/instances/{instance_id}")


def test_ranged_log_reads(env_printer: Launcher) -> None:
    instance_id = new_id()
    env_printer.put(instance_id, "", env_vars={"MARK": "x" * 50})
    wait_for(lambda: env_printer.state(instance_id)["status"] == "stopped", START_DEADLINE_S, "env to exit")
    whole = env_printer.call("GET", f"/v2/vllm/instances/{instance_id}/log")
    total = len(whole.body)
    assert whole.status == 200
    assert (whole.headers["Content-Type"], whole.headers["Accept-Ranges"]) == (
        "application/octet-stream",
        "bytes",
    )
    assert whole.headers["Content-Range"] == f"bytes 0-{total - 1}/{total}"

    def ranged(value: str) -> Reply:
        return env_printer.call("GET", f"/v2/vllm/instances/{instance_id}/log", headers={"Range": value})

    part = ranged("bytes=5-14")
    assert (part.status, part.body, part.headers["Content-Range"]) == (
        206,
        whole.body[5:15],
        f"bytes 5-14/{total}",
    )
    tail = ranged(f"bytes={total - 3}-")
    assert (tail.status, tail.body) == (206, whole.body[-3:])
    assert ranged(f"bytes=0-{total + 100}").headers["Content-Range"] == f"bytes 0-{total - 1}/{total}"
    for bad in ("bytes=-5", "bytes=9-3", "lines=1-2", "bytes=0-1,3-4"):
        assert ranged(bad).status == 400, bad
    past = ranged(f"bytes={total}-")
    assert (past.status, past.headers["Content-Range"], past.body) == (416, f"bytes */{total}", b"")
    env_printer.call("DELETE", f"/v2/vllm/instances/{instance_id}")


def test_an_empty_log_is_416_even_without_range(env_printer: Launcher) -> None:
    instance_id = new_id()
    env_printer.put(instance_id, "-i")  # `env -i` prints the empty environment: nothing
    wait_for(lambda: env_printer.state(instance_id)["status"] == "stopped", START_DEADLINE_S, "env to exit")
    reply = env_printer.call("GET", f"/v2/vllm/instances/{instance_id}/log")
    assert (reply.status, reply.headers["Content-Range"]) == (416, "bytes */0")
    env_printer.call("DELETE", f"/v2/vllm/instances/{instance_id}")


def read_events(stream: HTTPResponse, count: int) -> list[dict[str, Any]]:
    return [json.loads(stream.readline()) for _ in range(count)]


def test_watch_without_since_lists_then_follows(env_printer: Launcher) -> None:
    before = new_id()
    env_printer.put(before, "-i")
    wait_for(lambda: env_printer.state(before)["status"] == "stopped", START_DEADLINE_S, "env to exit")
    existing = env_printer.call("GET", "/v2/vllm/instances").json()["instances"]
    with env_printer.watch() as stream:
        assert stream.headers["Content-Type"] == "application/x-ndjson"
        assert stream.headers["Transfer-Encoding"] == "chunked"
        first = read_events(stream, len(existing))
        assert [(e["type"], e["object"]) for e in first] == [("CREATED", s) for s in existing]
        after = new_id()
        created = env_printer.put(after, "-i").json()
        live = read_events(stream, 2)
        assert live[0] == {"type": "CREATED", "object": created}
        assert (live[1]["type"], live[1]["object"]["exit_code"], live[1]["object"]["revision"]) == (
            "STOPPED",
            0,
            created["revision"] + 1,
        )
        deleted = env_printer.call("DELETE", f"/v2/vllm/instances/{after}").json()
        assert read_events(stream, 1) == [{"type": "DELETED", "object": deleted}]
    env_printer.call("DELETE", f"/v2/vllm/instances/{before}")


def test_watch_since_replays_the_events_after_it(env_printer: Launcher) -> None:
    since = env_printer.call("GET", "/v2/vllm/instances").json()["revision"]
    instance_id = new_id()
    env_printer.put(instance_id, "-i")
    wait_for(lambda: env_printer.state(instance_id)["status"] == "stopped", START_DEADLINE_S, "env to exit")
    env_printer.call("DELETE", f"/v2/vllm/instances/{instance_id}")
    with env_printer.watch(f"?since={since}") as stream:
        events = read_events(stream, 3)
    assert [e["type"] for e in events] == ["CREATED", "STOPPED", "DELETED"]
    assert [e["object"]["revision"] for e in events] == [since + 1, since + 2, since + 3]


def test_watch_since_older_than_the_1000_event_buffer_is_410(env_printer: Launcher) -> None:
    start = env_printer.call("GET", "/v2/vllm/instances").json()["revision"]
    # Each instance makes three events: CREATED, STOPPED (env -i exits at once), DELETED.
    ids = [new_id() for _ in range(334)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: env_printer.put(i, "-i"), ids))
        wait_for(
            lambda: all(
                i["status"] == "stopped"
                for i in env_printer.call("GET", "/v2/vllm/instances").json()["instances"]
            ),
            60,
            "every env child to exit",
        )
        list(pool.map(lambda i: env_printer.call("DELETE", f"/v2/vllm/instances/{i}"), ids))
    revision = env_printer.call("GET", "/v2/vllm/instances").json()["revision"]
    assert revision >= start + 1002
    reply = env_printer.call("GET", f"/v2/vllm/instances/watch?since={start}")
    oldest = revision - 1000
    assert (reply.status, reply.json()) == (
        410,
        {"detail": f"Requested revision {start} is no longer available. Oldest available: {oldest}."},
    )
    with env_printer.watch(f"?since={oldest}") as stream:
        assert read_events(stream, 1)[0]["object"]["revision"] == oldest + 1
    assert env_printer.call("GET", "/v2/vllm/instances/watch?since=x").status == 422


def test_a_child_that_ignores_sigterm_is_killed_with_its_group_after_the_grace(tmp_path: Path) -> None:
    launcher = start_launcher(tmp_path, STUBBORN)
    try:
        instance_id = new_id()
        launcher.put(instance_id, "")
        pids = stubborn_pids(launcher, instance_id)
        started = time.monotonic()
        with ThreadPoolExecutor(2) as pool:
            replies = list(
                pool.map(lambda _: launcher.call("DELETE", f"/v2/vllm/instances/{instance_id}"), range(2))
            )
        assert time.monotonic() - started >= GRACE_S
        # Two DELETEs of one id share the one stop and its answer.
        assert [r.status for r in replies] == [200, 200]
        assert replies[0].json() == replies[1].json()
        assert replies[0].json()["status"] == "stopped"
        wait_for(lambda: all(gone(p) for p in pids), 5, f"processes {pids} to end")
        assert "still running 1 s after SIGTERM; killing its group" in launcher.out.read_text()
    finally:
        stop_launcher(launcher)


def stubborn_pids(launcher: Launcher, instance_id: str) -> list[int]:
    """The pids the STUBBORN child logs once it ignores SIGTERM: its own and its grandchild's."""
    line = wait_for(
        lambda: next(
            (ln for ln in launcher.log_text(instance_id).splitlines() if ln.startswith("pids")), None
        ),
        START_DEADLINE_S,
        "the child to report its pids",
    )
    return [int(p) for p in line.split()[1:]]


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_stop_grace_defaults_to_10_seconds() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args([]).stop_grace_seconds == 10.0


def test_sigterm_stops_every_instance_and_exits_0(tmp_path: Path) -> None:
    launcher = start_launcher(tmp_path, STUBBORN)
    instance_id = new_id()
    launcher.put(instance_id, "")
    pids = stubborn_pids(launcher, instance_id)
    assert stop_launcher(launcher) == 0
    assert all(gone(p) for p in pids)


async def test_the_controller_s_client_creates_lists_and_deletes_instances(emulated: Launcher) -> None:
    instance_id = new_id()
    body = {
        "options": emulator_options(free_port()),
        "annotations": {"isc-name": "opt", "inference-port": "1"},
    }
    http = HttpClient()
    client = LauncherClient(http)
    try:
        created = await client.create(emulated.url, instance_id, body)
        assert (created.status, created.instance_id, created.annotations) == (
            "running",
            instance_id,
            body["annotations"],
        )
        with pytest.raises(HttpCallError) as taken:
            await client.create(emulated.url, instance_id, body)
        assert taken.value.status == 409
        listed = {i.instance_id: i for i in await client.instances(emulated.url)}
        assert listed[instance_id].status == "running" and listed[instance_id].revision >= 1
        assert await client.delete(emulated.url, instance_id) is True
        assert await client.delete(emulated.url, instance_id) is False  # gone is gone
        assert instance_id not in {i.instance_id for i in await client.instances(emulated.url)}
    finally:
        await http.close()
