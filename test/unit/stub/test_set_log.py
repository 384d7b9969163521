"""``POST /v1/set-log?startPos=N`` of the requester stub: only bytes beyond what it wrote reach its
stdout, whatever the offsets of repeated or overlapping chunks; a gap, a bad or negative offset and
an oversized body are 4xx with upstream's words (or ours, where we differ on purpose)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dpctl.stub.discovery import FirstSuccess
from dpctl.stub.server import MAX_LOG_CHUNK_BYTES, StubState, make_spi_app

Client = TestClient[web.Request, web.Application]


class Stdout:
    def __init__(self) -> None:
        self.data = bytearray()
        self.writes = 0

    def __call__(self, data: bytes) -> None:
        self.writes += 1
        self.data += data


class NoGpus:
    async def discover(self) -> list[str]:
        raise AssertionError("not asked in these tests")


class NoMemory:
    async def memory_used_mib(self) -> dict[str, int]:
        raise AssertionError("not asked in these tests")


@pytest.fixture
def stdout() -> Stdout:
    return Stdout()


@pytest.fixture
async def spi(stdout: Stdout) -> AsyncIterator[Client]:
    app = make_spi_app(StubState(), FirstSuccess([("none", NoGpus())]), memory=NoMemory(), log_sink=stdout)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


async def set_log(spi: Client, start: str, body: bytes) -> tuple[int, str]:
    resp = await spi.post("/v1/set-log", params={"startPos": start}, data=body)
    return resp.status, await resp.text()


@pytest.mark.parametrize(
    ("first", "second", "answer", "written"),
    [
        pytest.param(
            (0, b"INFO one\n"),
            (9, b"INFO two\n"),
            (200, "Accepted startPos=9, chunkLength=9; addedContentLength=9, new contentLength=18\r\n"),
            b"INFO one\nINFO two\n",
            id="in-order",
        ),
        pytest.param(
            (0, b"INFO one\n"),
            (0, b"INFO one\n"),
            (200, "Accepted startPos=0, chunkLength=9, but that has nothing new; still contentLength=9\r\n"),
            b"INFO one\n",
            id="repeated",
        ),
        pytest.param(
            (0, b"abcdef"),
            (3, b"defghi"),
            (200, "Accepted startPos=3, chunkLength=6; addedContentLength=3, new contentLength=9\r\n"),
            b"abcdefghi",
            id="overlapping",
        ),
        pytest.param(
            (0, b"abc"),
            (4, b"efg"),
            (400, "Starting position 4 is beyond the current contentLength=3\r\n"),
            b"abc",
            id="beyond-the-end",
        ),
    ],
)
async def test_only_bytes_beyond_what_was_written_reach_stdout(
    spi: Client,
    stdout: Stdout,
    first: tuple[int, bytes],
    second: tuple[int, bytes],
    answer: tuple[int, str],
    written: bytes,
) -> None:
    assert (await set_log(spi, str(first[0]), first[1]))[0] == 200
    assert await set_log(spi, str(second[0]), second[1]) == answer
    assert bytes(stdout.data) == written
    # Nothing new is not written at all (an empty write is still a syscall on a pipe).
    assert stdout.writes == (2 if len(written) > len(first[1]) else 1)


async def test_random_relays_keep_stdout_a_prefix_of_the_log(spi: Client, stdout: Stdout) -> None:
    # As upstream's TestLogChunking: resends, overlaps and gaps in any order never corrupt stdout.
    rng = random.Random(14)
    log = bytes(rng.randrange(1, 128) for _ in range(600))
    while len(stdout.data) < len(log):
        have = len(stdout.data)
        start = rng.randrange(0, min(len(log), have + 40))
        end = min(len(log), start + rng.randrange(0, 100))
        status, _ = await set_log(spi, str(start), log[start:end])
        assert status == (400 if start > have else 200)
        assert bytes(stdout.data) == log[: len(stdout.data)]
        assert len(stdout.data) == (max(have, end) if start <= have else have)


@pytest.mark.parametrize(
    ("start", "answer"),
    [
        pytest.param("-1", "Starting position -1 is unacceptable because it is negative\r\n", id="negative"),
        pytest.param("", "Missing startPos parameter\r\n", id="empty"),
        pytest.param(
            "abc", "Failed to parse 'abc' as an int64: startPos must be a byte offset\r\n", id="garbage"
        ),
        pytest.param(
            "1.5", "Failed to parse '1.5' as an int64: startPos must be a byte offset\r\n", id="fraction"
        ),
        pytest.param(
            " 1", "Failed to parse ' 1' as an int64: startPos must be a byte offset\r\n", id="space"
        ),
        pytest.param(
            "1_0", "Failed to parse '1_0' as an int64: startPos must be a byte offset\r\n", id="underscore"
        ),
        pytest.param(
            str(1 << 63),
            f"Failed to parse '{1 << 63}' as an int64: startPos must be a byte offset\r\n",
            id="beyond-int64",
        ),
    ],
)
async def test_bad_start_is_400_with_a_clear_text(
    spi: Client, stdout: Stdout, start: str, answer: str
) -> None:
    assert await set_log(spi, start, b"abc") == (400, answer)
    assert stdout.writes == 0


async def test_missing_start_is_400(spi: Client, stdout: Stdout) -> None:
    resp = await spi.post("/v1/set-log", data=b"abc")
    assert (resp.status, await resp.text()) == (400, "Missing startPos parameter\r\n")
    assert stdout.writes == 0


async def test_a_body_over_the_cap_is_413(spi: Client, stdout: Stdout) -> None:
    status, text = await set_log(spi, "0", b"x" * (MAX_LOG_CHUNK_BYTES + 1))
    assert status == 413
    assert f"larger than {MAX_LOG_CHUNK_BYTES} bytes" in text
    assert stdout.writes == 0
    # A chunk of exactly the cap is fine.
    assert (await set_log(spi, "0", b"x" * MAX_LOG_CHUNK_BYTES))[0] == 200
    assert len(stdout.data) == MAX_LOG_CHUNK_BYTES


async def test_a_failing_stdout_is_500_and_the_chunk_can_be_resent(stdout: Stdout) -> None:
    fail = [True]

    def flaky(data: bytes) -> None:
        if fail[0]:
            raise BrokenPipeError(32, "Broken pipe")
        stdout(data)

    app = make_spi_app(StubState(), FirstSuccess([("none", NoGpus())]), memory=NoMemory(), log_sink=flaky)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        status, text = await set_log(client, "0", b"abc")
        assert (status, text.startswith("Failed to write log chunk:")) == (500, True)
        fail[0] = False
        assert (await set_log(client, "0", b"abc"))[0] == 200
    assert bytes(stdout.data) == b"abc"


async def test_a_restarted_stub_starts_its_log_again_at_zero(stdout: Stdout) -> None:
    # StubState is per process: a new stub's stdout is empty, and it says so to a relay at 9.
    app = make_spi_app(StubState(), FirstSuccess([("none", NoGpus())]), memory=NoMemory(), log_sink=stdout)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        assert await set_log(client, "9", b"more\n") == (
            400,
            "Starting position 9 is beyond the current contentLength=0\r\n",
        )
