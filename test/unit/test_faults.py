"""Fault injection: off by default, rules from the environment, changed at run time over HTTP."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web

from dpctl.faults import CONTROL_PATH, Faults
from dpctl.stub.server import StubState, make_spi_app


class NoGpus:
    async def discover(self) -> list[str]:
        return ["GPU-a"]


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


def test_injection_is_off_unless_enabled() -> None:
    assert Faults.from_env({"DPCTL_FAULTS": '[{"path": "/x", "status": 500}]'}) is None
    faults = Faults.from_env(
        {"DPCTL_FAULT_INJECTION": "1", "DPCTL_FAULTS": '[{"path": "/x", "status": 500}]'}
    )
    assert faults is not None and faults.rules[0].status == 500


def test_bad_rules_fail_loudly() -> None:
    with pytest.raises(ValueError):
        Faults.from_env({"DPCTL_FAULT_INJECTION": "1", "DPCTL_FAULTS": '[{"path": "/x", "sttus": 500}]'})


async def test_rules_answer_instead_of_the_handler_and_expire() -> None:
    faults = Faults.from_env({"DPCTL_FAULT_INJECTION": "1"})
    assert faults is not None
    runner, base = await serve(make_spi_app(StubState(), NoGpus(), faults))
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
            rules = [{"path": "/v1/dual-pod/accelerators", "status": 200, "body": "not json", "times": 2}]
            async with s.put(base + CONTROL_PATH, data=json.dumps(rules)) as r:
                assert r.status == 200
            for _ in range(2):
                async with s.get(base + "/v1/dual-pod/accelerators") as r:
                    assert await r.text() == "not json"
            async with s.get(base + "/v1/dual-pod/accelerators") as r:
                assert await r.json() == ["GPU-a"]
            async with s.put(base + CONTROL_PATH, data="[{") as r:
                assert r.status == 400
    finally:
        await runner.cleanup()


async def test_a_hang_outlasts_the_clients_timeout() -> None:
    faults = Faults.from_env(
        {"DPCTL_FAULT_INJECTION": "1", "DPCTL_FAULTS": '[{"path": "/v1/become-ready", "hang": true}]'}
    )
    assert faults is not None
    runner, base = await serve(make_spi_app(StubState(), NoGpus(), faults))
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as s:
            with pytest.raises(asyncio.TimeoutError):
                async with s.post(base + "/v1/become-ready"):
                    pass
    finally:
        await runner.cleanup()
