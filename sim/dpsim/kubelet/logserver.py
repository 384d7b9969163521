"""Each node's kubelet endpoint: HTTPS on ``<InternalIP>:<daemonEndpoints port>``, as the API
server dials it for ``kubectl logs``.

Serves ``GET /containerLogs/{namespace}/{pod}/{container}`` with the query of ``PodLogOptions``
(``previous``, ``follow``, ``tailLines``, ``limitBytes``, ``timestamps``, ``sinceSeconds``,
``sinceTime``) and ``GET /healthz``. Errors read as a kubelet's (e.g. ``previous terminated
container "c" in pod "p" not found``, 400), because ``kubectl`` shows the body to the user.

TLS: the serving certificate of each node is issued by the cluster CA (``--ca-cert``/``--ca-key``)
for the node's IP and name, so an API server started with ``--kubelet-certificate-authority``
verifies it; without a CA a throw-away one is made. With a CA, clients may present a certificate
(verified against it) and logs are served only to those that do, as a kubelet with
``--client-ca-file`` authenticates the API server. There is no authorization step beyond that.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web

from dpctl.log import KV
from dpsim.kubelet.logfiles import LogOptions, log_path, parse_entries, render, select
from dpsim.kubelet.nodes import NodeAgent
from dpsim.kubelet.podrecord import PodRecord
from dpsim.localcluster import pki

FOLLOW_POLL_S: Final = 0.25
_READ_CHUNK: Final = 256 * 1024
_NODE: Final = web.AppKey("node", str)


class LogRequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class LogTarget:
    path: Path
    live: Callable[[], bool]  # whether the instance may still write (follow keeps going)


def parse_options(query: dict[str, str]) -> LogOptions:
    def flag(name: str) -> bool:
        return query.get(name, "").lower() in ("true", "1")

    def number(name: str) -> int | None:
        value = query.get(name)
        if value is None or value == "":
            return None
        try:
            return int(value)
        except ValueError:
            raise LogRequestError(400, f"invalid {name}: {value!r}") from None

    since: dt.datetime | None = None
    since_seconds = number("sinceSeconds")
    if since_seconds is not None:
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=since_seconds)
    elif query.get("sinceTime"):
        try:
            since = dt.datetime.fromisoformat(query["sinceTime"].replace("Z", "+00:00"))
        except ValueError:
            raise LogRequestError(400, f"invalid sinceTime: {query['sinceTime']!r}") from None
    return LogOptions(
        tail_lines=number("tailLines"),
        since_time=since,
        limit_bytes=number("limitBytes"),
        timestamps=flag("timestamps"),
        follow=flag("follow"),
        previous=flag("previous"),
    )


def resolve_target(rec: PodRecord | None, pod: str, container: str, previous: bool) -> LogTarget:
    """Which log file a request means, or the kubelet's error for why there is none."""
    if rec is None:
        raise LogRequestError(404, f'pod "{pod}" not found')
    r = rec.record(container)
    if r is None:
        raise LogRequestError(400, f'container "{container}" in pod "{pod}" is not valid')
    container_dir = rec.dir / "logs" / container
    if previous:
        if r.restart_count < 1 or not log_path(container_dir, r.restart_count - 1).exists():
            raise LogRequestError(
                400, f'previous terminated container "{container}" in pod "{pod}" not found'
            )
        return LogTarget(log_path(container_dir, r.restart_count - 1), lambda: False)
    if not r.ever_ran:
        reason = r.waiting[0] if r.waiting else "ContainerCreating"
        raise LogRequestError(400, f'container "{container}" in pod "{pod}" is waiting to start: {reason}')
    path = log_path(container_dir, r.restart_count)
    if not path.exists():
        raise LogRequestError(404, f'log of container "{container}" in pod "{pod}" not found')
    running_id = r.running.container_id if r.running else None
    return LogTarget(
        path,
        lambda: running_id is not None and r.running is not None and r.running.container_id == running_id,
    )


def _read_from(path: Path, offset: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read()


async def stream_logs(request: web.Request, target: LogTarget, opts: LogOptions) -> web.StreamResponse:
    resp = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
    await resp.prepare(request)
    budget = opts.limit_bytes if opts.limit_bytes and opts.limit_bytes > 0 else None
    data = await asyncio.to_thread(_read_from, target.path, 0)
    complete = data[: data.rfind(b"\n") + 1]
    offset = len(complete)
    out = render(select(parse_entries(complete), opts), opts.timestamps)
    budget = await _send(resp, out, budget)
    follow_opts = LogOptions(timestamps=opts.timestamps)
    while opts.follow and budget != 0:
        live = target.live()
        more = await asyncio.to_thread(_read_from, target.path, offset)
        complete = more[: more.rfind(b"\n") + 1]
        if complete:
            offset += len(complete)
            budget = await _send(
                resp, render(select(parse_entries(complete), follow_opts), opts.timestamps), budget
            )
        elif not live:
            break
        else:
            await asyncio.sleep(FOLLOW_POLL_S)
    await resp.write_eof()
    return resp


async def _send(resp: web.StreamResponse, data: bytes, budget: int | None) -> int | None:
    if budget is not None:
        data = data[:budget]
        budget -= len(data)
    if data:
        await resp.write(data)
    return budget


class LogServer:
    """One HTTPS listener per node, on the node's IP and kubelet port."""

    def __init__(
        self,
        find: Callable[[str, str, str], PodRecord | None],
        cert_dir: Path,
        ca: pki.CertKey | None,
        ca_cert_path: Path | None,
        log: KV,
    ) -> None:
        self._find = find
        self._cert_dir = cert_dir
        self._ca = ca or pki.new_ca("dpctl-sim-kubelet-ca")
        self._ca_cert_path = ca_cert_path if ca is not None else None
        self._log = log
        self._runners: dict[str, web.AppRunner] = {}

    def _tls(self, agent: NodeAgent) -> ssl.SSLContext:
        cert = self._cert_dir / f"{agent.name}.crt"
        key = self._cert_dir / f"{agent.name}.key"
        issued = pki.issue_serving_cert(
            self._ca, [agent.ip], [agent.name], common_name=f"{agent.name}@dpctl-sim"
        )
        issued.write(cert, key)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if self._ca_cert_path is not None:
            ctx.load_verify_locations(cafile=str(self._ca_cert_path))
            ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx

    async def start_node(self, agent: NodeAgent) -> None:
        if agent.name in self._runners:
            return
        app = web.Application()
        app[_NODE] = agent.name
        app.router.add_get("/healthz", _healthz)
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._container_logs)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, agent.ip, agent.port, ssl_context=self._tls(agent), reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runners[agent.name] = runner

    async def stop_node(self, name: str) -> None:
        runner = self._runners.pop(name, None)
        if runner is not None:
            await runner.cleanup()

    async def close(self) -> None:
        for name in list(self._runners):
            await self.stop_node(name)

    async def _container_logs(self, request: web.Request) -> web.StreamResponse:
        node = request.app[_NODE]
        ns, pod, container = (request.match_info[k] for k in ("namespace", "pod", "container"))
        try:
            if self._ca_cert_path is not None and not _peer_cert(request):
                raise LogRequestError(
                    401, "Unauthorized: a client certificate from the cluster CA is required"
                )
            opts = parse_options(dict(request.query))
            target = resolve_target(self._find(node, ns, pod), pod, container, opts.previous)
        except LogRequestError as e:
            return web.Response(status=e.status, text=str(e))
        self._log.debug("Serving logs", node=node, pod=f"{ns}/{pod}", container=container, follow=opts.follow)
        try:
            return await stream_logs(request, target, opts)
        except (ConnectionResetError, OSError) as e:
            self._log.debug("Log client went away", pod=f"{ns}/{pod}", error=str(e))
            raise


def _peer_cert(request: web.Request) -> bool:
    transport = request.transport
    return bool(transport is not None and transport.get_extra_info("peercert"))


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")
