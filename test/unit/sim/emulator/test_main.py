"""`dpctl vllm-emulator serve` as real processes run the way the simulated kubelet runs them: it
serves, exits 0 on SIGTERM releasing its GPUs, fails like vLLM on a taken port or without GPUs,
and the GPU ledger catches two real emulators awake on one GPU (and refuses the second on request)."""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from dpsim.emulator.gputable import GpuTable, save_gpu_table
from dpsim.emulator.ledger import Action, Ledger
from dpsim.simenv import container_env, ledger_path
from helpers import wait_for

if TYPE_CHECKING:
    from unit.conftest import DpctlProcess, SpawnDpctl

EXIT_DEADLINE_S = 10
START_DEADLINE_S = 20
RECIPE_ARGS = (
    "--model=ibm-granite/granite-3.3-2b-instruct",
    "--enable-sleep-mode",
    "--max-model-len=32768",
    "--gpu-memory-utilization=0.8",
)


def call(method: str, url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@dataclass
class Runner:
    proc: DpctlProcess
    url: str

    def healthy(self) -> bool:
        assert self.proc.running(), f"exited early with {self.proc.proc.returncode}:\n{self.proc.log()}"
        return (
            "Application startup complete." in self.proc.log() and call("GET", f"{self.url}/health")[0] == 200
        )


@dataclass
class SimNode:
    state: Path
    table: GpuTable
    base_env: dict[str, str]
    spawn: SpawnDpctl
    port: Callable[[], int]

    @property
    def ledger(self) -> Ledger:
        return Ledger(ledger_path(self.state))

    def env(self, pod: str, **extra: str) -> dict[str, str]:
        env = dict(self.base_env)
        env.update(
            container_env(
                state=self.state,
                node=self.table.node,
                pod=f"ns/{pod}",
                pod_uid=f"uid-{pod}",
                listen_host="127.0.0.1",
                nvidia_visible_devices="all",  # as vLLM's image sets it
                shim_dir=self.state / "bin",
                base_path=self.base_env["PATH"],
            )
        )
        env.update(VLLM_SERVER_DEV_MODE="1", CUDA_DEVICE_ORDER="PCI_BUS_ID", **extra)
        return env

    def start(self, pod: str, *, gpus: str = "0", **extra: str) -> Runner:
        port = self.port()
        proc = self.spawn(
            "vllm-emulator",
            "serve",
            f"--port={port}",
            *RECIPE_ARGS,
            env=self.env(pod, CUDA_VISIBLE_DEVICES=gpus, **extra),
        )
        return Runner(proc, f"http://127.0.0.1:{port}")

    def start_healthy(self, pod: str, **kw: str) -> Runner:
        runner = self.start(pod, **kw)
        wait_for(runner.healthy, START_DEADLINE_S, f"emulator {pod} to become healthy")
        return runner


@pytest.fixture
def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DPCTL_", "VLLM_", "CUDA_", "NVIDIA_"))}
    env.update(VLLM_EMULATOR_STARTUP_DELAY="0", VLLM_EMULATOR_SLEEP_DELAY="0", VLLM_EMULATOR_WAKE_DELAY="0")
    return env


@pytest.fixture
def node(
    tmp_path: Path,
    base_env: dict[str, str],
    spawn_dpctl: SpawnDpctl,
    unused_tcp_port_factory: Callable[[], int],
) -> SimNode:
    table = GpuTable.generate("node-a", 2)
    save_gpu_table(tmp_path, table)
    return SimNode(tmp_path, table, base_env, spawn_dpctl, unused_tcp_port_factory)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_serves_then_exits_0_on_sigterm_releasing_its_gpus(node: SimNode) -> None:
    runner = node.start_healthy("a", gpus="1")
    [holder] = node.ledger.awake_holders().items()
    assert (holder[0], holder[1].pod, holder[1].pid) == (
        node.table.gpus[1].uuid,
        "ns/a",
        runner.proc.proc.pid,
    )
    assert call("GET", f"{runner.url}/is_sleeping") == (200, '{"is_sleeping": false}')
    assert runner.proc.terminate(EXIT_DEADLINE_S) == 0
    assert node.ledger.holds() == []
    log = runner.proc.log()
    assert "Application shutdown complete." in log
    assert f"Loading the model onto GPUs {node.table.gpus[1].uuid}" in log


def test_runs_without_a_ledger_outside_the_local_cluster(
    spawn_dpctl: SpawnDpctl, base_env: dict[str, str], unused_tcp_port_factory: Callable[[], int]
) -> None:
    port = unused_tcp_port_factory()
    proc = spawn_dpctl(
        "vllm-emulator", "serve", "m", "--host", "127.0.0.1", "--port", str(port), env=base_env
    )
    runner = Runner(proc, f"http://127.0.0.1:{port}")
    wait_for(runner.healthy, START_DEADLINE_S, "the emulator to become healthy")
    assert "DPCTL_SIM_STATE is not set: running without simulated GPUs or a GPU ledger" in proc.log()
    # No sleep mode asked for: no sleep endpoints.
    assert call("POST", f"{runner.url}/sleep")[0] == 404
    assert proc.terminate(EXIT_DEADLINE_S) == 0


def test_port_in_use_fails_and_releases_its_gpus(node: SimNode, taken_port: int) -> None:
    env = node.env("a", CUDA_VISIBLE_DEVICES="0")
    proc = node.spawn("vllm-emulator", "serve", f"--port={taken_port}", *RECIPE_ARGS, env=env)
    assert proc.wait(START_DEADLINE_S) == 3
    assert "error while attempting to bind on address" in proc.log()
    assert node.ledger.holds() == []


def test_bad_command_line_exits_2(node: SimNode) -> None:
    proc = node.spawn("vllm-emulator", "serve", "--port=eighty", env=node.env("a"))
    assert proc.wait(START_DEADLINE_S) == 2
    assert "argument --port: invalid value" in proc.log()


def test_no_gpu_fails_like_vllm(node: SimNode) -> None:
    runner = node.start("a", gpus="5")
    assert runner.proc.wait(START_DEADLINE_S) == 1
    assert "RuntimeError: No CUDA GPUs are available" in runner.proc.log()


def test_ledger_catches_two_awake_on_one_gpu(node: SimNode) -> None:
    first = node.start_healthy("first", gpus="0")
    second = node.start_healthy("second", gpus="0")
    [v] = node.ledger.violations()
    assert (v.gpu, v.action, v.refused) == (node.table.gpus[0].uuid, Action.START, False)
    assert (v.holder.pod, v.holder.pid) == ("ns/first", first.proc.proc.pid)
    assert (v.intruder.pod, v.intruder.pid) == ("ns/second", second.proc.proc.pid)
    assert "GPU conflict recorded in the GPU ledger" in second.proc.log()
    assert first.proc.terminate(EXIT_DEADLINE_S) == second.proc.terminate(EXIT_DEADLINE_S) == 0


def test_ledger_refuses_like_cuda_out_of_memory(node: SimNode) -> None:
    oom = {"VLLM_EMULATOR_OOM_ON_CONFLICT": "1"}
    first = node.start_healthy("first", gpus="0", **oom)
    # Starting on the awake GPU fails like a CUDA out-of-memory.
    second = node.start("second", gpus="0", **oom)
    assert second.proc.wait(START_DEADLINE_S) == 1
    assert "torch.OutOfMemoryError: CUDA out of memory" in second.proc.log()
    # Once the first sleeps, a third may start; waking the first then fails the same way.
    assert call("POST", f"{first.url}/sleep")[0] == 200
    third = node.start_healthy("third", gpus="0", **oom)
    status, body = call("POST", f"{first.url}/wake_up")
    assert status == 500
    assert "CUDA out of memory" in body
    assert call("GET", f"{first.url}/is_sleeping") == (200, '{"is_sleeping": true}')
    actions = [(v.action, v.holder.pod, v.intruder.pod, v.refused) for v in node.ledger.violations()]
    assert actions == [
        (Action.START, "ns/first", "ns/second", True),
        (Action.WAKE, "ns/third", "ns/first", True),
    ]
    assert first.proc.terminate(EXIT_DEADLINE_S) == third.proc.terminate(EXIT_DEADLINE_S) == 0
    assert node.ledger.holds() == []


def test_sigterm_while_loading_exits_0(node: SimNode) -> None:
    runner = node.start("slow", VLLM_EMULATOR_STARTUP_DELAY="3600")
    wait_for(
        lambda: "Waiting for application startup." in runner.proc.log(),
        START_DEADLINE_S,
        "the emulator to bind",
    )
    assert call("GET", f"{runner.url}/health")[0] == 503
    assert runner.proc.terminate(EXIT_DEADLINE_S) == 0
    assert node.ledger.holds() == []
