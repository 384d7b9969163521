"""The hollow runtime: stubs and emulators served in-process, with their processes' lifecycle."""

from __future__ import annotations

import os
import random
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dpctl.stub.main import EXIT_BIND_FAILED as EXIT_STUB_BIND_FAILED
from dpctl.stub.main import EXIT_USAGE
from dpsim.emulator.gputable import GpuTable, save_gpu_table
from dpsim.emulator.main import EXIT_BIND_FAILED as EXIT_EMULATOR_BIND_FAILED
from dpsim.emulator.main import EXIT_GPU_FAILED
from dpsim.kubelet.hollow import HollowRuntime, hollow_kind
from dpsim.kubelet.logfiles import parse_entries
from dpsim.kubelet.runtime import ContainerHandle, Exit, ExitCallback, Launch
from dpsim.simenv import container_env
from helpers import async_wait_for

NODE = "node-1"
TABLE = GpuTable.generate(NODE, 4)
STUB = (sys.executable, "-m", "dpctl", "requester")
VLLM = (sys.executable, "-m", "dpctl", "vllm-emulator", "serve")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        port: int = s.getsockname()[1]
        return port


class Pod:
    """A pod's address and container environment, as the launcher would make them."""

    def __init__(self, state: Path, gpus: str, name: str = "p") -> None:
        self.ip = f"127.{random.randint(1, 60)}.{random.randint(0, 255)}.{random.randint(2, 254)}"
        self.name = name
        self.uid = f"uid-{name}-{random.randint(0, 10**9)}"
        self.env = container_env(
            state=state,
            node=NODE,
            pod=f"ns/{name}",
            pod_uid=self.uid,
            listen_host=self.ip,
            nvidia_visible_devices=gpus,
            shim_dir=state / "bin",
            base_path=os.environ["PATH"],
        )

    def launch(self, tmp: Path, argv: tuple[str, ...], env: Mapping[str, str] | None = None) -> Launch:
        cid = f"cid-{self.name}-{random.randint(0, 10**9)}"
        return Launch(cid, argv, {**self.env, **(env or {})}, tmp, tmp / "logs" / f"{cid}.log")


class Exits:
    def __init__(self) -> None:
        self.seen: list[Exit] = []

    def __call__(self, exit_: Exit) -> None:
        self.seen.append(exit_)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    save_gpu_table(tmp_path, TABLE)
    return tmp_path


@pytest.fixture(params=[True, False], ids=["own-loop", "caller-loop"])
async def runtime(state: Path, request: pytest.FixtureRequest) -> AsyncIterator[HollowRuntime]:
    rt = HollowRuntime(state, "pod", "memory", own_loop=request.param)
    yield rt
    await rt.shutdown(1.0)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=5)) as s:
        yield s


async def call(http: aiohttp.ClientSession, method: str, url: str) -> tuple[int, Any]:
    async with http.request(method, url) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body


def log_text(launch: Launch) -> str:
    return "\n".join(e.content.decode() for e in parse_entries(launch.log_path.read_bytes()))


def stub_env(probes: int, spi: int) -> dict[str, str]:
    return {"PROBES_PORT": str(probes), "SPI_PORT": str(spi)}


def vllm_env(port: int, **extra: str) -> dict[str, str]:
    return {
        "VLLM_SERVER_DEV_MODE": "1",
        "VLLM_EMULATOR_STARTUP_DELAY": "0",
        "VLLM_EMULATOR_SLEEP_DELAY": "0",
        "VLLM_EMULATOR_WAKE_DELAY": "0",
        "CUDA_VISIBLE_DEVICES": "1",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        **extra,
    }


def vllm_argv(port: int) -> tuple[str, ...]:
    return (*VLLM, "--model=m", f"--port={port}", "--enable-sleep-mode")


def test_the_programs_it_hosts() -> None:
    assert hollow_kind(STUB) == "requester"
    assert hollow_kind((*STUB, "--flag")) == "requester"
    assert hollow_kind((*VLLM, "--model=m")) == "vllm-emulator"
    assert hollow_kind((sys.executable, "-m", "dpctl", "controller")) is None
    assert hollow_kind(("nvidia-smi", "-L")) is None


async def test_a_stub_serves_its_state_at_the_pod_ip_until_stopped(
    state: Path, runtime: HollowRuntime, http: aiohttp.ClientSession
) -> None:
    pod = Pod(state, TABLE.uuids[2])
    probes, spi = free_port(), free_port()
    launch = pod.launch(state, STUB, stub_env(probes, spi))
    exits = Exits()
    handle = await runtime.start(launch, exits)
    assert handle.status() is None and runtime.hollow() == 1
    assert (await call(http, "GET", f"http://{pod.ip}:{probes}/ready"))[0] == 503
    assert await call(http, "GET", f"http://{pod.ip}:{spi}/v1/dual-pod/accelerators") == (
        200,
        [TABLE.uuids[2]],
    )
    assert (await call(http, "POST", f"http://{pod.ip}:{spi}/v1/become-ready"))[0] == 200
    assert (await call(http, "GET", f"http://{pod.ip}:{probes}/ready"))[0] == 200
    assert "Requester stub started" in log_text(launch)

    ended = await handle.stop(5.0)
    assert ended.exit_code == 0 and exits.seen == [ended] and runtime.hollow() == 0
    with pytest.raises(aiohttp.ClientConnectorError):
        await call(http, "GET", f"http://{pod.ip}:{probes}/ready")


async def test_a_restarted_stub_starts_unready(
    state: Path, runtime: HollowRuntime, http: aiohttp.ClientSession
) -> None:
    pod = Pod(state, TABLE.uuids[0])
    probes, spi = free_port(), free_port()
    first = await runtime.start(pod.launch(state, STUB, stub_env(probes, spi)), Exits())
    await call(http, "POST", f"http://{pod.ip}:{spi}/v1/become-ready")
    await first.stop(5.0)
    await runtime.start(pod.launch(state, STUB, stub_env(probes, spi)), Exits())
    assert (await call(http, "GET", f"http://{pod.ip}:{probes}/ready"))[0] == 503


async def test_an_emulator_loads_sleeps_wakes_and_holds_its_gpu_in_the_ledger(
    state: Path, runtime: HollowRuntime, http: aiohttp.ClientSession
) -> None:
    pod = Pod(state, "all")
    port = free_port()
    launch = pod.launch(state, vllm_argv(port), vllm_env(port))
    handle = await runtime.start(launch, Exits())
    base = f"http://{pod.ip}:{port}"
    await async_wait_for(
        lambda: call(http, "GET", base + "/health"), 10, "the model loaded", ignore=(aiohttp.ClientError,)
    )
    assert [(h.gpu, h.awake, h.holder.pod_uid) for h in runtime.ledger.holds()] == [
        (TABLE.uuids[1], True, pod.uid)
    ]
    assert (await call(http, "POST", base + "/sleep"))[0] == 200
    assert await call(http, "GET", base + "/is_sleeping") == (200, {"is_sleeping": True})
    assert [h.awake for h in runtime.ledger.holds()] == [False]
    assert (await call(http, "POST", base + "/wake_up"))[0] == 200
    assert [h.awake for h in runtime.ledger.holds()] == [True]
    assert "Application startup complete." in log_text(launch)
    assert (await handle.stop(5.0)).exit_code == 0
    assert runtime.ledger.holds() == []
    assert "Application shutdown complete." in log_text(launch)


async def test_a_killed_emulator_exits_137_and_gives_its_gpu_back(
    state: Path, runtime: HollowRuntime, http: aiohttp.ClientSession
) -> None:
    pod = Pod(state, "all")
    port = free_port()
    exits = Exits()
    handle = await runtime.start(pod.launch(state, vllm_argv(port), vllm_env(port)), exits)
    assert len(runtime.ledger.holds()) == 1
    handle.kill()
    ended = await handle.stop(0)
    assert (ended.exit_code, ended.signal) == (128 + signal.SIGKILL, signal.SIGKILL)
    assert exits.seen == [ended]
    assert runtime.ledger.holds() == []
    with pytest.raises(aiohttp.ClientConnectorError):
        await call(http, "GET", f"http://{pod.ip}:{port}/health")


async def test_a_second_awake_server_on_a_gpu_is_a_violation_or_an_oom_exit(
    state: Path, runtime: HollowRuntime
) -> None:
    first, second, third = Pod(state, "all", "a"), Pod(state, "all", "b"), Pod(state, "all", "c")
    port = free_port()
    await runtime.start(first.launch(state, vllm_argv(port), vllm_env(port)), Exits())
    await runtime.start(second.launch(state, vllm_argv(port), vllm_env(port)), Exits())
    assert len(runtime.ledger.violations()) == 1
    exits = Exits()
    oom = vllm_env(port, VLLM_EMULATOR_OOM_ON_CONFLICT="1")
    launch = third.launch(state, vllm_argv(port), oom)
    await runtime.start(launch, exits)
    await async_wait_for(lambda: exits.seen, 5, "the refused server to exit")
    assert exits.seen[0].exit_code == EXIT_GPU_FAILED
    assert "CUDA out of memory" in log_text(launch)


async def test_starts_a_process_would_not_survive_are_exits_with_its_code(
    state: Path, runtime: HollowRuntime
) -> None:
    pod = Pod(state, TABLE.uuids[0])
    probes = free_port()
    cases: list[tuple[tuple[str, ...], dict[str, str], int]] = [
        (STUB, {"PROBES_PORT": "http"}, EXIT_USAGE),
        (STUB, stub_env(probes, probes), EXIT_STUB_BIND_FAILED["spi"]),
        ((*VLLM, "--port=x"), {}, EXIT_USAGE),
        ((*VLLM, f"--port={probes}"), {"CUDA_VISIBLE_DEVICES": "7"}, EXIT_GPU_FAILED),
    ]
    for argv, env, code in cases:
        exits = Exits()
        handle: ContainerHandle = await runtime.start(pod.launch(state, argv, env), exits)
        await async_wait_for(lambda exits=exits: exits.seen, 5, f"{argv} to exit")  # type: ignore[misc]
        assert (exits.seen[0].exit_code, handle.status()) == (code, exits.seen[0]), argv
    assert runtime.hollow() == 0 and runtime.ledger.holds() == []


async def test_an_emulator_whose_port_is_taken_exits_3(state: Path, runtime: HollowRuntime) -> None:
    pod = Pod(state, "all")
    port = free_port()
    await runtime.start(pod.launch(state, STUB, stub_env(port, free_port())), Exits())
    exits = Exits()
    await runtime.start(pod.launch(state, vllm_argv(port), vllm_env(port)), exits)
    await async_wait_for(lambda: exits.seen, 5, "the emulator to exit")
    assert exits.seen[0].exit_code == EXIT_EMULATOR_BIND_FAILED
    assert runtime.ledger.holds() == []


class FakeProcesses:
    def __init__(self) -> None:
        self.started: list[Launch] = []
        self.stopped = False

    async def start(self, launch: Launch, on_exit: ExitCallback) -> ContainerHandle:
        self.started.append(launch)
        raise RuntimeError("not a real runtime")

    async def shutdown(self, grace: float) -> None:
        self.stopped = True


async def test_other_programs_run_as_processes(state: Path) -> None:
    processes = FakeProcesses()
    rt = HollowRuntime(state, processes=processes)
    launch = Pod(state, "").launch(state, (sys.executable, "-m", "dpctl", "controller"))
    with pytest.raises(RuntimeError, match="not a real runtime"):
        await rt.start(launch, Exits())
    assert processes.started == [launch]
    await rt.shutdown(1.0)
    assert processes.stopped


async def test_shutdown_stops_every_hollow_container(state: Path) -> None:
    rt = HollowRuntime(state)
    pod = Pod(state, TABLE.uuids[0])
    exits = Exits()
    await rt.start(pod.launch(state, STUB, stub_env(free_port(), free_port())), exits)
    await rt.shutdown(1.0)
    assert [e.exit_code for e in exits.seen] == [0] and rt.hollow() == 0


async def test_servers_answer_while_the_kubelet_loop_is_busy(state: Path) -> None:
    """On their own loop, stubs do not wait for the kubelet's: here its loop is blocked outright."""
    import urllib.request

    rt = HollowRuntime(state, own_loop=True)
    pod = Pod(state, TABLE.uuids[3])
    spi = free_port()
    try:
        await rt.start(pod.launch(state, STUB, stub_env(free_port(), spi)), Exits())
        url = f"http://{pod.ip}:{spi}/v1/dual-pod/accelerators"
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: ASYNC210 - blocking on purpose
            assert resp.read() == f'["{TABLE.uuids[3]}"]'.encode()
    finally:
        await rt.shutdown(1.0)


async def test_a_hollow_stub_reports_the_memory_its_runner_holds(
    state: Path, runtime: HollowRuntime, http: aiohttp.ClientSession
) -> None:
    stub_pod, runner_pod = Pod(state, TABLE.uuids[1], "req"), Pod(state, "all", "run")
    probes, spi, port = free_port(), free_port(), free_port()
    await runtime.start(stub_pod.launch(state, STUB, stub_env(probes, spi)), Exits())
    await runtime.start(runner_pod.launch(state, vllm_argv(port), vllm_env(port)), Exits())
    memory = f"http://{stub_pod.ip}:{spi}/v1/dual-pods/accelerator-memory-usage"
    awake = int(TABLE.memory_mib * 0.9)  # vLLM's default --gpu-memory-utilization
    assert await call(http, "GET", memory) == (200, {TABLE.uuids[1]: awake})
    base = f"http://{runner_pod.ip}:{port}"
    await async_wait_for(
        lambda: call(http, "GET", base + "/health"), 10, "the model loaded", ignore=(aiohttp.ClientError,)
    )
    assert (await call(http, "POST", base + "/sleep"))[0] == 200
    assert await call(http, "GET", memory) == (200, {TABLE.uuids[1]: 512})


async def test_a_hollow_stub_appends_the_relayed_log_to_its_stdout(
    state: Path, runtime: HollowRuntime, http: aiohttp.ClientSession
) -> None:
    pod = Pod(state, TABLE.uuids[0])
    probes, spi = free_port(), free_port()
    launch = pod.launch(state, STUB, stub_env(probes, spi))
    await runtime.start(launch, Exits())
    url = f"http://{pod.ip}:{spi}/v1/set-log"
    for start, chunk in ((0, b"INFO one\nINFO tw"), (0, b"INFO one\n"), (16, b"o\n")):
        async with http.post(url, params={"startPos": str(start)}, data=chunk) as resp:
            assert resp.status == 200
    stdout = [e.content for e in parse_entries(launch.log_path.read_bytes()) if e.stream == "stdout"]
    assert stdout == [b"INFO one", b"INFO two"]
