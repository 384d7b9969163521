"""`dpctl launcher-notifier`: the launcher Pod's ``state-change-reflector`` sidecar (contract §3.3).

It turns a change of the launcher's instances into an event on the Pod, which the controllers
watch: until the Pod's ``inference-server`` container is Ready it checks every 5 s; then every
2 s it lists the instances and, when the signature (sha256 hex of the sorted ``[id, status]``
pairs as compact JSON, upstream's formula) differs from the last one it published, merge-patches
it into the Pod's ``dual-pods.llm-d.ai/vllm-instance-signature`` annotation. Any error backs off
5 s; every call has a timeout. Needs ``POD_NAME`` and ``NAMESPACE`` (downward API);
``LAUNCHER_BASE_URL`` defaults to the launcher in the same Pod. RBAC: pods get and patch.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from typing import Any, Final, Protocol

from dpctl.api import INFERENCE_SERVER_CONTAINER, INSTANCE_SIGNATURE_ANNOTATION
from dpctl.clients.http import HttpClient
from dpctl.clients.launcher import LauncherClient
from dpctl.kube import PODS, Kube, RawObj
from dpctl.launcher.api import DEFAULT_PORT
from dpctl.log import setup_plain

log = logging.getLogger("dpctl.launcher-notifier")

BASE_URL_ENV: Final = "LAUNCHER_BASE_URL"
DEFAULT_BASE_URL: Final = f"http://127.0.0.1:{DEFAULT_PORT}"
READY_POLL_S: Final = 5.0
POLL_S: Final = 2.0
ERROR_BACKOFF_S: Final = 5.0
EXIT_USAGE: Final = 2


def signature(listing: Mapping[str, Any]) -> str:
    """The signature of a ``GET /v2/vllm/instances`` answer; ValueError if it is not one."""
    instances = listing.get("instances")
    if not isinstance(instances, list) or not all(isinstance(i, dict) for i in instances):
        raise ValueError(f"the launcher's instance list is malformed: {listing!r}")
    pairs = sorted([str(i.get("instance_id", "")), str(i.get("status", ""))] for i in instances)
    return hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode()).hexdigest()


def inference_server_ready(pod: RawObj) -> bool:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return any(s.get("name") == INFERENCE_SERVER_CONTAINER and s.get("ready") is True for s in statuses)


class PodSide(Protocol):
    async def inference_server_ready(self) -> bool: ...
    async def publish(self, signature: str) -> None: ...


class LauncherSide(Protocol):
    async def instances(self) -> Mapping[str, Any]: ...


class Notifier:
    """One :meth:`step` at a time; each says how long to wait before the next."""

    def __init__(self, pod: PodSide, launcher: LauncherSide) -> None:
        self.pod = pod
        self.launcher = launcher
        self.ready = False  # once Ready, the launcher answers; upstream does not look again
        self.published: str | None = None

    async def step(self) -> float:
        try:
            if not self.ready:
                if not await self.pod.inference_server_ready():
                    return READY_POLL_S
                self.ready = True
                log.info(
                    "The %s container is Ready; following the launcher's instances",
                    INFERENCE_SERVER_CONTAINER,
                )
            current = signature(await self.launcher.instances())
            if current != self.published:
                await self.pod.publish(current)
                self.published = current
                log.info("Published launcher state change: signature %s", current)
        except Exception as e:  # a sidecar that dies stops every controller's view of this launcher
            log.warning("Notifier failure, retrying in %g s: %s", ERROR_BACKOFF_S, e)
            return ERROR_BACKOFF_S
        return POLL_S


class KubePod:
    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self.kube, self.namespace, self.name = kube, namespace, name

    async def inference_server_ready(self) -> bool:
        return inference_server_ready(await self.kube.get(PODS, self.name, self.namespace))

    async def publish(self, signature: str) -> None:
        body = {"metadata": {"annotations": {INSTANCE_SIGNATURE_ANNOTATION: signature}}}
        await self.kube.patch(PODS, self.name, body, self.namespace, patch_type="merge")


class HttpLauncher:
    """The launcher in this Pod, through the controller's own client of its API."""

    def __init__(self, client: LauncherClient, base_url: str) -> None:
        self.client, self.base = client, base_url.rstrip("/")

    async def instances(self) -> Mapping[str, Any]:
        return await self.client.listing(self.base)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        f"Publish the launcher's instance changes on its Pod. Environment: POD_NAME, NAMESPACE,"
        f" {BASE_URL_ENV} (default {DEFAULT_BASE_URL})."
    )


def run(args: argparse.Namespace) -> int:
    setup_plain()
    missing = [name for name in ("POD_NAME", "NAMESPACE") if not os.environ.get(name)]
    if missing:
        log.error("missing required environment variable %s", " and ".join(missing))
        return EXIT_USAGE
    return asyncio.run(
        _main(
            os.environ["NAMESPACE"], os.environ["POD_NAME"], os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        )
    )


async def _main(namespace: str, pod_name: str, base_url: str) -> int:
    kube = await Kube.connect()
    http = HttpClient()
    try:
        notifier = Notifier(KubePod(kube, namespace, pod_name), HttpLauncher(LauncherClient(http), base_url))
        log.info("Launcher Pod notifier started for pod %s/%s against %s", namespace, pod_name, base_url)
        while True:  # noqa: ASYNC110 - polling is the sidecar's protocol (§3.3)
            await asyncio.sleep(await notifier.step())
    finally:
        await http.close()
        await kube.close()
