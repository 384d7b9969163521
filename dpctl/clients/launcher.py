"""Calls to a launcher's API (launcher contract §3.2): list its instances, create one under a
chosen id, delete one.

Owns those calls' timeouts and the validation of their answers, so the controller (and the
notifier sidecar) get well-formed instance states or an :class:`HttpCallError` saying what was
wrong. A launcher is addressed by its base URL (``http://<Pod IP>:8001``, `launcher_url`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import pydantic

from dpctl import api
from dpctl.clients.http import HttpCallError, HttpClient, excerpt, pod_url
from dpctl.launcher.api import INSTANCES_PATH, InstanceState

# A listing is answered from memory.
LIST_TIMEOUT_S: Final = 5.0
# A create forks a child and returns; it does not wait for vLLM to load.
CREATE_TIMEOUT_S: Final = 10.0
# A delete waits for the instance to stop: SIGTERM, then SIGKILL after the launcher's 10 s.
DELETE_TIMEOUT_S: Final = 15.0

PURPOSE_LIST = "list the launcher's vLLM instances"
PURPOSE_CREATE = "create a vLLM instance in the launcher"
PURPOSE_DELETE = "delete a vLLM instance from the launcher"
PURPOSE_LOG = "read a vLLM instance's log from the launcher"
# A log read returns at most 1 MiB (the launcher's limit per reply).
LOG_TIMEOUT_S: Final = 10.0


def launcher_url(pod_ip: str, port: int = api.LAUNCHER_PORT) -> str:
    """The base URL of the launcher in the Pod with this IP (an error when it has none yet);
    ``port`` other than the contract's 8001 only for tests."""
    return pod_url(PURPOSE_LIST, pod_ip, port, "").rstrip("/")


class LauncherClient:
    def __init__(self, http: HttpClient) -> None:
        self._http = http

    async def listing(self, base: str) -> dict[str, Any]:
        """The ``GET /v2/vllm/instances`` answer as it came (a JSON object)."""
        url = base + INSTANCES_PATH
        result = await self._http.call(PURPOSE_LIST, "GET", url, timeout=LIST_TIMEOUT_S)
        try:
            doc = json.loads(result.body)
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("instances"), list):
            raise HttpCallError(
                PURPOSE_LIST,
                url,
                result.status,
                f"expected a JSON object with instances, got: {excerpt(result.body)}",
            )
        return doc

    async def instances(self, base: str) -> list[InstanceState]:
        listing = await self.listing(base)
        return [_state(PURPOSE_LIST, base + INSTANCES_PATH, 200, i) for i in listing["instances"]]

    async def create(self, base: str, instance_id: str, body: Mapping[str, Any]) -> InstanceState:
        """PUT the instance under ``instance_id``. An id that exists already is an HttpCallError
        with status 409 (the caller lists again: it may be ours from before a restart)."""
        url = f"{base}{INSTANCES_PATH}/{instance_id}"
        result = await self._http.call(
            PURPOSE_CREATE, "PUT", url, json_body=dict(body), timeout=CREATE_TIMEOUT_S
        )
        try:
            doc = json.loads(result.body)
        except ValueError:
            doc = None
        return _state(PURPOSE_CREATE, url, result.status, doc)

    async def log_tail(self, base: str, instance_id: str, nbytes: int) -> bytes:
        """The last ``nbytes`` of the first MiB of the instance's log (a short-lived instance's
        log is all there)."""
        url = f"{base}{INSTANCES_PATH}/{instance_id}/log"
        result = await self._http.call(PURPOSE_LOG, "GET", url, timeout=LOG_TIMEOUT_S)
        return result.body[-nbytes:]

    async def delete(self, base: str, instance_id: str) -> bool:
        """Stop and forget the instance; False when the launcher did not have it (404): gone is gone."""
        url = f"{base}{INSTANCES_PATH}/{instance_id}"
        try:
            await self._http.call(PURPOSE_DELETE, "DELETE", url, timeout=DELETE_TIMEOUT_S)
        except HttpCallError as err:
            if err.status == 404:
                return False
            raise
        return True


def _state(purpose: str, url: str, status: int, doc: Any) -> InstanceState:
    try:
        return InstanceState.model_validate(doc)
    except pydantic.ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in err.errors())
        raise HttpCallError(purpose, url, status, f"not an instance state: {problems}") from None
