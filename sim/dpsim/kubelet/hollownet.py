"""The hollow kubelet's network: listeners shared by in-process servers, dispatched by address.

A hollow container (see ``hollow``) does not bind sockets of its own. It registers its aiohttp
server for ``(pod IP, port)`` here, and every accepted connection is handed, by the address it
was made *to* (``transport.get_extra_info("sockname")``), to the server registered for that
address: from then on the connection belongs to that server (``transport.set_protocol``), so
keep-alive, shutdown and fault injection behave exactly as in a process of its own.

Two ways to listen (``mode``):

- ``"pod"`` (the default): one listening socket per registered ``(pod IP, port)``, opened on
  register and closed on unregister. A connection to a stopped container is refused, as it is
  for a process that exited, and nothing outside this cluster's address block is ever bound.
- ``"any"``: one socket per port on ``0.0.0.0``, opened on first use and kept. Fewer sockets;
  a connection to an address without a server is reset. It takes the port on every address of
  the machine, so another local cluster's containers cannot use that port meanwhile.

Owns the sockets and the address → server table; knows nothing about pods or containers.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import weakref
from collections.abc import Callable
from typing import Final, Literal

ListenMode = Literal["pod", "any"]
LISTEN_MODES: Final[tuple[ListenMode, ...]] = ("pod", "any")
ANY_ADDRESS: Final = "0.0.0.0"

# What accepts a connection: aiohttp's ``web.Server`` is such a factory (``runner.server``).
ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class _Dispatch(asyncio.Protocol):
    """Lives only until ``connection_made``: it picks the server and hands the connection over."""

    def __init__(self, owner: HollowListeners) -> None:
        self._owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        sockname = transport.get_extra_info("sockname")
        key = (str(sockname[0]), int(sockname[1])) if sockname else ("", 0)
        factory = self._owner.lookup(*key)
        if factory is None:
            transport.abort()  # no server at that address (any mode): a reset, like a closed port
            return
        self._owner.handed_over(key, transport)
        protocol = factory()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)


class HollowListeners:
    """Listening sockets shared by the in-process servers of one kubelet (see the module docstring)."""

    def __init__(self, mode: ListenMode = "pod", backlog: int = 128) -> None:
        if mode not in LISTEN_MODES:
            raise ValueError(f"listen mode must be one of {', '.join(LISTEN_MODES)}, not {mode!r}")
        self.mode = mode
        self._backlog = backlog
        self._targets: dict[tuple[str, int], ProtocolFactory] = {}
        self._servers: dict[tuple[str, int], asyncio.Server] = {}
        # The connections handed to each server, so that a killed container drops them at once.
        self._connections: dict[tuple[str, int], weakref.WeakSet[asyncio.Transport]] = {}

    def lookup(self, host: str, port: int) -> ProtocolFactory | None:
        return self._targets.get((host, port))

    def registered(self) -> list[tuple[str, int]]:
        return list(self._targets)

    def sockets(self) -> int:
        """How many listening sockets are open."""
        return len(self._servers)

    async def register(self, host: str, port: int, factory: ProtocolFactory) -> None:
        """Serve ``host:port`` with ``factory``; raises OSError (EADDRINUSE) as a bind would."""
        key = (host, port)
        if key in self._targets:
            raise OSError(errno.EADDRINUSE, f"address already in use: {host}:{port}")
        listen_on = (ANY_ADDRESS, port) if self.mode == "any" else key
        if listen_on not in self._servers:
            self._servers[listen_on] = await self._listen(*listen_on)
        self._targets[key] = factory

    def handed_over(self, key: tuple[str, int], transport: asyncio.Transport) -> None:
        self._connections.setdefault(key, weakref.WeakSet()).add(transport)

    def unregister(self, host: str, port: int) -> None:
        """Stop accepting for ``host:port``; connections already handed over stay the server's
        (its graceful shutdown closes them)."""
        self._connections.pop((host, port), None)
        if self._targets.pop((host, port), None) is None or self.mode == "any":
            return
        server = self._servers.pop((host, port), None)
        if server is not None:
            server.close()

    def abort(self, host: str, port: int) -> None:
        """Stop accepting for ``host:port`` and reset every connection made to it (a killed process)."""
        transports = list(self._connections.get((host, port), ()))
        self.unregister(host, port)
        for transport in transports:
            transport.abort()

    async def close(self) -> None:
        self._targets.clear()
        self._connections.clear()
        servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()

    async def _listen(self, host: str, port: int) -> asyncio.Server:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # As aiohttp's TCPSite does: a port in TIME_WAIT from an earlier instance is reusable.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: _Dispatch(self), sock=sock, backlog=self._backlog)
