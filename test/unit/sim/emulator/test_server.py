"""The emulated vLLM's HTTP surface over real loopback sockets: health while loading, the sleep
endpoints (present only with sleep mode and dev mode, idempotent), the OpenAI-shaped endpoints,
and the GPU ledger told about every start, sleep and wake."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dpsim.emulator.args import ServeArgs
from dpsim.emulator.devices import GpuSeat
from dpsim.emulator.ledger import ASLEEP_RESIDUE_MIB, Footprint, Holder, MemoryLedger
from dpsim.emulator.server import Emulator, EmulatorConfig, make_emulator_app
from helpers import async_wait_for

GPU = "GPU-00000000-0000-0000-0000-000000000000"

# A client of a TestServer serving an Application.
Client = TestClient[web.Request, web.Application]
LOADING_FOREVER_S = 3600.0


def emulator(
    *,
    sleep_mode: bool = True,
    dev_mode: bool = True,
    startup_delay_s: float = 0.0,
    seat: GpuSeat | None = None,
    **args: object,
) -> Emulator:
    config = EmulatorConfig(
        args=ServeArgs(model="org/model", enable_sleep_mode=sleep_mode, **args),  # type: ignore[arg-type]
        dev_mode=dev_mode,
        startup_delay_s=startup_delay_s,
        sleep_delay_s=0.0,
        wake_delay_s=0.0,
    )
    return Emulator(config, seat)


@asynccontextmanager
async def serving(emu: Emulator, *, loaded: bool = True) -> AsyncIterator[Client]:
    async with TestClient(TestServer(make_emulator_app(emu), host="127.0.0.1")) as client:
        if loaded:
            await async_wait_for(lambda: health_ok(client), 10, "the emulator to load")
        yield client


async def health_ok(client: Client) -> bool:
    return (await client.get("/health")).status == 200


async def test_health_fails_while_loading_then_passes() -> None:
    emu = emulator(startup_delay_s=LOADING_FOREVER_S)
    async with serving(emu, loaded=False) as client:
        assert (await client.get("/health")).status == 503
        assert (await client.post("/v1/completions", json={"prompt": "hi"})).status == 503
        assert (await client.post("/sleep")).status == 503
        assert (await client.post("/wake_up")).status == 503
        # /is_sleeping is not answered until the model has loaded (vLLM's is not either).
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.get("/is_sleeping"), 0.2)
    async with serving(emulator(startup_delay_s=0.0)) as client:
        assert (await client.get("/health")).status == 200
        assert await (await client.get("/is_sleeping")).json() == {"is_sleeping": False}


async def test_startup_complete_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    async with serving(emulator()):
        await async_wait_for(lambda: "Application startup complete." in caplog.text, 10, "the startup line")


@pytest.mark.parametrize(("sleep_mode", "dev_mode"), [(False, True), (True, False), (False, False)])
async def test_sleep_endpoints_need_sleep_mode_and_dev_mode(sleep_mode: bool, dev_mode: bool) -> None:
    async with serving(emulator(sleep_mode=sleep_mode, dev_mode=dev_mode)) as client:
        assert (await client.post("/sleep")).status == 404
        assert (await client.post("/wake_up")).status == 404
        assert (await client.get("/is_sleeping")).status == 404
        assert (await client.get("/health")).status == 200


async def is_sleeping(client: Client) -> bool:
    resp = await client.get("/is_sleeping")
    assert resp.status == 200
    body = await resp.json()
    assert isinstance(body["is_sleeping"], bool)
    return bool(body["is_sleeping"])


async def test_sleep_and_wake_are_idempotent() -> None:
    async with serving(emulator()) as client:
        assert not await is_sleeping(client)
        assert (await client.post("/wake_up")).status == 200
        assert (await client.post("/sleep")).status == 200
        assert await is_sleeping(client)
        assert (await client.post("/sleep?level=2")).status == 200
        assert await is_sleeping(client)
        # A sleeping server still answers /health, as vLLM's does.
        assert (await client.get("/health")).status == 200
        assert (await client.post("/wake_up")).status == 200
        assert not await is_sleeping(client)
        assert (await client.post("/wake_up")).status == 200
        assert (await client.post("/sleep?level=2")).status == 200
        assert await is_sleeping(client)


async def test_sleep_level_must_be_1_or_2() -> None:
    async with serving(emulator()) as client:
        resp = await client.post("/sleep?level=3")
        assert resp.status == 400
        assert "sleep level must be 1 or 2" in (await resp.json())["message"]
        assert not await is_sleeping(client)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/sleep", 405), ("GET", "/wake_up", 405), ("POST", "/is_sleeping", 405), ("GET", "/nope", 404)],
)
async def test_wrong_method_or_path(method: str, path: str, status: int) -> None:
    async with serving(emulator()) as client:
        assert (await client.request(method, path)).status == status


async def test_models() -> None:
    async with serving(emulator(max_model_len=32768)) as client:
        body = await (await client.get("/v1/models")).json()
    assert body["object"] == "list"
    [card] = body["data"]
    assert (card["id"], card["object"], card["root"], card["max_model_len"]) == (
        "org/model",
        "model",
        "org/model",
        32768,
    )


async def test_models_lists_served_names() -> None:
    async with serving(emulator(served_model_names=("a", "b"))) as client:
        body = await (await client.get("/v1/models")).json()
    assert [c["id"] for c in body["data"]] == ["a", "b"]


async def test_completions_are_openai_shaped_and_deterministic() -> None:
    request = {"model": "org/model", "prompt": "San Francisco is a", "max_tokens": 7}
    async with serving(emulator()) as one, serving(emulator()) as other:
        first = await (await one.post("/v1/completions", json=request)).json()
        again = await (await one.post("/v1/completions", json=request)).json()
        elsewhere = await (await other.post("/v1/completions", json=request)).json()
    assert first["object"] == "text_completion"
    assert first["model"] == "org/model"
    [choice] = first["choices"]
    assert len(choice["text"].split()) == 7
    assert choice["text"] == again["choices"][0]["text"] == elsewhere["choices"][0]["text"]
    assert first["usage"] == {"prompt_tokens": 4, "completion_tokens": 7, "total_tokens": 11}


async def test_completions_batch_and_default_model() -> None:
    async with serving(emulator()) as client:
        body = await (await client.post("/v1/completions", json={"prompt": ["a", "b"]})).json()
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert body["choices"][0]["text"] != body["choices"][1]["text"]
    assert body["model"] == "org/model"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"model": "other", "prompt": "x"}, 404, "The model `other` does not exist."),
        ({"prompt": 3}, 400, "prompt must be"),
        ({"prompt": []}, 400, "prompt must be"),
        ({}, 400, "prompt must be"),
        ({"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
        ({"prompt": "x", "max_tokens": 5000}, 400, "max_tokens"),
        ([1], 400, "JSON object"),
    ],
)
async def test_completions_rejects(body: object, status: int, message: str) -> None:
    async with serving(emulator()) as client:
        resp = await client.post("/v1/completions", json=body)
        assert resp.status == status
        error = await resp.json()
    assert (error["object"], error["code"]) == ("error", status)
    assert message in error["message"]


async def test_completions_rejects_non_json() -> None:
    async with serving(emulator()) as client:
        resp = await client.post("/v1/completions", data=b"{nope")
        assert resp.status == 400


async def test_completions_unavailable_while_asleep() -> None:
    async with serving(emulator()) as client:
        assert (await client.post("/sleep")).status == 200
        resp = await client.post("/v1/completions", json={"prompt": "hi"})
        assert resp.status == 503
        assert "asleep" in (await resp.json())["message"]
        assert (await client.post("/wake_up")).status == 200
        assert (await client.post("/v1/completions", json={"prompt": "hi"})).status == 200


# --- the GPU ledger ---------------------------------------------------------------------------


def seat(ledger: MemoryLedger, pod: str, *, refuse: bool = False) -> GpuSeat:
    return GpuSeat(ledger, Holder(pod, f"uid-{pod}", os.getpid()), (GPU,), refuse_conflict=refuse)


async def test_sleep_releases_and_wake_retakes_the_gpu() -> None:
    ledger = MemoryLedger()
    mine = seat(ledger, "ns/a")
    await mine.start()
    async with serving(emulator(seat=mine)) as client:
        assert ledger.awake_holders() == {GPU: mine.holder}
        await client.post("/sleep")
        assert ledger.awake_holders() == {}
        await client.post("/wake_up")
        assert ledger.awake_holders() == {GPU: mine.holder}
    assert ledger.violations() == []


@pytest.mark.parametrize("refuse", [False, True])
async def test_waking_onto_an_awake_gpu(refuse: bool) -> None:
    ledger = MemoryLedger()
    sleeper, intruder = seat(ledger, "ns/sleeper", refuse=refuse), seat(ledger, "ns/awake")
    await sleeper.start()
    async with serving(emulator(seat=sleeper)) as client:
        await client.post("/sleep")
        await intruder.start()
        resp = await client.post("/wake_up")
        [violation] = ledger.violations()
        assert (violation.holder, violation.intruder, violation.refused) == (
            intruder.holder,
            sleeper.holder,
            refuse,
        )
        if refuse:
            assert resp.status == 500
            assert "CUDA out of memory" in (await resp.json())["message"]
            assert await is_sleeping(client)
        else:
            assert resp.status == 200
            assert not await is_sleeping(client)


async def test_memory_follows_the_emulated_server_awake_and_asleep() -> None:
    ledger = MemoryLedger()
    footprint = Footprint.of(46068, 0.9)
    mine = GpuSeat(
        ledger, Holder("ns/a", "uid-a", os.getpid()), (GPU,), refuse_conflict=False, footprint=footprint
    )
    await mine.start()
    assert ledger.memory_used_mib() == {GPU: 41461}
    async with serving(emulator(seat=mine)) as client:
        await client.post("/sleep")
        assert ledger.memory_used_mib() == {GPU: ASLEEP_RESIDUE_MIB}
        await client.post("/wake_up")
        assert ledger.memory_used_mib() == {GPU: 41461}
    await mine.exit()
    assert ledger.memory_used_mib() == {}


def test_memory_release_delay_is_read_from_the_environment() -> None:
    config = EmulatorConfig.from_env(ServeArgs(), {"VLLM_EMULATOR_MEMORY_RELEASE_DELAY": "2.5"})
    assert config.memory_release_delay_s == 2.5
    assert EmulatorConfig.from_env(ServeArgs(), {}).memory_release_delay_s == 0
    with pytest.raises(ValueError, match="VLLM_EMULATOR_MEMORY_RELEASE_DELAY='soon'"):
        EmulatorConfig.from_env(ServeArgs(), {"VLLM_EMULATOR_MEMORY_RELEASE_DELAY": "soon"})
