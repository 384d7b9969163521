"""The shared HTTP helper against real loopback servers: answers, errors, timeouts, release."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
from aiohttp import web

from dpctl.clients import HttpCallError, HttpClient
from dpctl.clients.http import MAX_BODY_BYTES, pod_url

from .conftest import Observations, Serve, reply

pytestmark = pytest.mark.filterwarnings(
    "error::ResourceWarning", "error::pytest.PytestUnraisableExceptionWarning"
)


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def never_answer(request: web.Request) -> web.Response:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def app_with(*routes: web.RouteDef) -> web.Application:
    app = web.Application()
    app.add_routes(list(routes))
    return app


async def test_success_returns_status_and_body(
    http: HttpClient, serve: Serve, observations: Observations
) -> None:
    port = await serve(app_with(web.get("/x", reply(text="hello"))))
    result = await http.call("say hello", "GET", f"http://127.0.0.1:{port}/x", timeout=5)
    assert (result.status, result.body) == (200, b"hello")
    assert [(p, s) for p, s, _ in observations.calls] == [("say hello", 200)]


async def test_json_body_is_sent(http: HttpClient, serve: Serve) -> None:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"got": await request.json(), "type": request.content_type})

    port = await serve(app_with(web.post("/echo", echo)))
    result = await http.call("echo", "POST", f"http://127.0.0.1:{port}/echo", json_body={"a": 1}, timeout=5)
    assert json.loads(result.body) == {"got": {"a": 1}, "type": "application/json"}


async def test_error_status_carries_a_body_excerpt(
    http: HttpClient, serve: Serve, observations: Observations
) -> None:
    body = "CUDA Error: out of memory " + "x" * 500
    port = await serve(app_with(web.post("/wake_up", reply(status=500, text=body))))
    with pytest.raises(HttpCallError) as caught:
        await http.call("wake", "POST", f"http://127.0.0.1:{port}/wake_up", timeout=5)
    err = caught.value
    assert err.status == 500
    assert err.detail.startswith("HTTP 500 Internal Server Error: CUDA Error: out of memory xxx")
    assert err.detail.endswith("...")
    assert len(err.detail) < 300, "only the first 200 bytes of the body"
    assert str(err).startswith(f"wake: http://127.0.0.1:{port}/wake_up: HTTP 500")
    assert observations.calls[0][1] == 500


async def test_empty_error_body_says_so(http: HttpClient, serve: Serve) -> None:
    port = await serve(app_with(web.get("/x", reply(status=503))))
    with pytest.raises(HttpCallError, match=r"HTTP 503 Service Unavailable: \(empty body\)"):
        await http.call("probe", "GET", f"http://127.0.0.1:{port}/x", timeout=5)


async def test_redirects_are_not_followed(http: HttpClient, serve: Serve) -> None:
    port = await serve(app_with(web.get("/x", reply(status=302, headers={"Location": "/y"}))))
    with pytest.raises(HttpCallError) as caught:
        await http.call("probe", "GET", f"http://127.0.0.1:{port}/x", timeout=5)
    assert caught.value.status == 302


async def test_a_server_that_never_answers_fails_within_the_timeout(
    http: HttpClient, serve: Serve, observations: Observations
) -> None:
    port = await serve(app_with(web.post("/sleep", never_answer)))
    started = time.monotonic()
    with pytest.raises(HttpCallError) as caught:
        await http.call("sleep", "POST", f"http://127.0.0.1:{port}/sleep", timeout=0.2)
    assert time.monotonic() - started < 2.0
    assert caught.value.status is None
    assert caught.value.detail == "timed out after 0.2 s"
    assert observations.calls[0][1] == 0


async def test_connection_refused_is_worded_for_a_user(http: HttpClient, observations: Observations) -> None:
    port = free_port()
    with pytest.raises(HttpCallError) as caught:
        await http.call("query GPUs", "GET", f"http://127.0.0.1:{port}/x", timeout=5)
    assert caught.value.status is None
    assert (
        caught.value.detail
        == f"connection refused: nothing listens on port {port} yet (is the container up?)"
    )
    assert observations.calls[0][1] == 0


async def test_oversized_body_is_refused(http: HttpClient, serve: Serve) -> None:
    async def stream_big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()  # chunked: no Content-Length to check up front
        await resp.prepare(request)
        chunk = b"x" * 65536
        for _ in range(MAX_BODY_BYTES // len(chunk) + 2):
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    port = await serve(app_with(web.get("/big", stream_big)))
    with pytest.raises(HttpCallError, match="larger than"):
        await http.call("big", "GET", f"http://127.0.0.1:{port}/big", timeout=5)


async def test_bodies_are_released_so_one_connection_serves_every_call(serve: Serve) -> None:
    routes = [
        web.get("/ok", reply(text="fine")),
        web.get("/fail", reply(status=500, text="broken")),
    ]
    port = await serve(app_with(*routes))
    client = HttpClient(max_connections=1)
    try:
        async with asyncio.timeout(5):
            for path in ["/ok", "/fail", "/ok", "/fail", "/ok"]:
                try:
                    await client.call("p", "GET", f"http://127.0.0.1:{port}{path}", timeout=1)
                except HttpCallError as err:
                    assert err.status == 500
    finally:
        await client.close()


async def test_close_then_reuse_opens_a_new_session(serve: Serve) -> None:
    port = await serve(app_with(web.get("/ok", reply(text="fine"))))
    client = HttpClient()
    await client.call("p", "GET", f"http://127.0.0.1:{port}/ok", timeout=5)
    await client.close()
    await client.call("p", "GET", f"http://127.0.0.1:{port}/ok", timeout=5)
    await client.close()
    await client.close()  # idempotent


def test_pod_url() -> None:
    assert pod_url("p", "10.0.0.1", 8000, "/sleep", {"level": "1"}) == "http://10.0.0.1:8000/sleep?level=1"
    assert pod_url("p", "fd00::1", 8081, "/x") == "http://[fd00::1]:8081/x"
    with pytest.raises(HttpCallError, match="no IP address yet"):
        pod_url("wake", "", 8000, "/wake_up")
