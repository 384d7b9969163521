"""Calls to the inference server (vLLM's dev-mode endpoints): is it asleep, sleep, wake up.

Owns the three sleep-mode calls (contract §3), their timeouts (30 s for sleep and wake, which
move model weights; 5 s for the query) and the meaning of a 404: vLLM runs without
``--enable-sleep-mode``/``VLLM_SERVER_DEV_MODE=1``, which no retry fixes, so it is the distinct
:class:`SleepModeUnavailable`. Does not own the HTTP session or retries (``http.py``).
"""

from __future__ import annotations

import json

from dpctl import api
from dpctl.clients.http import HttpCallError, HttpClient, HttpResult, excerpt, pod_url

QUERY_TIMEOUT_S = 5.0
# Sleep offloads or drops the weights and wake reloads them: seconds on big models (FMA PR #586).
ACTION_TIMEOUT_S = 30.0

PURPOSE_IS_SLEEPING = "ask whether the inference server sleeps"
PURPOSE_SLEEP = "put the inference server to sleep"
PURPOSE_WAKE_UP = "wake the inference server up"

NO_SLEEP_MODE = (
    "the inference server has no sleep-mode endpoints (HTTP 404); "
    "run vLLM with --enable-sleep-mode and VLLM_SERVER_DEV_MODE=1"
)


class SleepModeUnavailable(HttpCallError):
    """The server answered 404 to a sleep-mode endpoint: sleep mode is off, retrying will not help."""


class InferenceClient:
    def __init__(
        self,
        http: HttpClient,
        query_timeout: float = QUERY_TIMEOUT_S,
        action_timeout: float = ACTION_TIMEOUT_S,
    ) -> None:
        self._http = http
        self._query_timeout = query_timeout
        self._action_timeout = action_timeout

    async def is_sleeping(self, host: str, port: int) -> bool:
        url = pod_url(PURPOSE_IS_SLEEPING, host, port, api.IS_SLEEPING_PATH)
        result = await self._call(PURPOSE_IS_SLEEPING, "GET", url, self._query_timeout)
        try:
            doc = json.loads(result.body)
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("is_sleeping"), bool):
            detail = f'expected {{"is_sleeping": true|false}}, got: {excerpt(result.body)}'
            raise HttpCallError(PURPOSE_IS_SLEEPING, url, result.status, detail)
        return bool(doc["is_sleeping"])

    async def sleep(self, host: str, port: int, level: int = 1) -> None:
        url = pod_url(PURPOSE_SLEEP, host, port, api.SLEEP_PATH, {"level": str(level)})
        await self._call(PURPOSE_SLEEP, "POST", url, self._action_timeout)

    async def wake_up(self, host: str, port: int) -> None:
        url = pod_url(PURPOSE_WAKE_UP, host, port, api.WAKE_UP_PATH)
        await self._call(PURPOSE_WAKE_UP, "POST", url, self._action_timeout)

    async def _call(self, purpose: str, method: str, url: str, timeout: float) -> HttpResult:
        try:
            return await self._http.call(purpose, method, url, timeout=timeout)
        except HttpCallError as err:
            if err.status == 404:
                raise SleepModeUnavailable(purpose, url, 404, NO_SLEEP_MODE) from err
            raise
