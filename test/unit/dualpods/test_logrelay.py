"""The log relay: offsets across streams and containers, the rate cap, stop, and failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

import pytest

from dpctl.clients.http import HttpCallError
from dpctl.clients.requester import LogGapError
from dpctl.dualpods.logrelay import LogRelay, RelaySettings, Target, _Bucket
from helpers import async_wait_for

TARGET = Target("ns", "req-a-server", ("uid-r", 0), "127.0.0.2", 8081, ("uid-a", 0))


@dataclass
class Source:
    """Each follow stream yields the runner's whole log so far in the given chunks, then ends
    (as the API server's stream does when the container stops) or waits for more."""

    chunks: list[bytes]
    end_streams: bool = True
    opened: int = 0
    appended: asyncio.Event = field(default_factory=asyncio.Event)

    async def follow_log(
        self, namespace: str, pod: str, container: str, *, idle_timeout_s: float
    ) -> AsyncGenerator[bytes, None]:
        self.opened += 1
        sent = 0
        while True:
            while sent < len(self.chunks):
                sent += 1
                yield self.chunks[sent - 1]
            if self.end_streams:
                return
            self.appended.clear()
            await self.appended.wait()


@dataclass
class Stub:
    """The stub's set-log: keeps bytes from their offsets, prints each byte once."""

    printed: bytearray = field(default_factory=bytearray)
    calls: list[tuple[int, int]] = field(default_factory=list)
    fail_next: int = 0
    report_end: bool = False
    hang: bool = False

    async def set_log(self, host: str, port: int, start: int, chunk: bytes) -> int | None:
        self.calls.append((start, len(chunk)))
        if self.hang:
            await asyncio.Event().wait()
        if self.fail_next:
            self.fail_next -= 1
            raise HttpCallError("relay", "url", 503, "busy")
        have = len(self.printed)
        if start > have:
            raise LogGapError(HttpCallError("relay", "url", 400, "beyond"), have)
        if start <= have < start + len(chunk):
            self.printed += chunk[have - start :]
        return len(self.printed) if self.report_end else None


@dataclass
class Meter:
    bytes: int = 0
    open: list[int] = field(default_factory=list)

    def relayed(self, nbytes: int) -> None:
        self.bytes += nbytes

    def streams(self, open_: int) -> None:
        self.open.append(open_)


LOG = [b"INFO loading model\n", b"INFO weights loaded\n", b"INFO serving on :8000\n"]


async def test_the_runners_log_reaches_the_stub_once_across_reopened_streams() -> None:
    source, stub, meter = Source(list(LOG)), Stub(), Meter()
    relay = LogRelay(source, stub, meter, RelaySettings(bytes_per_s=1e9))
    relay.follow("uid-a", TARGET)
    await async_wait_for(lambda: source.opened >= 2, 10, "a second stream after the first ended")
    await relay.close()
    assert bytes(stub.printed) == b"".join(LOG)
    assert meter.bytes == len(b"".join(LOG))  # nothing sent twice: the reopened stream is skipped


async def test_a_controller_restart_resends_from_zero_and_the_stub_prints_nothing_twice() -> None:
    source, stub = Source(list(LOG), end_streams=False), Stub()
    first = LogRelay(source, stub, Meter(), RelaySettings(bytes_per_s=1e9))
    first.follow("uid-a", TARGET)
    await async_wait_for(lambda: len(stub.printed) == len(b"".join(LOG)), 10, "the log relayed")
    await first.close()
    source.chunks.append(b"INFO request 1\n")
    second = LogRelay(source, stub, Meter(), RelaySettings(bytes_per_s=1e9))
    second.follow("uid-a", TARGET)
    await async_wait_for(lambda: stub.printed.endswith(b"request 1\n"), 10, "the new line relayed")
    await second.close()
    assert bytes(stub.printed) == b"".join([*LOG, b"INFO request 1\n"])


async def test_a_stub_that_says_how_far_it_is_gets_only_the_rest() -> None:
    source, stub = Source(list(LOG), end_streams=False), Stub(report_end=True)
    stub.printed += LOG[0] + LOG[1]  # what it got from a controller before this one
    relay = LogRelay(source, stub, Meter(), RelaySettings(bytes_per_s=1e9, chunk_bytes=4))
    relay.follow("uid-a", TARGET)
    await async_wait_for(lambda: stub.printed.endswith(LOG[2]), 10, "the last line relayed")
    await relay.close()
    assert bytes(stub.printed) == b"".join(LOG)
    assert stub.calls[0] == (0, 4) and stub.calls[1][0] == len(LOG[0] + LOG[1])


async def test_a_restarted_runner_container_continues_after_the_old_log() -> None:
    source, stub = Source([b"first run\n"], end_streams=False), Stub()
    relay = LogRelay(source, stub, Meter(), RelaySettings(bytes_per_s=1e9))
    relay.follow("uid-a", TARGET)
    await async_wait_for(lambda: stub.printed == b"first run\n", 10, "the first run's log")
    source.chunks[:] = [b"second run\n"]
    relay.follow("uid-a", Target(**{**TARGET.__dict__, "runner_instance": ("uid-r", 1)}))
    await async_wait_for(lambda: stub.printed.endswith(b"second run\n"), 10, "the second run's log")
    await relay.close()
    assert bytes(stub.printed) == b"first run\nsecond run\n"


async def test_following_the_same_pair_again_keeps_one_stream_and_stop_ends_it() -> None:
    source, meter = Source(list(LOG), end_streams=False), Meter()
    relay = LogRelay(source, Stub(), meter, RelaySettings(bytes_per_s=1e9))
    for _ in range(3):
        relay.follow("uid-a", TARGET)
    await async_wait_for(lambda: source.opened == 1, 10, "one stream")
    assert list(relay.following()) == ["uid-a"]
    relay.stop("uid-a")
    assert relay.following() == {} and meter.open[-1] == 0
    await relay.close()


async def test_a_failing_stub_is_retried_with_backoff_and_loses_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pauses: list[float] = []
    real_sleep = asyncio.sleep

    async def quick(seconds: float) -> None:
        if seconds:
            pauses.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr("dpctl.dualpods.logrelay.asyncio.sleep", quick)
    source, stub = Source(list(LOG), end_streams=False), Stub(fail_next=3)
    relay = LogRelay(source, stub, Meter(), RelaySettings(bytes_per_s=1e9))
    relay.follow("uid-a", TARGET)
    await async_wait_for(lambda: len(stub.printed) == len(b"".join(LOG)), 10, "the log after the failures")
    await relay.close()
    assert bytes(stub.printed) == b"".join(LOG)
    backoffs = [p for p in pauses if p >= 1]  # not the test's own polling
    assert backoffs[:3] == [2.0, 4.0, 8.0]


async def test_a_hung_stub_holds_only_its_own_relay() -> None:
    hung, fine = Stub(hang=True), Stub()
    source = Source(list(LOG), end_streams=False)

    class Either:
        async def set_log(self, host: str, port: int, start: int, chunk: bytes) -> int | None:
            return await (hung if host == "hung" else fine).set_log(host, port, start, chunk)

    relay = LogRelay(source, Either(), Meter(), RelaySettings(bytes_per_s=1e9))
    relay.follow("uid-h", Target(**{**TARGET.__dict__, "stub_host": "hung"}))
    relay.follow("uid-a", TARGET)
    await async_wait_for(lambda: len(fine.printed) == len(b"".join(LOG)), 10, "the other pair's log")
    await asyncio.wait_for(relay.close(), 5)  # a hung call is cancelled, not waited for


def test_the_rate_cap_makes_a_burst_wait_its_share_of_a_second() -> None:
    now = [100.0]
    bucket = _Bucket(1000, lambda: now[0])
    assert bucket.wait_for(1000) == 0  # one second's worth may go at once
    assert bucket.wait_for(500) == pytest.approx(0.5)
    now[0] += 0.5
    assert bucket.wait_for(500) == pytest.approx(0.5)


async def test_a_stub_that_lost_its_log_gets_it_again_from_where_it_is() -> None:
    source, stub = Source(list(LOG), end_streams=False), Stub()
    relay = LogRelay(source, stub, Meter(), RelaySettings(bytes_per_s=1e9))
    relay.follow("uid-a", TARGET)
    await async_wait_for(lambda: len(stub.printed) == len(b"".join(LOG)), 10, "the log relayed")
    del stub.printed[len(LOG[0]) :]  # as if it had kept only the first line
    source.chunks.append(b"INFO more\n")
    source.appended.set()
    await async_wait_for(lambda: stub.printed.endswith(b"INFO more\n"), 10, "the log after the gap")
    await relay.close()
    assert bytes(stub.printed) == b"".join([*LOG, b"INFO more\n"])
