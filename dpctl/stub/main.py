"""`dpctl requester`: the process in the server-requesting Pod's ``inference-server`` container.

Configured by environment only, as upstream's stub (``PROBES_PORT``, ``SPI_PORT``; the bind host
from ``DPCTL_LISTEN_HOST``). It binds both listeners before it logs that it started, exits with a
distinct non-zero code when one cannot be bound, and exits 0 soon after SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Mapping
from typing import Final

from dpctl.api import DEFAULT_PROBES_PORT, DEFAULT_SPI_PORT, PROBES_PORT_ENV, SPI_PORT_ENV, listen_host
from dpctl.faults import Faults
from dpctl.log import setup_plain
from dpctl.stub.discovery import default_discovery
from dpctl.stub.server import BindError, StubServer, StubState
from dpctl.stub.serving import termination_signals

log = logging.getLogger("dpctl.requester")

EXIT_USAGE: Final = 2
# The codes of upstream's stub, so runbooks written for it still apply.
EXIT_BIND_FAILED: Final = {"probes": 10, "spi": 11}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        f"Serve the requester stub. Ports come from ${PROBES_PORT_ENV} (default {DEFAULT_PROBES_PORT})"
        f" and ${SPI_PORT_ENV} (default {DEFAULT_SPI_PORT})."
    )


def run(args: argparse.Namespace) -> int:
    setup_plain()
    try:
        probes_port, spi_port = stub_ports(os.environ)
    except ValueError as e:
        log.error("%s", e)
        return EXIT_USAGE
    return asyncio.run(_serve(listen_host(), probes_port, spi_port))


def stub_ports(env: Mapping[str, str]) -> tuple[int, int]:
    """The probes and SPI ports the environment asks for; ValueError names a bad one."""
    return _port(env, PROBES_PORT_ENV, DEFAULT_PROBES_PORT), _port(env, SPI_PORT_ENV, DEFAULT_SPI_PORT)


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    if not value:
        return default
    if not value.isdigit() or not 0 < int(value) <= 65535:
        raise ValueError(f"{name}={value!r} is not a TCP port")
    return int(value)


async def _serve(host: str, probes_port: int, spi_port: int) -> int:
    server = StubServer(
        StubState(), default_discovery(), host, probes_port, spi_port, Faults.from_env(os.environ)
    )
    with termination_signals() as terminated:
        try:
            await server.start()
        except BindError as e:
            log.error("%s", e)
            return EXIT_BIND_FAILED[e.listener]
        try:
            log.info(
                "Requester stub started: probes on %s, SPI on %s",
                f"{host}:{probes_port}",
                f"{host}:{spi_port}",
            )
            log.info("Received %s, shutting down", (await terminated).name)
        finally:
            await server.stop()
    return 0
