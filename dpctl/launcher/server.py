"""The launcher's HTTP API (contract §3.2, L1–L10) as an aiohttp app over a :class:`Manager`.

Errors are JSON ``{"detail": ...}`` as upstream's FastAPI app writes them, a body that fails
validation included (422, with pydantic's list of what is wrong), so a client reads every
failure the same way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web
from pydantic import TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python

from dpctl.launcher.api import API_VERSION, ENDPOINTS, INSTANCES_PATH, SERVICE_NAME, WATCH_PATH, VllmConfig
from dpctl.launcher.gpus import GpuLookupFailed, UnknownGpu
from dpctl.launcher.logrange import MalformedRange, RangeNotSatisfiable, clamp, parse_range
from dpctl.launcher.manager import Manager
from dpctl.launcher.table import InstanceExists, InstanceNotFound, RevisionGone

log = logging.getLogger(__name__)

MANAGER: Final = web.AppKey("manager", Manager)
_OCTETS: Final = "application/octet-stream"
_BOOL: Final = TypeAdapter(bool)
_INT: Final = TypeAdapter(int)


class _Invalid(Exception):
    """A request that fails validation: HTTP 422 with these pydantic-style errors."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("invalid request")
        self.errors = errors


def detail(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"detail": message}, status=status, headers=headers)


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except _Invalid as e:
        return web.json_response({"detail": e.errors}, status=422)
    except web.HTTPException as e:
        # aiohttp's own 404/405 for an unknown path or method, in the API's error shape.
        if e.empty_body or e.status < 400:
            raise
        return detail(e.status, e.reason, {k: v for k, v in e.headers.items() if k == "Allow"})
    except Exception as e:
        log.exception("Failed to serve %s %s", request.method, request.path)
        return detail(500, str(e))


def _manager(request: web.Request) -> Manager:
    return request.app[MANAGER]


async def _body(request: web.Request) -> VllmConfig:
    raw = await request.read()
    try:
        return VllmConfig.model_validate_json(raw)
    except ValidationError as e:
        raise _Invalid(_errors(e, "body")) from None


def _errors(e: ValidationError, *where: str) -> list[dict[str, Any]]:
    """pydantic's errors as FastAPI words them, located in the request ("body", "query")."""
    return [
        {
            "type": err["type"],
            "loc": [*where, *err["loc"]],
            "msg": err["msg"],
            "input": to_jsonable_python(err["input"]),
        }
        for err in e.errors(include_url=False, include_context=False)
    ]


def _query(request: web.Request, name: str, adapter: TypeAdapter[Any], default: Any) -> Any:
    value = request.query.get(name)
    if value is None:
        return default
    try:
        return adapter.validate_python(value)
    except ValidationError as e:
        raise _Invalid(_errors(e, "query", name)) from None


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "OK"})


async def index(request: web.Request) -> web.Response:
    return web.json_response({"name": SERVICE_NAME, "version": API_VERSION, "endpoints": ENDPOINTS})


async def create(request: web.Request) -> web.Response:
    return await _create(request, None)


async def put(request: web.Request) -> web.Response:
    return await _create(request, request.match_info["instance_id"])


async def _create(request: web.Request, instance_id: str | None) -> web.Response:
    config = await _body(request)
    try:
        state = await _manager(request).create(config, instance_id)
    except InstanceExists as e:
        return detail(409, str(e))
    except UnknownGpu as e:
        return detail(400, str(e))
    except (GpuLookupFailed, OSError) as e:
        log.error("Failed to create vLLM instance %s: %s", instance_id or "(new id)", e)
        return detail(500, str(e))
    return web.json_response(state, status=201)


async def list_instances(request: web.Request) -> web.Response:
    manager = _manager(request)
    return web.json_response(manager.detail() if _query(request, "detail", _BOOL, True) else manager.ids())


async def get_instance(request: web.Request) -> web.Response:
    instance_id = request.match_info["instance_id"]
    try:
        return web.json_response(_manager(request).table.get(instance_id).state())
    except InstanceNotFound as e:
        return detail(404, str(e))


async def delete_instance(request: web.Request) -> web.Response:
    try:
        return web.json_response(await _manager(request).delete(request.match_info["instance_id"]))
    except InstanceNotFound as e:
        return detail(404, str(e))


async def delete_all(request: web.Request) -> web.Response:
    return web.json_response(await _manager(request).delete_all())


async def instance_log(request: web.Request) -> web.Response:
    manager = _manager(request)
    instance_id = request.match_info["instance_id"]
    try:
        manager.table.get(instance_id)
        header = request.headers.get("Range")
        start, end = (0, None) if header is None else parse_range(header)
        with manager.log_path(instance_id).open("rb") as f:
            total = os.fstat(f.fileno()).st_size
            part = clamp(start, end, total)
            f.seek(part.start)
            data = f.read(part.length)
    except InstanceNotFound as e:
        return detail(404, str(e))
    except MalformedRange as e:
        return detail(400, str(e))
    except RangeNotSatisfiable as e:
        return web.Response(status=416, content_type=_OCTETS, headers={"Content-Range": f"bytes */{e.total}"})
    except FileNotFoundError:
        return web.Response(status=416, content_type=_OCTETS, headers={"Content-Range": "bytes */0"})
    return web.Response(
        body=data,
        status=200 if header is None else 206,
        content_type=_OCTETS,
        headers={"Accept-Ranges": "bytes", "Content-Range": f"bytes {start}-{start + len(data) - 1}/{total}"},
    )


async def watch(request: web.Request) -> web.StreamResponse:
    manager = _manager(request)
    since: int | None = _query(request, "since", _INT, None)
    try:
        first, cursor = manager.watch_start(since)
    except RevisionGone as e:
        return detail(410, str(e))
    response = web.StreamResponse(
        headers={"Content-Type": "application/x-ndjson", "X-Content-Type-Options": "nosniff"}
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        for line in first:
            await response.write(line)
        async for line in manager.follow(cursor):
            await response.write(line)
    except ConnectionResetError:
        pass  # the watcher went away
    else:
        await response.write_eof()
    return response


def make_app(manager: Manager) -> web.Application:
    app = web.Application(middlewares=[_json_errors])
    app[MANAGER] = manager

    async def end_watches(app: web.Application) -> None:
        manager.end_watches()

    app.on_shutdown.append(end_watches)
    r = app.router
    r.add_get("/health", health)
    r.add_get("/", index)
    # Before the {instance_id} routes, which would take "watch" for an id.
    r.add_get(WATCH_PATH, watch)
    r.add_post(INSTANCES_PATH, create)
    r.add_get(INSTANCES_PATH, list_instances)
    r.add_delete(INSTANCES_PATH, delete_all)
    r.add_put(INSTANCES_PATH + "/{instance_id}", put)
    r.add_get(INSTANCES_PATH + "/{instance_id}", get_instance)
    r.add_delete(INSTANCES_PATH + "/{instance_id}", delete_instance)
    r.add_get(INSTANCES_PATH + "/{instance_id}/log", instance_log)
    return app
