"""The log relay: each bound runner's inference-server log, copied to its requester's stub.

Users read a server's log where they look for the server, ``kubectl logs <requester>``; the
stub's ``POST /v1/set-log?startPos=N`` (contract §2b) prints what it is sent from byte N on, once.
Owns one task per bound pair: it follows the runner's log from the API server's pod log endpoint
and posts it to the stub in chunks, at most `RelaySettings.bytes_per_s`. The reconciler says
which pairs are bound (:meth:`LogRelay.follow` on every look at a bound pair, :meth:`LogRelay.stop`
otherwise); nothing here reads the cache or writes to the API server.

Offsets: the API server has no byte offset, so a stream always starts at the start of the
container's log and the bytes the stub already has are skipped here. After a controller restart
nothing is known, so the log is sent again from 0 and the stub drops what it has (or says how
far it is: `StubLog.set_log` returns the stub's end when it tells). A new stub container has
nothing, so its relay starts over at 0; a restarted runner container's log goes on after the
old one's end. (Not kept across a controller restart: a runner that restarted while bound then
has its current log from the old one's length on, so that much of its start is not shown.)

Failures (the API server, a stub that hangs or refuses) are retried with backoff inside the
task, logged at debug level: a relay never fails or slows a reconcile, and every task ends on
:meth:`LogRelay.stop` or :meth:`LogRelay.close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Final, Protocol

from dpctl import api, log
from dpctl.clients.http import HttpCallError
from dpctl.clients.requester import LogGapError
from dpctl.kube import ApiError

# A follow stream with nothing new for this long is closed and opened again (a silent server is
# normal; a dead connection is not seen otherwise).
IDLE_REOPEN_S: Final = 300.0
BACKOFF_BASE_S: Final = 1.0
BACKOFF_CAP_S: Final = 30.0
# vLLM prints a few KiB per second at most while loading; more is a runaway, not worth a stub's
# stdout or the API server's bandwidth.
DEFAULT_BYTES_PER_S: Final = 64 * 1024
# One POST carries at most this much (well under the stub's body limit).
CHUNK_BYTES: Final = 64 * 1024


@dataclass(frozen=True)
class Target:
    """What one relay copies: a runner container's log to a requester container's stub. A new
    stub container starts from byte 0; a new runner container goes on where the old one ended."""

    namespace: str
    runner: str
    runner_instance: tuple[str, int]
    stub_host: str
    stub_port: int
    stub_instance: tuple[str, int]


class LogSource(Protocol):
    def follow_log(
        self, namespace: str, pod: str, container: str, *, idle_timeout_s: float
    ) -> AsyncGenerator[bytes, None]: ...


class StubLog(Protocol):
    async def set_log(self, host: str, port: int, start: int, chunk: bytes) -> int | None:
        """Send the log from byte ``start``; the stub's end after it, when the stub tells."""
        ...


class RelayMeter(Protocol):
    def relayed(self, nbytes: int) -> None: ...

    def streams(self, open_: int) -> None: ...


@dataclass(frozen=True)
class RelaySettings:
    bytes_per_s: float = DEFAULT_BYTES_PER_S
    chunk_bytes: int = CHUNK_BYTES


@dataclass
class _Progress:
    """Where one stub's log stands, in the stub's byte offsets."""

    base: int  # where the current runner container's log begins
    delivered: int  # how much the stub has


class LogRelay:
    """The relays of one controller, keyed by requester UID."""

    def __init__(
        self,
        source: LogSource,
        stubs: StubLog,
        meter: RelayMeter,
        settings: RelaySettings = RelaySettings(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._stubs = stubs
        self._meter = meter
        self._settings = settings
        self._clock = clock
        self._tasks: dict[str, tuple[Target, _Progress, asyncio.Task[None]]] = {}
        self._log = log.get("logrelay")

    def follow(self, uid: str, target: Target) -> None:
        """Relay ``target`` for the pair of requester ``uid``; a no-op when it already does."""
        running = self._tasks.get(uid)
        if running is not None and running[0] == target and not running[2].done():
            return
        progress = _Progress(0, 0)
        if running is not None and _same_stub(running[0], target):
            # The runner's container restarted: its new log goes on after the old one.
            progress = _Progress(running[1].delivered, running[1].delivered)
        self.stop(uid)
        task = asyncio.create_task(self._relay(target, progress), name=f"logrelay-{target.runner}")
        self._tasks[uid] = (target, progress, task)
        self._meter.streams(len(self._tasks))

    def stop(self, uid: str) -> None:
        running = self._tasks.pop(uid, None)
        if running is not None:
            running[2].cancel()
            self._meter.streams(len(self._tasks))

    def following(self) -> dict[str, Target]:
        return {uid: target for uid, (target, _, _) in self._tasks.items()}

    async def close(self) -> None:
        tasks = [task for _, _, task in self._tasks.values()]
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._meter.streams(0)

    async def _relay(self, target: Target, progress: _Progress) -> None:
        failures = 0
        while True:
            try:
                await self._one_stream(target, progress)
                failures = 0
            except LogGapError as gap:
                # The stub has less than we thought: resend from its end, on a fresh stream.
                progress.base = min(progress.base, gap.content_length)
                progress.delivered = gap.content_length
            except (ApiError, HttpCallError, OSError, TimeoutError) as err:
                failures += 1
                self._log.debug("Log relay interrupted", runner=target.runner, error=str(err))
            # The stream ended (the container stopped, or the server closed it) or failed: again,
            # after a pause, so a crash-looping container or a dead stub costs little.
            await asyncio.sleep(min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** min(failures, 5)))

    async def _one_stream(self, target: Target, progress: _Progress) -> None:
        at = progress.base  # the stub offset of the stream's next byte
        bucket = _Bucket(self._settings.bytes_per_s, self._clock)
        stream = self._source.follow_log(
            target.namespace, target.runner, api.INFERENCE_SERVER_CONTAINER, idle_timeout_s=IDLE_REOPEN_S
        )
        async with contextlib.aclosing(stream):
            async for chunk in stream:
                chunk_at, at = at, at + len(chunk)
                cursor = max(chunk_at, progress.delivered)  # what the stub has is skipped
                while cursor < at:
                    piece = chunk[cursor - chunk_at : cursor - chunk_at + self._settings.chunk_bytes]
                    await asyncio.sleep(bucket.wait_for(len(piece)))
                    told = await self._stubs.set_log(target.stub_host, target.stub_port, cursor, piece)
                    self._meter.relayed(len(piece))
                    cursor += len(piece)
                    progress.delivered = max(cursor, told or 0)
                    cursor = max(cursor, progress.delivered)


def _same_stub(a: Target, b: Target) -> bool:
    return (a.stub_host, a.stub_port, a.stub_instance) == (b.stub_host, b.stub_port, b.stub_instance)


class _Bucket:
    """A token bucket of bytes, one second deep: how long to wait before sending ``n`` more."""

    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._clock = clock
        self._tokens = rate
        self._at = clock()

    def wait_for(self, n: int) -> float:
        now = self._clock()
        self._tokens = min(self._rate, self._tokens + (now - self._at) * self._rate)
        self._at = now
        self._tokens -= n
        return max(0.0, -self._tokens / self._rate)


class _NoRelay:
    """``--no-log-relay``: the pairs are served, their logs stay on the runners."""

    def follow(self, uid: str, target: Target) -> None:
        pass

    def stop(self, uid: str) -> None:
        pass


NO_RELAY: Final = _NoRelay()
