"""Test-only fault injection for the HTTP servers dpctl runs in Pods (stub, vLLM emulator).

Off unless the container's environment says ``DPCTL_FAULT_INJECTION=1``; then an aiohttp
middleware consults a rule list before each request and may delay it, hang it (until the
client gives up), or answer with a chosen status and body instead of the real handler. Rules
come from ``DPCTL_FAULTS`` (a JSON list) at start and can be replaced at run time through
``GET/PUT/DELETE /debug/faults`` on the same server, so a soak test can make a running Pod
misbehave and recover. Production Pods never set the variable, so none of this is reachable.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

ENABLE_ENV = "DPCTL_FAULT_INJECTION"
RULES_ENV = "DPCTL_FAULTS"
CONTROL_PATH = "/debug/faults"
# A hang lasts until the client disconnects, but never longer than this.
MAX_HANG_S = 3600.0


class Fault(BaseModel):
    """What to do to requests whose path (and method, when given) match."""

    model_config = ConfigDict(extra="forbid")

    path: str
    method: str | None = None
    delay_s: float = Field(default=0.0, ge=0, le=MAX_HANG_S)
    hang: bool = False
    status: int | None = Field(default=None, ge=100, le=599)
    body: str = ""
    content_type: str = "text/plain"
    # How many matching requests to affect; None = all of them.
    times: int | None = Field(default=None, ge=1)


_RULES = TypeAdapter(list[Fault])
# How often a hung request looks whether its client has given up.
_HANG_POLL_S = 0.2
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Faults:
    def __init__(self, rules: list[Fault] | None = None) -> None:
        self.rules = list(rules or [])

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Faults | None:
        """None unless injection is enabled; bad rule JSON fails the start, loudly."""
        if env.get(ENABLE_ENV) != "1":
            return None
        raw = env.get(RULES_ENV, "")
        return cls(_RULES.validate_json(raw) if raw.strip() else [])

    def take(self, request: web.Request) -> Fault | None:
        for rule in self.rules:
            if rule.path == request.path and (rule.method is None or rule.method.upper() == request.method):
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times == 0:
                        self.rules.remove(rule)
                return rule
        return None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == CONTROL_PATH:
            return await handler(request)
        fault = self.take(request)
        if fault is None:
            return await handler(request)
        if fault.hang:
            await _until_client_leaves(request)
            return web.Response(status=504, text="hung on purpose")
        if fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if fault.status is None:
            return await handler(request)
        return web.Response(status=fault.status, text=fault.body, content_type=fault.content_type)

    def install(self, app: web.Application) -> None:
        """Add the middleware and the control routes to an app before it starts."""
        app.middlewares.append(self.middleware)
        app.router.add_get(CONTROL_PATH, self._get)
        app.router.add_put(CONTROL_PATH, self._put)
        app.router.add_delete(CONTROL_PATH, self._delete)

    async def _get(self, _: web.Request) -> web.Response:
        return web.json_response([r.model_dump() for r in self.rules])

    async def _put(self, request: web.Request) -> web.Response:
        try:
            self.rules = _RULES.validate_json(await request.read())
        except (ValidationError, json.JSONDecodeError) as err:
            return web.Response(status=400, text=str(err))
        return web.json_response([r.model_dump() for r in self.rules])

    async def _delete(self, _: web.Request) -> web.Response:
        self.rules = []
        return web.json_response([])


async def _until_client_leaves(request: web.Request) -> None:
    """Hang like a wedged server, but free the handler once the client disconnects."""
    deadline = asyncio.get_running_loop().time() + MAX_HANG_S
    while asyncio.get_running_loop().time() < deadline:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(_HANG_POLL_S)
