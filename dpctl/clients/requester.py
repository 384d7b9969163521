"""Calls to the requester stub's SPI: its GPUs and their memory in use, relaying readiness and
the inference server's log to it.

Owns the SPI calls (contract §3, §2b) and the validation of their answers, so the controller gets
either a well-formed answer or an :class:`HttpCallError` that says what was wrong. Does not own
the HTTP session or retries (``http.py``; the work queue retries).

The memory answer is in MiB on the wire (what upstream's stub sends and its controller reads,
though upstream's SPI comment says bytes); :meth:`RequesterClient.accelerator_memory` returns bytes.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, TypeVar

from dpctl import api
from dpctl.clients.http import HttpCallError, HttpClient, excerpt, pod_url

# The stub answers from memory; a few seconds means it is wedged or unreachable.
REQUESTER_TIMEOUT_S = 5.0
# The stub measures memory with nvidia-smi or NVML, each bounded by 5 s there; a little more here
# so that its own timeout answers first, with its reason.
MEMORY_TIMEOUT_S: Final = 7.0
# A set-log call is a write to the stub's stdout. The relay calls it for every chunk, so a stub
# that hangs costs at most this much per chunk; the chunk is resent from the same offset.
SET_LOG_TIMEOUT_S: Final = 2.0
MIB: Final = 1 << 20
_J = TypeVar("_J", list[Any], dict[str, Any])

PURPOSE_ACCELERATORS = "query the requester's GPUs"
PURPOSE_MEMORY = "query the GPU memory in use on the requester's GPUs"
PURPOSE_SET_LOG = "relay the inference server's log to the requester"
PURPOSE_BECOME_READY = "relay readiness to the requester"
PURPOSE_BECOME_UNREADY = "relay unreadiness to the requester"

# Upstream's set-log answers end with the stub's log length ("new contentLength=N",
# "still contentLength=N", or for a gap "beyond the current contentLength=N").
_CONTENT_LENGTH: Final = re.compile(rb"contentLength=([0-9]+)\s*$")


class LogGapError(HttpCallError):
    """The chunk started beyond the end of the stub's log (a restarted stub starts again at 0);
    ``content_length`` is where the stub's log ends, where the relay must resume."""

    def __init__(self, err: HttpCallError, content_length: int) -> None:
        super().__init__(err.purpose, err.url, err.status, err.detail, err.body)
        self.content_length = content_length


class RequesterClient:
    def __init__(self, http: HttpClient, timeout: float = REQUESTER_TIMEOUT_S) -> None:
        self._http = http
        self._timeout = timeout

    async def accelerators(self, host: str, port: int, dialect: api.Dialect) -> list[str]:
        """The GPU UUIDs the requester container was given (never empty).

        Asks ``dialect``'s path first and, on 404 (a stub image of the other upstream version),
        the other dialect's path (contract §2b).
        """
        first = dialect.accelerators_path
        other = next(d.accelerators_path for d in api.DIALECTS if d.accelerators_path != first)
        try:
            return await self._accelerators_at(host, port, first)
        except HttpCallError as err:
            if err.status != 404:
                raise
        return await self._accelerators_at(host, port, other)

    async def _accelerators_at(self, host: str, port: int, path: str) -> list[str]:
        url = pod_url(PURPOSE_ACCELERATORS, host, port, path)
        result = await self._http.call(PURPOSE_ACCELERATORS, "GET", url, timeout=self._timeout)
        try:
            return _parse_accelerators(result.body)
        except ValueError as err:
            raise HttpCallError(PURPOSE_ACCELERATORS, url, result.status, str(err)) from None

    async def accelerator_memory(self, host: str, port: int) -> dict[str, int]:
        """GPU UUID -> bytes of GPU memory in use, for each of the requester's GPUs."""
        url = pod_url(PURPOSE_MEMORY, host, port, api.ACCELERATOR_MEMORY_PATH)
        result = await self._http.call(PURPOSE_MEMORY, "GET", url, timeout=MEMORY_TIMEOUT_S)
        try:
            return {uuid: mib * MIB for uuid, mib in _parse_memory(result.body).items()}
        except ValueError as err:
            raise HttpCallError(PURPOSE_MEMORY, url, result.status, str(err)) from None

    async def set_log(self, host: str, port: int, start: int, chunk: bytes) -> int | None:
        """Relay ``chunk``, the server's log from byte ``start`` on; returns where the stub's log now
        ends (None if its answer does not say). Raises :class:`LogGapError` when ``start`` is
        beyond that end, so the relay can resend from there.
        """
        url = pod_url(PURPOSE_SET_LOG, host, port, api.SET_LOG_PATH, {api.SET_LOG_START_PARAM: str(start)})
        try:
            result = await self._http.call(
                PURPOSE_SET_LOG, "POST", url, data=chunk, timeout=SET_LOG_TIMEOUT_S
            )
        except HttpCallError as err:
            end = _content_length(err.body) if err.status == 400 and b"beyond" in err.body else None
            if end is not None:
                raise LogGapError(err, end) from None
            raise
        return _content_length(result.body)

    async def become_ready(self, host: str, port: int) -> None:
        url = pod_url(PURPOSE_BECOME_READY, host, port, api.BECOME_READY_PATH)
        await self._http.call(PURPOSE_BECOME_READY, "POST", url, timeout=self._timeout)

    async def become_unready(self, host: str, port: int) -> None:
        url = pod_url(PURPOSE_BECOME_UNREADY, host, port, api.BECOME_UNREADY_PATH)
        await self._http.call(PURPOSE_BECOME_UNREADY, "POST", url, timeout=self._timeout)


def _parse_accelerators(body: bytes) -> list[str]:
    """The GPU UUIDs in an accelerators answer; ``ValueError`` saying what is wrong otherwise."""
    if not body.strip():
        raise ValueError("empty response body; expected a JSON array of GPU UUIDs")
    # An empty array is an answer (no GPUs assigned), for the controller to report as such.
    doc = _load_json(body, list, "a JSON array of GPU UUIDs")
    uuids: list[str] = []
    for i, element in enumerate(doc):
        if not isinstance(element, str):
            raise ValueError(f"element {i} of the GPU list is a JSON {_json_type(element)}, not a GPU UUID")
        if not element.strip():
            raise ValueError(f"element {i} of the GPU list is an empty string, not a GPU UUID")
        uuids.append(element)
    return uuids


def _parse_memory(body: bytes) -> dict[str, int]:
    """The MiB in use per GPU in a memory answer; ``ValueError`` saying what is wrong otherwise."""
    doc = _load_json(body, dict, "a JSON object of GPU UUID to MiB used")
    if not doc:
        raise ValueError("the requester reports the memory of no GPUs")
    for uuid, mib in doc.items():
        if not uuid.strip():
            raise ValueError("a key of the memory answer is an empty string, not a GPU UUID")
        if not isinstance(mib, int) or isinstance(mib, bool) or mib < 0:
            raise ValueError(f"memory in use on {uuid} is {json.dumps(mib)}, not a number of MiB")
    return doc


def _load_json(body: bytes, kind: type[_J], expected: str) -> _J:
    """The body as JSON of type ``kind``; ``ValueError`` naming ``expected`` otherwise."""
    try:
        doc = json.loads(body)
    except ValueError:
        raise ValueError(f"response is not JSON; expected {expected}, got: {excerpt(body)}") from None
    if not isinstance(doc, kind):
        raise ValueError(f"expected {expected}, got a JSON {_json_type(doc)}: {excerpt(body)}")
    return doc


def _content_length(body: bytes) -> int | None:
    match = _CONTENT_LENGTH.search(body)
    return int(match.group(1)) if match else None


def _json_type(value: object) -> str:
    names: list[tuple[type, str]] = [
        (bool, "boolean"),
        (int, "number"),
        (float, "number"),
        (str, "string"),
        (list, "array"),
        (dict, "object"),
    ]
    return next((name for kind, name in names if isinstance(value, kind)), "null")
