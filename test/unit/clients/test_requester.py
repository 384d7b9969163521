"""RequesterClient against a loopback stand-in for the requester stub's SPI."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from dpctl import api
from dpctl.clients import HttpCallError, HttpClient, RequesterClient
from dpctl.clients.requester import SET_LOG_TIMEOUT_S, LogGapError

from .conftest import Serve, hang, reply

pytestmark = pytest.mark.filterwarnings(
    "error::ResourceWarning", "error::pytest.PytestUnraisableExceptionWarning"
)


async def accelerators_server(serve: Serve, body: bytes, status: int = 200) -> int:
    app = web.Application()
    app.router.add_get(api.ORIGINAL.accelerators_path, reply(body=body, status=status))
    return await serve(app)


async def test_accelerators_returns_the_uuids(http: HttpClient, serve: Serve) -> None:
    port = await accelerators_server(serve, b'["GPU-aaaa", "GPU-bbbb"]')
    assert await RequesterClient(http).accelerators("127.0.0.1", port, api.ORIGINAL) == [
        "GPU-aaaa",
        "GPU-bbbb",
    ]


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
    ],
)
async def test_accelerators_rejects_bad_answers(
    http: HttpClient, serve: Serve, body: bytes, complaint: str
) -> None:
    port = await accelerators_server(serve, body)
    with pytest.raises(HttpCallError) as caught:
        await RequesterClient(http).accelerators("127.0.0.1", port, api.ORIGINAL)
    assert complaint in caught.value.detail
    assert caught.value.status == 200
    assert caught.value.url == f"http://127.0.0.1:{port}{api.ORIGINAL.accelerators_path}"


async def test_accelerators_http_error(http: HttpClient, serve: Serve) -> None:
    port = await accelerators_server(serve, b"nvidia-smi failed", status=500)
    with pytest.raises(HttpCallError, match="HTTP 500 Internal Server Error: nvidia-smi failed"):
        await RequesterClient(http).accelerators("127.0.0.1", port, api.ORIGINAL)


async def test_accelerators_times_out(http: HttpClient, serve: Serve) -> None:
    app = web.Application()
    app.router.add_get(api.ORIGINAL.accelerators_path, hang)
    port = await serve(app)
    with pytest.raises(HttpCallError, match=r"timed out after 0\.2 s"):
        await RequesterClient(http, timeout=0.2).accelerators("127.0.0.1", port, api.ORIGINAL)


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


# --- both dialects' accelerators paths ---------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "served"),
    [
        pytest.param(api.HEAD, api.ORIGINAL, id="head-requester-old-stub"),
        pytest.param(api.ORIGINAL, api.HEAD, id="old-requester-head-stub"),
    ],
)
async def test_accelerators_falls_back_to_the_other_dialects_path_on_404(
    http: HttpClient, serve: Serve, asked: api.Dialect, served: api.Dialect
) -> None:
    asked_paths: list[str] = []

    async def gpus(request: web.Request) -> web.Response:
        asked_paths.append(request.path)
        if request.path != served.accelerators_path:
            return web.Response(status=404, text="404 page not found")
        return web.Response(text='["GPU-aaaa"]')

    app = web.Application()
    for dialect in api.DIALECTS:
        app.router.add_get(dialect.accelerators_path, gpus)
    port = await serve(app)
    assert await RequesterClient(http).accelerators("127.0.0.1", port, asked) == ["GPU-aaaa"]
    assert asked_paths == [asked.accelerators_path, served.accelerators_path]


@pytest.mark.parametrize("dialect", api.DIALECTS, ids=lambda d: d.name)
async def test_accelerators_asks_the_dialects_own_path_first(
    http: HttpClient, serve: Serve, dialect: api.Dialect
) -> None:
    asked_paths: list[str] = []

    async def gpus(request: web.Request) -> web.Response:
        asked_paths.append(request.path)
        return web.Response(text='["GPU-aaaa"]')

    app = web.Application()
    for d in api.DIALECTS:
        app.router.add_get(d.accelerators_path, gpus)
    port = await serve(app)
    await RequesterClient(http).accelerators("127.0.0.1", port, dialect)
    assert asked_paths == [dialect.accelerators_path]


async def test_accelerators_does_not_fall_back_on_other_errors(http: HttpClient, serve: Serve) -> None:
    asked_paths: list[str] = []

    async def broken(request: web.Request) -> web.Response:
        asked_paths.append(request.path)
        return web.Response(status=503, text="no GPUs found")

    app = web.Application()
    for d in api.DIALECTS:
        app.router.add_get(d.accelerators_path, broken)
    port = await serve(app)
    with pytest.raises(HttpCallError, match="HTTP 503"):
        await RequesterClient(http).accelerators("127.0.0.1", port, api.HEAD)
    assert asked_paths == [api.HEAD.accelerators_path]


async def test_accelerators_404_on_both_paths_is_an_error(http: HttpClient, serve: Serve) -> None:
    port = await serve(web.Application())
    with pytest.raises(HttpCallError) as caught:
        await RequesterClient(http).accelerators("127.0.0.1", port, api.HEAD)
    assert caught.value.status == 404
    assert caught.value.url.endswith(api.ORIGINAL.accelerators_path)


# --- accelerator memory --------------------------------------------------------------------------


async def memory_server(serve: Serve, body: bytes, status: int = 200) -> int:
    app = web.Application()
    app.router.add_get(api.ACCELERATOR_MEMORY_PATH, reply(body=body, status=status))
    return await serve(app)


async def test_accelerator_memory_turns_upstreams_mib_into_bytes(http: HttpClient, serve: Serve) -> None:
    port = await memory_server(serve, b'{"GPU-aaaa":41461,"GPU-bbbb":0}')
    used = await RequesterClient(http).accelerator_memory("127.0.0.1", port)
    assert used == {"GPU-aaaa": 41461 * 1024 * 1024, "GPU-bbbb": 0}


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        pytest.param(b"", "response is not JSON", id="empty-body"),
        pytest.param(b"exit status 9", "response is not JSON", id="text"),
        pytest.param(b'[["GPU-a", 1]]', "got a JSON array", id="array"),
        pytest.param(b"{}", "the memory of no GPUs", id="no-gpus"),
        pytest.param(b'{"GPU-a": "12"}', 'memory in use on GPU-a is "12"', id="string-value"),
        pytest.param(b'{"GPU-a": 1.5}', "memory in use on GPU-a is 1.5", id="fraction"),
        pytest.param(b'{"GPU-a": -1}', "memory in use on GPU-a is -1", id="negative"),
        pytest.param(b'{"GPU-a": true}', "memory in use on GPU-a is true", id="boolean"),
        pytest.param(b'{"": 1}', "empty string, not a GPU UUID", id="empty-key"),
    ],
)
async def test_accelerator_memory_rejects_bad_answers(
    http: HttpClient, serve: Serve, body: bytes, complaint: str
) -> None:
    port = await memory_server(serve, body)
    with pytest.raises(HttpCallError) as caught:
        await RequesterClient(http).accelerator_memory("127.0.0.1", port)
    assert complaint in caught.value.detail
    assert caught.value.url == f"http://127.0.0.1:{port}{api.ACCELERATOR_MEMORY_PATH}"


async def test_accelerator_memory_error_answer_says_why(http: HttpClient, serve: Serve) -> None:
    port = await memory_server(serve, b"nvidia-smi: not found on PATH\n", status=500)
    with pytest.raises(HttpCallError, match=r"HTTP 500 .*nvidia-smi: not found on PATH") as caught:
        await RequesterClient(http).accelerator_memory("127.0.0.1", port)
    assert caught.value.status == 500


# --- set-log ----------------------------------------------------------------------------------


async def test_set_log_sends_the_offset_and_bytes_and_returns_the_new_end(
    http: HttpClient, serve: Serve
) -> None:
    got: list[tuple[str, bytes]] = []

    async def set_log(request: web.Request) -> web.Response:
        got.append((request.query[api.SET_LOG_START_PARAM], await request.read()))
        return web.Response(
            text="Accepted startPos=7, chunkLength=5; addedContentLength=3, new contentLength=12\r\n"
        )

    app = web.Application()
    app.router.add_post(api.SET_LOG_PATH, set_log)
    port = await serve(app)
    assert await RequesterClient(http).set_log("127.0.0.1", port, 7, b"\x00ab\ncd") == 12
    assert got == [("7", b"\x00ab\ncd")]


async def test_set_log_with_nothing_new_returns_the_unchanged_end(http: HttpClient, serve: Serve) -> None:
    text = "Accepted startPos=0, chunkLength=3, but that has nothing new; still contentLength=9\r\n"
    app = web.Application()
    app.router.add_post(api.SET_LOG_PATH, reply(text=text))
    port = await serve(app)
    assert await RequesterClient(http).set_log("127.0.0.1", port, 0, b"abc") == 9


async def test_set_log_answer_without_a_length_returns_none(http: HttpClient, serve: Serve) -> None:
    app = web.Application()
    app.router.add_post(api.SET_LOG_PATH, reply(text="OK"))
    port = await serve(app)
    assert await RequesterClient(http).set_log("127.0.0.1", port, 0, b"abc") is None


async def test_set_log_gap_says_where_the_stubs_log_ends(http: HttpClient, serve: Serve) -> None:
    text = "Starting position 500 is beyond the current contentLength=0\r\n"
    app = web.Application()
    app.router.add_post(api.SET_LOG_PATH, reply(text=text, status=400))
    port = await serve(app)
    with pytest.raises(LogGapError) as caught:
        await RequesterClient(http).set_log("127.0.0.1", port, 500, b"abc")
    assert caught.value.content_length == 0
    assert caught.value.status == 400


async def test_set_log_other_400_is_a_plain_error(http: HttpClient, serve: Serve) -> None:
    app = web.Application()
    app.router.add_post(api.SET_LOG_PATH, reply(text="Missing startPos parameter\n", status=400))
    port = await serve(app)
    with pytest.raises(HttpCallError, match="Missing startPos") as caught:
        await RequesterClient(http).set_log("127.0.0.1", port, 0, b"abc")
    assert not isinstance(caught.value, LogGapError)


async def test_set_log_to_a_hung_stub_gives_up_within_its_timeout(http: HttpClient, serve: Serve) -> None:
    app = web.Application()
    app.router.add_post(api.SET_LOG_PATH, hang)
    port = await serve(app)
    started = asyncio.get_running_loop().time()
    with pytest.raises(HttpCallError, match=rf"timed out after {SET_LOG_TIMEOUT_S:g} s"):
        await RequesterClient(http).set_log("127.0.0.1", port, 0, b"abc")
    assert asyncio.get_running_loop().time() - started < SET_LOG_TIMEOUT_S + 1
