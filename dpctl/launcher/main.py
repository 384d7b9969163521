"""`dpctl launcher`: serve the launcher API (contract §3) until SIGTERM, then stop every instance.

The instance program: ``--instance-command`` (or ``$DPCTL_LAUNCHER_INSTANCE_COMMAND``), a command
line the instance's options are appended to, e.g. ``python -m dpctl vllm-emulator serve`` in the
local cluster or ``vllm serve`` in an image without an importable vLLM. Without one, vLLM is
imported here, once, and each instance is forked from this process (upstream's way, and the
fast one: the child skips vLLM's imports).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from dpctl.api import LISTEN_HOST_ENV, listen_host
from dpctl.launcher.api import DEFAULT_PORT
from dpctl.launcher.children import CommandProgram, Program, VllmProgram
from dpctl.launcher.gpus import ConfigMapGpus, DeviceGpus, GpuIndex, MockGpus, configmap_reader
from dpctl.launcher.manager import DEFAULT_STOP_GRACE_S, Manager
from dpctl.launcher.server import make_app
from dpctl.log import setup_plain
from dpctl.stub.serving import bind, start_runner, termination_signals

log = logging.getLogger("dpctl.launcher")

INSTANCE_COMMAND_ENV: Final = "DPCTL_LAUNCHER_INSTANCE_COMMAND"
EXIT_USAGE: Final = 2
# Where upstream's launcher writes instance logs, and where runbooks look for them.
LOG_DIR: Final = Path("/tmp")  # noqa: S108
EXIT_BIND_FAILED: Final = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Serve the launcher API: start, list and stop vLLM instances on request."
    parser.add_argument(
        "--host", default=listen_host(), help=f"bind address (default ${LISTEN_HOST_ENV}, else 0.0.0.0)"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"bind port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    parser.add_argument(
        "--mock-gpus",
        action="store_true",
        help="no GPU hardware: this node's entry of ConfigMap gpu-map when $NODE_NAME and $NAMESPACE are set,"
        " else GPUs GPU-0 … GPU-<n-1>",
    )
    parser.add_argument("--mock-gpu-count", type=int, default=8, help="n for --mock-gpus (default 8)")
    parser.add_argument(
        "--instance-command",
        default=os.environ.get(INSTANCE_COMMAND_ENV),
        help=f"run each instance as this command line plus its options (default ${INSTANCE_COMMAND_ENV};"
        " unset: fork vLLM's OpenAI server from this process)",
    )
    parser.add_argument(
        "--stop-grace-seconds",
        type=float,
        default=DEFAULT_STOP_GRACE_S,
        help=f"how long a stopped instance has after SIGTERM before SIGKILL (default {DEFAULT_STOP_GRACE_S:g})",
    )
    parser.add_argument(
        "--log-dir", type=Path, default=LOG_DIR, help=f"where instance logs go (default {LOG_DIR})"
    )


def run(args: argparse.Namespace) -> int:
    setup_plain(args.log_level.upper())
    try:
        program = instance_program(args.instance_command)
    except (ValueError, ImportError) as e:
        log.error("%s", e)
        return EXIT_USAGE
    gpus = gpu_index(args.mock_gpus, args.mock_gpu_count, os.environ)
    return asyncio.run(_serve(args, program, gpus))


def gpu_index(mock: bool, mock_count: int, env: Mapping[str, str]) -> GpuIndex:
    if not mock:
        return DeviceGpus(env)
    node, namespace = env.get("NODE_NAME"), env.get("NAMESPACE")
    if node and namespace:
        return ConfigMapGpus(node, MockGpus(mock_count), configmap_reader(namespace))
    return MockGpus(mock_count)


def instance_program(command: str | None) -> Program:
    if command:
        return CommandProgram(shlex.split(command))
    try:
        return VllmProgram()
    except ImportError as e:
        raise ImportError(
            f"cannot import vLLM ({e}); give --instance-command or ${INSTANCE_COMMAND_ENV}"
        ) from e


async def _serve(args: argparse.Namespace, program: Program, gpus: GpuIndex) -> int:
    manager = Manager(program, gpus, args.log_dir, args.stop_grace_seconds)
    runner = await start_runner(make_app(manager))
    with termination_signals() as terminated:
        try:
            try:
                await bind(runner, args.host, args.port)
            except OSError as e:
                log.error("Cannot listen on %s:%d: %s", args.host, args.port, e)
                return EXIT_BIND_FAILED
            log.info("Launcher serving on %s:%d", args.host, args.port)
            log.info("Received %s, stopping every instance", (await terminated).name)
        finally:
            await runner.cleanup()
            stopped = await manager.delete_all()
            log.info("Stopped %d instances; exiting", stopped["total_stopped"])
    return 0
