"""Calls to the requester stub's SPI: which GPUs it was given, and relaying readiness to it.

Owns the three SPI calls (contract §3) and the validation of the accelerators answer, so the
reconciler gets either a non-empty list of GPU UUIDs or an :class:`HttpCallError` that says what
was wrong. Does not own the HTTP session or retries (``http.py``; the work queue retries).
"""

from __future__ import annotations

import json

from dpctl import api
from dpctl.clients.http import HttpCallError, HttpClient, excerpt, pod_url

# The stub answers from memory; a few seconds means it is wedged or unreachable.
REQUESTER_TIMEOUT_S = 5.0

PURPOSE_ACCELERATORS = "query the requester's GPUs"
PURPOSE_BECOME_READY = "relay readiness to the requester"
PURPOSE_BECOME_UNREADY = "relay unreadiness to the requester"


class RequesterClient:
    def __init__(self, http: HttpClient, timeout: float = REQUESTER_TIMEOUT_S) -> None:
        self._http = http
        self._timeout = timeout

    async def accelerators(self, host: str, port: int) -> list[str]:
        """The GPU UUIDs the requester container was given (never empty)."""
        url = pod_url(PURPOSE_ACCELERATORS, host, port, api.ORIGINAL.accelerators_path)
        result = await self._http.call(PURPOSE_ACCELERATORS, "GET", url, timeout=self._timeout)
        try:
            return _parse_accelerators(result.body)
        except ValueError as err:
            raise HttpCallError(PURPOSE_ACCELERATORS, url, result.status, str(err)) from None

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
    try:
        doc = json.loads(body)
    except ValueError:
        raise ValueError(
            f"response is not JSON; expected a JSON array of GPU UUIDs, got: {excerpt(body)}"
        ) from None
    if not isinstance(doc, list):
        raise ValueError(f"expected a JSON array of GPU UUIDs, got a JSON {_json_type(doc)}: {excerpt(body)}")
    if not doc:
        raise ValueError("the requester reports no GPUs (does its container request nvidia.com/gpu?)")
    uuids: list[str] = []
    for i, element in enumerate(doc):
        if not isinstance(element, str):
            raise ValueError(f"element {i} of the GPU list is a JSON {_json_type(element)}, not a GPU UUID")
        if not element.strip():
            raise ValueError(f"element {i} of the GPU list is an empty string, not a GPU UUID")
        uuids.append(element)
    return uuids


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
