"""`dpctl vllm-emulator serve ...`: what a simulated runner container runs in place of `vllm serve`.

It takes the `vllm serve` command line unchanged, takes its place on the GPUs that CUDA would give
it (reporting to the GPU ledger when run by the simulated kubelet), binds, "loads the model" for a
configurable time, and serves until SIGTERM, when it releases its GPUs and exits 0. Its log reads
like vLLM's where a user looks for progress ("Application startup complete.").
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping
from typing import Final

from dpctl.api import listen_host
from dpctl.faults import Faults
from dpctl.stub.serving import bind, start_runner, termination_signals
from dpsim.emulator.args import USAGE, ServeArgsError, parse_serve_args
from dpsim.emulator.devices import DeviceError, placement_from_env
from dpsim.emulator.server import EMULATED_VLLM_VERSION, Emulator, EmulatorConfig, make_emulator_app
from dpsim.simenv import STATE_DIR_ENV

log = logging.getLogger("vllm.entrypoints.openai.api_server")

# vLLM dies of a Python exception (exit 1) when CUDA fails; argparse exits 2 on a bad command line.
EXIT_GPU_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_BIND_FAILED: Final = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["serve"], help="the only action: serve, as `vllm serve`")
    parser.add_argument(
        "vllm_args", nargs=argparse.REMAINDER, help="the arguments of `vllm serve`; unknown flags are ignored"
    )


def run(args: argparse.Namespace) -> int:
    try:
        serve = parse_serve_args(list(args.vllm_args))
    except ServeArgsError as e:
        print(f"{USAGE}\nvllm serve: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if serve.help:
        print(USAGE)
        return 0
    # vLLM's own log format, so lines look familiar in the runner's log.
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(levelname)s %(asctime)s [%(module)s.py:%(lineno)d] %(message)s",
        datefmt="%m-%d %H:%M:%S",
    )
    try:
        config = EmulatorConfig.from_env(serve, os.environ)
    except ValueError as e:
        log.error("%s", e)
        return EXIT_USAGE
    return asyncio.run(_main(config, os.environ))


async def _main(config: EmulatorConfig, env: Mapping[str, str]) -> int:
    args = config.args
    log.info("vLLM API server version %s (dpctl emulator)", EMULATED_VLLM_VERSION)
    log.info("args: model=%s port=%d sleep_mode=%s", args.model, args.port, args.enable_sleep_mode)
    if args.ignored:
        log.info("Ignoring flags the emulator does not model: %s", " ".join(args.ignored))
    # From here on SIGTERM is graceful, so the GPUs taken below are always given back.
    with termination_signals() as terminated:
        try:
            placement = placement_from_env(
                env,
                refuse_conflict=config.oom_on_conflict,
                gpu_memory_utilization=args.gpu_memory_utilization,
                release_delay_s=config.memory_release_delay_s,
            )
        except DeviceError as e:
            log.error("%s", e)
            return EXIT_GPU_FAILED
        if placement is None:
            log.info("%s is not set: running without simulated GPUs or a GPU ledger", STATE_DIR_ENV)
        else:
            for warning in placement.warnings:
                log.warning("%s", warning)
            log.info(
                "Loading the model onto GPUs %s as %s", ", ".join(placement.seat.gpus), placement.seat.holder
            )
        emulator = Emulator(config, placement.seat if placement else None, log)
        try:
            if not await emulator.take_gpus():
                return EXIT_GPU_FAILED
            return await _serve(emulator, terminated)
        finally:
            await emulator.release_gpus()


async def _serve(emulator: Emulator, terminated: asyncio.Future[signal.Signals]) -> int:
    args = emulator.config.args
    host = args.host or listen_host()
    runner = await start_runner(make_emulator_app(emulator, Faults.from_env(os.environ)))
    try:
        try:
            await bind(runner, host, args.port)
        except OSError as e:
            log.error(
                "[Errno %s] error while attempting to bind on address (%r, %d): %s",
                e.errno,
                host,
                args.port,
                e.strerror,
            )
            return EXIT_BIND_FAILED
        log.info("Starting vLLM API server 0 on http://%s:%d", host, args.port)
        log.info("Started server process [%d]", os.getpid())
        log.info("Waiting for application startup.")
        log.info("Received %s. Shutting down", (await terminated).name)
    finally:
        await runner.cleanup()
    log.info("Application shutdown complete.")
    log.info("Finished server process [%d]", os.getpid())
    return 0
