"""Outbound HTTP to Pods (requester stubs, inference servers): one session, bounded calls, clear errors.

Owns the process's shared ``aiohttp.ClientSession`` (created on first use inside the running
loop, closed by :meth:`HttpClient.close` at shutdown), the per-call timeout, reading and
releasing every response body (capped at 1 MiB), and turning every failure into
:class:`HttpCallError` with words a user can act on. An observer hook sees
``(purpose, status or 0, seconds)`` for each call, for metrics.

No retries here: a failed call fails the reconcile step, and the work queue retries it with
per-item backoff, so there is exactly one retry policy. Redirects are not followed (the pods
never send them) and proxy settings from the environment are ignored (pod IPs are direct).

Does not own what the endpoints mean (``requester.py``, ``inference.py``).
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import yarl

# Connecting to a Pod on the cluster network takes milliseconds; longer means it is unreachable.
CONNECT_TIMEOUT_S = 5.0
MAX_BODY_BYTES = 1 << 20
BODY_EXCERPT_BYTES = 200

# (purpose, HTTP status or 0 when none arrived, seconds)
HttpObserver = Callable[[str, int, float], None]


@dataclass(frozen=True)
class HttpResult:
    status: int
    body: bytes


class HttpCallError(Exception):
    """A call that failed: no answer, or an answer that is not what was asked for."""

    def __init__(self, purpose: str, url: str, status: int | None, detail: str, body: bytes = b"") -> None:
        super().__init__(f"{purpose}: {url}: {detail}")
        self.purpose = purpose
        self.url = url
        self.status = status  # None when no HTTP answer arrived
        self.detail = detail
        self.body = body  # of a non-2xx answer, for callers that read what it says


def pod_url(purpose: str, host: str, port: int, path: str, query: Mapping[str, str] | None = None) -> str:
    """``http://host:port/path?query``, IPv6-safe; an empty host (Pod without an IP yet) is an error."""
    if not host:
        raise HttpCallError(purpose, f"http://<no IP>:{port}{path}", None, "the Pod has no IP address yet")
    return str(yarl.URL.build(scheme="http", host=host, port=port, path=path, query=query))


class HttpClient:
    def __init__(
        self,
        observer: HttpObserver | None = None,
        *,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        max_connections: int = 100,
    ) -> None:
        self.observer = observer
        self._connect_timeout = connect_timeout
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(
        self,
        purpose: str,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        timeout: float,
    ) -> HttpResult:
        """Make one request; a 2xx answer comes back, anything else raises :class:`HttpCallError`.

        The request body is ``json_body`` as JSON or ``data`` as it is (at most one of them).
        ``timeout`` bounds the whole call (connect, send, wait, read the body).
        """
        started = time.monotonic()
        status = 0
        try:
            status, reason, body = await self._request(purpose, method, url, json_body, data, timeout)
        except HttpCallError as err:
            status = err.status or 0
            raise
        finally:
            if self.observer is not None:
                self.observer(purpose, status, time.monotonic() - started)
        if not 200 <= status < 300:
            raise HttpCallError(purpose, url, status, f"HTTP {status} {reason}: {excerpt(body)}", body)
        return HttpResult(status, body)

    async def _request(
        self, purpose: str, method: str, url: str, json_body: Any, data: bytes | None, timeout: float
    ) -> tuple[int, str, bytes]:
        # sock_connect, not connect: waiting for a free pooled connection is not the Pod's fault.
        limits = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, self._connect_timeout))
        try:
            async with self._get_session().request(
                method, url, json=json_body, data=data, timeout=limits, allow_redirects=False
            ) as resp:
                body = await _read_capped(purpose, url, resp)
                return resp.status, resp.reason or "", body
        except aiohttp.ConnectionTimeoutError:
            detail = (
                f"could not connect within {min(timeout, self._connect_timeout):g} s (is the Pod reachable?)"
            )
            raise HttpCallError(purpose, url, None, detail) from None
        except TimeoutError:
            raise HttpCallError(purpose, url, None, f"timed out after {timeout:g} s") from None
        except aiohttp.ClientConnectorError as err:
            raise HttpCallError(purpose, url, None, _connect_failure(err)) from None
        except aiohttp.ClientError as err:
            detail = f"connection failed: {type(err).__name__}: {err}"
            raise HttpCallError(purpose, url, None, detail) from None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session


async def _read_capped(purpose: str, url: str, resp: aiohttp.ClientResponse) -> bytes:
    too_big = f"HTTP {resp.status}: response body larger than {MAX_BODY_BYTES} bytes"
    if resp.content_length is not None and resp.content_length > MAX_BODY_BYTES:
        raise HttpCallError(purpose, url, resp.status, too_big)
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HttpCallError(purpose, url, resp.status, too_big)
        chunks.append(chunk)
    return b"".join(chunks)


def _connect_failure(err: aiohttp.ClientConnectorError) -> str:
    if err.os_error.errno == errno.ECONNREFUSED or isinstance(err.os_error, ConnectionRefusedError):
        return f"connection refused: nothing listens on port {err.port} yet (is the container up?)"
    return f"cannot connect: {err.os_error.strerror or err.os_error}"


def excerpt(body: bytes) -> str:
    """The first bytes of a body, for an error message."""
    text = body[:BODY_EXCERPT_BYTES].decode("utf-8", "replace").strip()
    if not text:
        return "(empty body)"
    return text + ("..." if len(body) > BODY_EXCERPT_BYTES else "")
