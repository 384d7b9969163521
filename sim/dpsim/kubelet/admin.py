"""The simulated kubelet's admin API (its client is ``ctl``).

A plain-HTTP server on the first node's address (a free port, written with the pid to
``<state dir>/kubelet-admin.json``) through which tests and people change what a node does:

- ``GET  /healthz``                      -> ``ok``
- ``GET  /nodes``                        -> ``{"nodes": [{"name", "state", "ip", "port"}, ...]}``
- ``POST /nodes/{name}/not-ready``       the node stops heartbeats and reports ``Ready=False``
- ``POST /nodes/{name}/ready``           it reports ``Ready=True`` and heartbeats again
- ``POST /nodes/{name}/remove``          its pods' processes are killed and its Node deleted
- ``POST /nodes/{name}/add``             a removed (or new ``<prefix><n>``) node registers
- ``GET  /ledger``                       -> ``{"holds", "awake", "violations": [...]}`` of the hollow
  runtime's GPU ledger (404 without ``--hollow``: processes share the sqlite file instead)

Each POST returns once the change is made (200 with the node's description), 404 for an unknown
node, 409 when the change does not apply to the node's state, 502 when the API server refused.
Only local users can reach it: it binds the loopback address and changes only simulated nodes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import aiohttp
from aiohttp import web

from dpctl.kube import ApiError
from dpctl.log import KV
from dpsim.emulator.ledger import GpuLedger
from dpsim.kubelet.ctl import ACTIONS, ADMIN_FILE
from dpsim.kubelet.nodes import NodeAgent


class AdminServer:
    def __init__(
        self,
        state_dir: Path,
        host: str,
        agents: Mapping[str, NodeAgent],
        add_node: Callable[[str], Awaitable[NodeAgent]],
        log: KV,
        ledger: GpuLedger | None = None,
    ) -> None:
        self._file = state_dir / ADMIN_FILE
        self._host = host
        self._ledger = ledger
        self._agents = agents
        self._add_node = add_node
        self._log = log
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/healthz", _healthz)
        app.router.add_get("/nodes", self._list)
        app.router.add_post("/nodes/{name}/{action}", self._act)
        app.router.add_get("/ledger", self._ledger_state)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, 0)
        await site.start()
        port = int(self._runner.addresses[0][1])
        url = f"http://{self._host}:{port}"
        tmp = self._file.with_name(f".{self._file.name}.tmp")
        tmp.write_text(json.dumps({"port": port, "pid": os.getpid(), "url": url}))
        os.replace(tmp, self._file)
        self._log.info("Admin API listening", url=url, file=str(self._file))
        return port

    async def close(self) -> None:
        self._file.unlink(missing_ok=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _list(self, _: web.Request) -> web.Response:
        return web.json_response({"nodes": [a.describe() for a in self._agents.values()]})

    async def _ledger_state(self, _: web.Request) -> web.Response:
        if self._ledger is None:
            return _error(404, "no in-process GPU ledger (the kubelet runs without --hollow)")
        holds = self._ledger.holds()
        return web.json_response(
            {
                "holds": len(holds),
                "awake": sum(1 for h in holds if h.awake),
                "violations": [str(v) for v in self._ledger.violations()],
            }
        )

    async def _act(self, request: web.Request) -> web.Response:
        name, action = request.match_info["name"], request.match_info["action"]
        if action not in ACTIONS:
            return _error(404, f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
        agent = self._agents.get(name)
        try:
            if agent is None:
                if action != "add":
                    return _error(404, f"no node {name!r}")
                agent = await self._add_node(name)
            elif action == "not-ready":
                await agent.make_not_ready()
            elif action == "ready":
                await agent.make_ready()
            elif action == "remove":
                await agent.remove()
            else:
                await agent.add()
        except ValueError as e:
            return _error(404, str(e))
        except RuntimeError as e:
            return _error(409, str(e))
        except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as e:
            return _error(502, f"the API server refused: {e}")
        self._log.info("Admin action done", node=name, action=action, state=agent.state)
        return web.json_response(agent.describe())


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
