"""`dpctl launcher` without an instance command: vLLM imported once in the launcher and each
instance forked from it, its options parsed by vLLM's parser. vLLM is not installed here, so a
stand-in package with vLLM's module layout (written to a temporary folder) plays it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import wait_for

from .test_launcher_process import Launcher, free_port

# The entry points the launcher uses, with vLLM's names; run_server reports what the child is.
FAKE_VLLM = {
    "vllm/__init__.py": "import os\nIMPORTED_IN = os.getpid()\n",
    "vllm/entrypoints/__init__.py": "",
    "vllm/entrypoints/openai/__init__.py": "",
    "vllm/entrypoints/openai/cli_args.py": (
        "def make_arg_parser(parser):\n"
        "    parser.add_argument('--model')\n"
        "    parser.add_argument('--port', type=int)\n"
        "    return parser\n"
        "def validate_parsed_serve_args(args):\n"
        "    if args.port is None:\n"
        "        raise SystemExit(2)\n"
    ),
    "vllm/entrypoints/openai/api_server.py": (
        "import asyncio, json, os, vllm\n"
        "async def run_server(args):\n"
        "    sockets = []\n"
        "    for fd in os.listdir('/proc/self/fd'):\n"
        "        try:\n"
        "            sockets.append(os.readlink('/proc/self/fd/' + fd))\n"
        "        except OSError:\n"
        "            pass  # the descriptor listdir itself used\n"
        "    print('fake-vllm ' + json.dumps({'model': args.model, 'port': args.port, 'pid': os.getpid(),\n"
        "          'pgid': os.getpgid(0), 'imported_in': vllm.IMPORTED_IN, 'sockets': sockets,\n"
        "          'cuda': os.environ.get('CUDA_VISIBLE_DEVICES')}), flush=True)\n"
        "    await asyncio.Event().wait()\n"
    ),
    "vllm/utils/__init__.py": "",
    "vllm/utils/argparse_utils.py": "import argparse\nFlexibleArgumentParser = argparse.ArgumentParser\n",
}


# Long, so that an instance that ignored SIGTERM would show in the time its DELETE takes.
STOP_GRACE_S = 8.0


@pytest.fixture
def forking(tmp_path: Path) -> Iterator[Launcher]:
    site = tmp_path / "site"
    for name, text in FAKE_VLLM.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)
    (tmp_path / "logs").mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPCTL_")}
    env["PYTHONPATH"] = str(site)
    out = tmp_path / "launcher.log"
    with out.open("wb") as f:
        proc = subprocess.Popen(
            [
                *(str(Path(sys.executable).with_name("dpctl")), "launcher", "--host", "127.0.0.1"),
                *("--port", str(port), "--mock-gpus", "--log-dir", str(tmp_path / "logs")),
                *("--stop-grace-seconds", str(STOP_GRACE_S)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
        )
    launcher = Launcher(f"http://127.0.0.1:{port}", proc, tmp_path / "logs", out)
    try:
        wait_for(lambda: launcher.call("GET", "/health").status == 200, 30, f"the launcher; its log: {out}")
        yield launcher
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def sockets_of(pid: int) -> list[str]:
    links = (os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))
    return [link for link in links if link.startswith("socket:")]


def fake_report(launcher: Launcher, instance_id: str) -> dict[str, Any]:
    line = wait_for(
        lambda: next(
            (ln for ln in launcher.log_text(instance_id).splitlines() if ln.startswith("fake-vllm ")), None
        ),
        30,
        "the forked instance to report",
    )
    report: dict[str, Any] = json.loads(line.removeprefix("fake-vllm "))
    return report


def test_each_instance_is_forked_from_the_launcher_that_imported_vllm_once(forking: Launcher) -> None:
    assert forking.put("a", "--model m --port 8123", gpu_uuids=["GPU-2"]).status == 201
    report = fake_report(forking, "a")
    assert report["imported_in"] == forking.proc.pid  # the module came with the fork
    assert report["pid"] != forking.proc.pid
    assert report["pgid"] == report["pid"]  # its own process group
    # None of the launcher's sockets (its listener, its connections); the child's own event loop
    # has sockets of its own.
    assert set(sockets_of(forking.proc.pid)) & set(report["sockets"]) == set()
    assert (report["model"], report["port"], report["cuda"]) == ("m", 8123, "2")
    started = time.monotonic()
    stopped = forking.call("DELETE", "/v2/vllm/instances/a").json()
    # SIGTERM ends it, as it ends vLLM: the launcher's own handlers did not come with the fork.
    assert time.monotonic() - started < STOP_GRACE_S
    assert stopped["status"] == "stopped"


def test_options_vllm_refuses_end_the_forked_instance(forking: Launcher) -> None:
    forking.put("bad", "--model m --no-such-flag")
    state = wait_for(
        lambda: (s := forking.state("bad"))["status"] == "stopped" and s, 30, "the instance to stop"
    )
    assert state["status"] == "stopped"
    assert "unrecognized arguments: --no-such-flag" in forking.log_text("bad")
    with urllib.request.urlopen(forking.url + "/v2/vllm/instances", timeout=10) as resp:
        assert json.loads(resp.read())["running_instances"] == 0
