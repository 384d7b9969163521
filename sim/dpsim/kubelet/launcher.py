"""Starting one container instance: its environment, its program, its GPUs, its log file.

Owns what happens between "this container should run now" and a running process (or the reason
there is none): ConfigMap/Secret lookups and ``$(VAR)`` expansion (``env``), the image's program
(``images``), ``NVIDIA_VISIBLE_DEVICES`` as the device plugin and the NVIDIA runtime would set it,
the simulated kubelet's contract variables, ``KUBECONFIG``, ``HOME``/``TMPDIR``, the log file of
the instance (``logfiles``), the runtime call, and the Events of a start (``Pulled``, ``Created``,
``Started``, image-pull failures). Whether and when to (re)start is the sync loop's decision.

Images under the kubelet's ``--podman-images`` prefixes run as real containers (``podman``)
instead: pulled per ``imagePullPolicy`` with the kubelet's Events and waiting reasons
(``Pulling``, ``ErrImagePull``, ``ImagePullBackOff``, ``ErrImageNeverPull``), the pod's own
environment plus what a kubelet adds (``KUBERNETES_SERVICE_HOST``/``PORT``, here the API server's
real address, as no Service address routes) and the simulator's ``DPCTL_LISTEN_HOST`` (host
network: each pod listens on its own loopback address), its volumes as bind mounts (``emptyDir``,
``hostPath``, the ServiceAccount's projected volume) and its securityContext.

The NVIDIA container runtime's view: a container sees the GPUs the device plugin allocated to it;
else the ``NVIDIA_VISIBLE_DEVICES`` its spec sets (e.g. ``all``); else the image's default (``all``
for CUDA-based images); else none, and then the variable is not set at all.
"""

from __future__ import annotations

import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final

from dpctl.api import LISTEN_HOST_ENV
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
from dpsim.kubelet.podman import PodmanError, PodmanRuntime, Pulled
from dpsim.kubelet.podrecord import PodRecord, SyncSettings
from dpsim.kubelet.runtime import (
    ContainerHandle,
    ContainerRuntime,
    ContainerSpec,
    Exit,
    Launch,
    Mount,
    StartFailed,
)
from dpsim.kubelet.tokens import service_account_dir
from dpsim.simenv import container_env

RUNTIME_PREFIX: Final = "dpctl-sim://"
# A kubelet makes emptyDir directories world-writable, so any container user can write there.
EMPTY_DIR_MODE: Final = 0o777

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
        podman: PodmanRuntime | None = None,
    ) -> None:
        self._kube = kube
        self._s = settings
        self._runtime = runtime
        self._podman = podman
        self._events = events
        self._log = log
        self._on_exit = on_exit

    async def start(
        self, rec: PodRecord, pod: RawObj, r: ContainerRecord, c: Mapping[str, Any], now: float
    ) -> LaunchResult:
        """Start one container instance, or say why not (and when to try again)."""
        if now < r.not_before:
            if r.waiting and r.waiting[0] == ctr.ERR_IMAGE_PULL:
                if now < r.pull_error_until:
                    return Wait(min(r.pull_error_until, r.not_before) - now)
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
        if self._podman is not None and self._podman.runs(r.image):
            return await self._start_container(self._podman, rec, pod, r, c, env, (command, args), now)
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
        self._events.emit(pod, NORMAL, "Pulled", f'Container image "{r.image}" already present on machine')
        self._started(rec, pod, r, launch, handle, images.image_id(r.image), now)
        return Started(handle)

    def _started(
        self,
        rec: PodRecord,
        pod: RawObj,
        r: ContainerRecord,
        launch: Launch,
        handle: ContainerHandle,
        image_id: str,
        now: float,
    ) -> None:
        r.on_started(launch.container_id, now_rfc3339(), now, image_id)
        rec.handles[r.name] = handle
        rec.pull_backoff.pop(r.name, None)
        self._events.emit(pod, NORMAL, "Created", f"Created container: {r.name}")
        self._events.emit(pod, NORMAL, "Started", f"Started container {r.name}")
        self._log.progress("Started container", pod=rec.ref, container=r.name, argv=" ".join(launch.argv))

    # -- real containers (podman) ----------------------------------------------------------------

    async def _start_container(
        self,
        podman: PodmanRuntime,
        rec: PodRecord,
        pod: RawObj,
        r: ContainerRecord,
        c: Mapping[str, Any],
        env: Mapping[str, str],
        words: tuple[list[str], list[str]],
        now: float,
    ) -> LaunchResult:
        """Pull (per imagePullPolicy, with the kubelet's Events), then create and start."""
        policy = str(c.get("imagePullPolicy") or "IfNotPresent")
        if policy == "Always":
            self._events.emit(pod, NORMAL, "Pulling", f'Pulling image "{r.image}"')
        began = time.monotonic()
        try:
            pulled = await podman.pull(r.image, policy)
        except LookupError:
            message = f'Container image "{r.image}" is not present with pull policy of Never'
            self._events.emit(pod, WARNING, ctr.ERR_IMAGE_NEVER_PULL, message)
            r.set_waiting(ctr.ERR_IMAGE_NEVER_PULL, message)
            r.not_before = now + self._s.backoff_base
            return Wait(self._s.backoff_base)
        except PodmanError as e:
            if policy != "Always":
                self._events.emit(pod, NORMAL, "Pulling", f'Pulling image "{r.image}"')
            return Wait(self._pull_failed(rec, pod, r, f'Failed to pull image "{r.image}": {e}', now, str(e)))
        self._events.emit(pod, NORMAL, "Pulled", _pulled_message(r.image, pulled, time.monotonic() - began))
        launch = self._container_launch(rec, pod, r, c, env, words)
        try:
            handle = await podman.start(launch, partial(self._on_exit, rec.uid, r.name, launch.container_id))
        except StartFailed as e:
            return Failed(str(e), launch.container_id)
        self._started(rec, pod, r, launch, handle, pulled.image_id, now)
        return Started(handle)

    def _container_launch(
        self,
        rec: PodRecord,
        pod: RawObj,
        r: ContainerRecord,
        c: Mapping[str, Any],
        env: Mapping[str, str],
        words: tuple[list[str], list[str]],
    ) -> Launch:
        spec = pod.get("spec") or {}
        visible = ",".join(split_devices(spec, rec.gpus).get(r.name, ())) or env.get(
            NVIDIA_VISIBLE_DEVICES_ENV
        )
        api = urllib.parse.urlsplit(self._s.api_server)
        full = {
            **env,
            # What a kubelet sets for the `kubernetes` Service; its ClusterIP does not route here.
            "KUBERNETES_SERVICE_HOST": api.hostname or "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(api.port or 443),
            LISTEN_HOST_ENV: rec.pod_ip or rec.host_ip,
        }
        if visible:
            full[NVIDIA_VISIBLE_DEVICES_ENV] = visible
        security = {**(spec.get("securityContext") or {}), **(c.get("securityContext") or {})}
        user = security.get("runAsUser")
        group = security.get("runAsGroup")
        command, args = words
        container = ContainerSpec(
            image=r.image,
            command=tuple(command),
            args=tuple(args),
            hostname=rec.name,
            working_dir=c.get("workingDir"),
            user=None if user is None else f"{user}:{group}" if group is not None else str(user),
            read_only_root=bool(security.get("readOnlyRootFilesystem")),
            drop_all_caps="ALL" in ((security.get("capabilities") or {}).get("drop") or []),
            no_new_privileges=security.get("allowPrivilegeEscalation") is False,
            mounts=tuple(self._mounts(rec, spec, c)),
        )
        instance = r.restart_count + 1 if r.ever_ran else 0
        log = rotate(rec.dir / "logs" / r.name, instance)
        return Launch(_new_container_id(), (r.image, *command, *args), full, rec.dir, log, container)

    def _mounts(self, rec: PodRecord, spec: Mapping[str, Any], c: Mapping[str, Any]) -> list[Mount]:
        """The container's volumeMounts as bind mounts; volume kinds without a local meaning
        (claims, ConfigMaps, Secrets) are left out, as no test's real container needs them."""
        volumes = {str(v.get("name")): v for v in spec.get("volumes") or []}
        mounts = []
        for vm in c.get("volumeMounts") or []:
            volume = volumes.get(str(vm.get("name")))
            source = self._volume_dir(rec, volume) if volume is not None else None
            if source is None:
                self._log.info("Volume not mounted in a real container", pod=rec.ref, volume=vm.get("name"))
                continue
            if vm.get("subPath"):
                source = source / str(vm["subPath"])
                source.mkdir(parents=True, exist_ok=True)
            mounts.append(Mount(source, str(vm["mountPath"]), bool(vm.get("readOnly"))))
        return mounts

    def _volume_dir(self, rec: PodRecord, volume: Mapping[str, Any]) -> Path | None:
        if "emptyDir" in volume:
            d = rec.dir / "volumes" / str(volume["name"])
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(EMPTY_DIR_MODE)
            return d
        if "hostPath" in volume:
            return Path(str(volume["hostPath"].get("path")))
        sources = (volume.get("projected") or {}).get("sources") or []
        if any("serviceAccountToken" in s for s in sources):
            return service_account_dir(rec.dir)
        return None

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
        for name in program.loopback_env:
            if name in full:
                full[name] = own_address(full[name], rec.pod_ip or rec.host_ip)
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
        self,
        rec: PodRecord,
        pod: RawObj,
        r: ContainerRecord,
        message: str,
        now: float,
        reason: str | None = None,
    ) -> float:
        """``message``: the Event; ``reason``: the waiting state's message (the Event's when None)."""
        backoff = rec.pull_backoff.setdefault(r.name, CrashBackoff(self._s.backoff_base, self._s.backoff_cap))
        delay = max(self._s.backoff_base, backoff.delay_after_exit(0.0))
        r.set_waiting(ctr.ERR_IMAGE_PULL, reason if reason is not None else message)
        r.not_before = now + delay
        r.pull_error_until = now + self._s.pull_error_shown
        self._log.progress("Image has no program", pod=rec.ref, container=r.name, image=r.image)
        self._events.emit(pod, WARNING, "Failed", message)
        self._events.emit(pod, WARNING, "Failed", f"Error: {ctr.ERR_IMAGE_PULL}")
        return min(delay, self._s.pull_error_shown)


def own_address(url: str, pod_ip: str) -> str:
    """``url`` with a loopback host replaced by the Pod's address (see `images.Program`)."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return url
    netloc = f"{pod_ip}:{parts.port}" if parts.port else pod_ip
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _go_duration(seconds: float) -> str:
    """A duration as Go prints one truncated to milliseconds ("850ms", "1.234s")."""
    ms = int(seconds * 1000)
    if ms < 1000:
        return f"{ms}ms"
    return f"{ms / 1000:.3f}".rstrip("0").rstrip(".") + "s"


def _pulled_message(image: str, pulled: Pulled, waited: float) -> str:
    if pulled.seconds is None:
        return f'Container image "{image}" already present on machine'
    return (
        f'Successfully pulled image "{image}" in {_go_duration(pulled.seconds)}'
        f" ({_go_duration(waited)} including waiting). Image size: {pulled.size} bytes."
    )
