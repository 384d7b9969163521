"""Starting one container instance: its environment, its program, its GPUs, its log file.

Owns what happens between "this container should run now" and a running process (or the reason
there is none): ConfigMap/Secret lookups and ``$(VAR)`` expansion (``env``), the image's program
(``images``), ``NVIDIA_VISIBLE_DEVICES`` as the device plugin and the NVIDIA runtime would set it,
the simulated kubelet's contract variables, ``KUBECONFIG``, ``HOME``/``TMPDIR``, the log file of
the instance (``logfiles``), the runtime call, and the Events of a start (``Pulled``, ``Created``,
``Started``, image-pull failures). Whether and when to (re)start is the sync loop's decision.

The NVIDIA container runtime's view: a container sees the GPUs the device plugin allocated to it;
else the ``NVIDIA_VISIBLE_DEVICES`` its spec sets (e.g. ``all``); else the image's default (``all``
for CUDA-based images); else none, and then the variable is not set at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from dpctl.gpuenv import NVIDIA_VISIBLE_DEVICES_ENV
from dpctl.kube import CONFIGMAPS, SECRETS, ApiError, Kube, RawObj, Resource
from dpctl.log import KV
from dpsim.kubelet import containers as ctr
from dpsim.kubelet import images
from dpsim.kubelet.containers import ContainerRecord, CrashBackoff, now_rfc3339
from dpsim.kubelet.devices import split_devices
from dpsim.kubelet.env import (
    EnvError,
    PodFacts,
    Sources,
    decode_secret_data,
    expand_command,
    pod_env,
    process_env,
    referenced_sources,
)
from dpsim.kubelet.events import NORMAL, WARNING, EventSink
from dpsim.kubelet.logfiles import rotate
from dpsim.kubelet.podrecord import PodRecord, SyncSettings
from dpsim.kubelet.runtime import ContainerHandle, ContainerRuntime, Exit, Launch, StartFailed
from dpsim.simenv import container_env

RUNTIME_PREFIX: Final = "dpctl-sim://"

# (pod UID, container name, container ID, how it ended)
ExitCallback = Callable[[str, str, str, Exit], None]


@dataclass(frozen=True)
class Started:
    handle: ContainerHandle


@dataclass(frozen=True)
class Wait:
    """Not now (a back-off, a missing ConfigMap, an image without a program): try again after this."""

    seconds: float


@dataclass(frozen=True)
class Failed:
    """It cannot start (a refused command, an unrunnable program): a StartError instance."""

    message: str
    container_id: str | None


LaunchResult = Started | Wait | Failed


def _new_container_id() -> str:
    return RUNTIME_PREFIX + uuid.uuid4().hex + uuid.uuid4().hex


class Launcher:
    def __init__(
        self,
        kube: Kube,
        settings: SyncSettings,
        runtime: ContainerRuntime,
        events: EventSink,
        log: KV,
        on_exit: ExitCallback,
    ) -> None:
        self._kube = kube
        self._s = settings
        self._runtime = runtime
        self._events = events
        self._log = log
        self._on_exit = on_exit

    async def start(
        self, rec: PodRecord, pod: RawObj, r: ContainerRecord, c: Mapping[str, Any], now: float
    ) -> LaunchResult:
        """Start one container instance, or say why not (and when to try again)."""
        if now < r.not_before:
            if r.waiting and r.waiting[0] == ctr.ERR_IMAGE_PULL:
                why = f"{ctr.ERR_IMAGE_PULL}: {r.waiting[1]}"
                r.set_waiting(ctr.IMAGE_PULL_BACK_OFF, f'Back-off pulling image "{r.image}": {why}')
                self._events.emit(pod, NORMAL, "BackOff", f'Back-off pulling image "{r.image}"')
                self._events.emit(pod, WARNING, "Failed", f"Error: {ctr.IMAGE_PULL_BACK_OFF}")
            return Wait(r.not_before - now)
        spec = pod.get("spec") or {}
        facts = PodFacts.of(pod, rec.pod_ip or "", rec.host_ip)
        try:
            env = pod_env(
                c, spec.get("containers") or [], facts, await self._sources(rec, c), self._s.node_allocatable
            )
        except EnvError as e:
            r.set_waiting(ctr.CREATE_CONTAINER_CONFIG_ERROR, str(e))
            self._events.emit(pod, WARNING, "Failed", f"Error: {e}")
            r.not_before = now + self._s.backoff_base
            return Wait(self._s.backoff_base)
        command = expand_command(c.get("command") or [], env)
        args = expand_command(c.get("args") or [], env)
        program = images.resolve(str(c.get("image", "")), command, args, self._s.python)
        if isinstance(program, images.ImageUnavailable):
            return Wait(self._pull_failed(rec, pod, r, program.message, now))
        if isinstance(program, images.CommandRefused):
            return Failed(program.message, None)
        launch = self._launch(rec, spec, r, env, program)
        try:
            handle = await self._runtime.start(
                launch, partial(self._on_exit, rec.uid, r.name, launch.container_id)
            )
        except StartFailed as e:
            return Failed(str(e), launch.container_id)
        r.on_started(launch.container_id, now_rfc3339(), now, images.image_id(r.image))
        rec.handles[r.name] = handle
        rec.pull_backoff.pop(r.name, None)
        self._events.emit(pod, NORMAL, "Pulled", f'Container image "{r.image}" already present on machine')
        self._events.emit(pod, NORMAL, "Created", f"Created container: {r.name}")
        self._events.emit(pod, NORMAL, "Started", f"Started container {r.name}")
        self._log.progress("Started container", pod=rec.ref, container=r.name, argv=" ".join(program.argv))
        return Started(handle)

    def _launch(
        self,
        rec: PodRecord,
        spec: Mapping[str, Any],
        r: ContainerRecord,
        env: Mapping[str, str],
        program: images.Program,
    ) -> Launch:
        home, tmp = rec.dir / "home", rec.dir / "tmp"
        for d in (home, tmp):
            d.mkdir(parents=True, exist_ok=True)
        split = split_devices(spec, rec.gpus)
        visible = (
            ",".join(split.get(r.name, ()))
            or env.get(NVIDIA_VISIBLE_DEVICES_ENV)
            or program.default_visible_devices
            or ""
        )
        contract = container_env(
            state=self._s.state_dir,
            node=rec.node,
            pod=rec.ref,
            pod_uid=rec.uid,
            listen_host=rec.pod_ip or rec.host_ip,
            nvidia_visible_devices=visible,
            shim_dir=self._s.shim_dir,
            base_path=env.get("PATH") or self._s.base_env.get("PATH", ""),
        )
        if not visible:
            del contract[NVIDIA_VISIBLE_DEVICES_ENV]  # a container without GPUs has no such variable
        if rec.kubeconfig is not None:
            contract["KUBECONFIG"] = str(rec.kubeconfig)
        defaults = {"HOME": str(home), "TMPDIR": str(tmp)}
        full = process_env(self._s.base_env, env, contract, defaults)
        instance = r.restart_count + 1 if r.ever_ran else 0
        log = rotate(rec.dir / "logs" / r.name, instance)
        return Launch(_new_container_id(), program.argv, full, home, log)

    async def _sources(self, rec: PodRecord, c: Mapping[str, Any]) -> Sources:
        cm_names, secret_names = referenced_sources(c)
        cms = {n: d for n in cm_names if (d := await self._fetch(CONFIGMAPS, rec.namespace, n)) is not None}
        secrets = {
            n: decode_secret_data(d)
            for n in secret_names
            if (d := await self._fetch(SECRETS, rec.namespace, n)) is not None
        }
        return Sources(cms, secrets)

    async def _fetch(self, res: Resource, namespace: str, name: str) -> dict[str, str] | None:
        try:
            obj = await self._kube.get(res, name, namespace)
        except ApiError as e:
            if e.not_found:
                return None
            raise
        return {str(k): str(v) for k, v in (obj.get("data") or {}).items()}

    def _pull_failed(
        self, rec: PodRecord, pod: RawObj, r: ContainerRecord, message: str, now: float
    ) -> float:
        backoff = rec.pull_backoff.setdefault(r.name, CrashBackoff(self._s.backoff_base, self._s.backoff_cap))
        delay = max(self._s.backoff_base, backoff.delay_after_exit(0.0))
        r.set_waiting(ctr.ERR_IMAGE_PULL, message)
        r.not_before = now + delay
        self._log.progress("Image has no program", pod=rec.ref, container=r.name, image=r.image)
        self._events.emit(pod, WARNING, "Failed", message)
        self._events.emit(pod, WARNING, "Failed", f"Error: {ctr.ERR_IMAGE_PULL}")
        # Come back soon to show ImagePullBackOff for the rest of the wait, as the kubelet does.
        return min(delay, 1.0)
