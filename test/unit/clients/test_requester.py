"""RequesterClient against a loopback stand-in for the requester stub's SPI."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from dpctl import api
from dpctl.clients import HttpCallError, HttpClient, RequesterClient

from .conftest import Serve, reply

pytestmark = pytest.mark.filterwarnings(
    "error::ResourceWarning", "error::pytest.PytestUnraisableExceptionWarning"
)


async def accelerators_server(serve: Serve, body: bytes, status: int = 200) -> int:
    app = web.Application()
    app.router.add_get(api.ORIGINAL.accelerators_path, reply(body=body, status=status))
    return await serve(app)


async def test_accelerators_returns_the_uuids(http: HttpClient, serve: Serve) -> None:
    port = await accelerators_server(serve, b'["GPU-aaaa", "GPU-bbbb"]')
    assert await RequesterClient(http).accelerators("127.0.0.1", port) == ["GPU-aaaa", "GPU-bbbb"]


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        pytest.param(b"", "empty response body", id="empty-body"),
        pytest.param(b"  \n", "empty response body", id="blank-body"),
        pytest.param(b"<html>oops</html>", "response is not JSON", id="not-json"),
        pytest.param(b'{"gpus": ["GPU-a"]}', "got a JSON object", id="not-a-list"),
        pytest.param(b'"GPU-a"', "got a JSON string", id="bare-string"),
        pytest.param(b'["GPU-a", 3]', "element 1 of the GPU list is a JSON number", id="number-element"),
        pytest.param(b"[null]", "element 0 of the GPU list is a JSON null", id="null-element"),
        pytest.param(b'["GPU-a", ""]', "element 1 of the GPU list is an empty string", id="empty-element"),
        pytest.param(b"[]", "the requester reports no GPUs", id="no-gpus"),
    ],
)
async def test_accelerators_rejects_bad_answers(
    http: HttpClient, serve: Serve, body: bytes, complaint: str
) -> None:
    port = await accelerators_server(serve, body)
    with pytest.raises(HttpCallError) as caught:
        await RequesterClient(http).accelerators("127.0.0.1", port)
    assert complaint in caught.value.detail
    assert caught.value.status == 200
    assert caught.value.url == f"http://127.0.0.1:{port}{api.ORIGINAL.accelerators_path}"


async def test_accelerators_http_error(http: HttpClient, serve: Serve) -> None:
    port = await accelerators_server(serve, b"nvidia-smi failed", status=500)
    with pytest.raises(HttpCallError, match="HTTP 500 Internal Server Error: nvidia-smi failed"):
        await RequesterClient(http).accelerators("127.0.0.1", port)


async def test_accelerators_times_out(http: HttpClient, serve: Serve) -> None:
    async def hang(request: web.Request) -> web.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_get(api.ORIGINAL.accelerators_path, hang)
    port = await serve(app)
    with pytest.raises(HttpCallError, match=r"timed out after 0\.2 s"):
        await RequesterClient(http, timeout=0.2).accelerators("127.0.0.1", port)


async def test_readiness_relay_posts_to_the_spi(http: HttpClient, serve: Serve) -> None:
    posted: list[str] = []

    async def record(request: web.Request) -> web.Response:
        posted.append(request.path)
        return web.Response(text="OK")

    app = web.Application()
    app.router.add_post(api.BECOME_READY_PATH, record)
    app.router.add_post(api.BECOME_UNREADY_PATH, record)
    port = await serve(app)
    client = RequesterClient(http)
    await client.become_ready("127.0.0.1", port)
    await client.become_unready("127.0.0.1", port)
    assert posted == [api.BECOME_READY_PATH, api.BECOME_UNREADY_PATH]


async def test_readiness_relay_failure_is_an_error(http: HttpClient, serve: Serve) -> None:
    port = await serve(web.Application())  # every path 404s
    with pytest.raises(HttpCallError) as caught:
        await RequesterClient(http).become_ready("127.0.0.1", port)
    assert caught.value.status == 404
    assert caught.value.purpose == "relay readiness to the requester"
