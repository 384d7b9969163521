"""InferenceClient against a loopback stand-in for vLLM's sleep-mode endpoints."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

from dpctl import api
from dpctl.clients import HttpCallError, HttpClient, InferenceClient, SleepModeUnavailable

from .conftest import Serve, hang, reply

pytestmark = pytest.mark.filterwarnings(
    "error::ResourceWarning", "error::pytest.PytestUnraisableExceptionWarning"
)


class FakeVllm:
    """Just enough of vLLM's dev-mode API: /is_sleeping, /sleep?level=, /wake_up."""

    def __init__(self) -> None:
        self.sleeping = False
        self.levels: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(api.IS_SLEEPING_PATH, self.is_sleeping)
        app.router.add_post(api.SLEEP_PATH, self.sleep)
        app.router.add_post(api.WAKE_UP_PATH, self.wake_up)
        return app

    async def is_sleeping(self, request: web.Request) -> web.Response:
        return web.json_response({"is_sleeping": self.sleeping})

    async def sleep(self, request: web.Request) -> web.Response:
        self.levels.append(request.query.get("level", ""))
        self.sleeping = True
        return web.Response()

    async def wake_up(self, request: web.Request) -> web.Response:
        self.sleeping = False
        return web.Response()


async def test_sleep_and_wake_round_trip(http: HttpClient, serve: Serve) -> None:
    vllm = FakeVllm()
    port = await serve(vllm.app())
    client = InferenceClient(http)
    assert await client.is_sleeping("127.0.0.1", port) is False
    await client.sleep("127.0.0.1", port)
    assert await client.is_sleeping("127.0.0.1", port) is True
    await client.wake_up("127.0.0.1", port)
    assert await client.is_sleeping("127.0.0.1", port) is False
    await client.sleep("127.0.0.1", port, level=2)
    assert vllm.levels == ["1", "2"]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"true", id="bare-bool"),
        pytest.param(b'{"sleeping": true}', id="wrong-key"),
        pytest.param(b'{"is_sleeping": "false"}', id="string-not-bool"),
        pytest.param(b'{"is_sleeping": 0}', id="number-not-bool"),
        pytest.param(b"not json", id="not-json"),
    ],
)
async def test_is_sleeping_rejects_bad_answers(http: HttpClient, serve: Serve, body: bytes) -> None:
    app = web.Application()
    app.router.add_get(api.IS_SLEEPING_PATH, reply(body=body))
    port = await serve(app)
    with pytest.raises(HttpCallError) as caught:
        await InferenceClient(http).is_sleeping("127.0.0.1", port)
    assert caught.value.detail.startswith('expected {"is_sleeping": true|false}, got: ')
    assert not isinstance(caught.value, SleepModeUnavailable)


Call = Callable[[InferenceClient, int], Awaitable[object]]
CALLS = [
    pytest.param(lambda c, port: c.is_sleeping("127.0.0.1", port), id="is_sleeping"),
    pytest.param(lambda c, port: c.sleep("127.0.0.1", port), id="sleep"),
    pytest.param(lambda c, port: c.wake_up("127.0.0.1", port), id="wake_up"),
]


@pytest.mark.parametrize("call", CALLS)
async def test_404_means_sleep_mode_is_off(http: HttpClient, serve: Serve, call: Call) -> None:
    port = await serve(web.Application())  # a vLLM without VLLM_SERVER_DEV_MODE: no such routes
    with pytest.raises(SleepModeUnavailable) as caught:
        await call(InferenceClient(http), port)
    assert caught.value.status == 404
    assert "--enable-sleep-mode" in str(caught.value)
    assert "VLLM_SERVER_DEV_MODE=1" in str(caught.value)


@pytest.mark.parametrize("call", CALLS)
async def test_server_errors_stay_ordinary_errors(http: HttpClient, serve: Serve, call: Call) -> None:
    async def oom(request: web.Request) -> web.Response:
        return web.Response(status=500, text=json.dumps({"error": "CUDA Error: out of memory"}))

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", oom)
    port = await serve(app)
    with pytest.raises(HttpCallError) as caught:
        await call(InferenceClient(http), port)
    assert not isinstance(caught.value, SleepModeUnavailable)
    assert "out of memory" in caught.value.detail


async def test_wake_up_that_hangs_fails_within_its_timeout(http: HttpClient, serve: Serve) -> None:
    app = web.Application()
    app.router.add_post(api.WAKE_UP_PATH, hang)
    port = await serve(app)
    with pytest.raises(HttpCallError, match=r"timed out after 0\.2 s"):
        await InferenceClient(http, action_timeout=0.2).wake_up("127.0.0.1", port)
