"""A container runtime of real containers: rootful podman, beside the process runtime.

The simulated kubelet runs an image under podman when its reference starts with one of the
kubelet's ``--podman-images`` prefixes (the image tests' loopback registry); every other image
stays a local process (``runtime``, ``images``). Same interface as :class:`ProcessRuntime`:
``start``, and on the handle ``status``, ``stop(grace)`` (SIGTERM, then SIGKILL after the grace
period: ``podman stop --time``), ``kill``, ``exec_sync``; a restart is a new container.

Owns, for such containers: the image pull (:meth:`PodmanRuntime.pull`, per ``imagePullPolicy``,
its error in podman's words for the launcher's ``ErrImagePull``), the ``podman create`` command
line (host network: the kubelet's, which is the local cluster's namespace when it has one, while
pulls then run in the host's, where the registry's loopback address is; the pod's env, ``command``/``args`` over the image's entrypoint/cmd, the
securityContext's user, read-only root and capabilities, the pod's volumes as bind mounts), the
CRI-format log (conmon writes it: ``--log-driver k8s-file`` straight into the file that
``kubectl logs`` reads), and the exit code (``podman wait``). Containers carry the labels of
their kubelet; the containers of a kubelet that is gone (SIGKILLed: nothing stopped them) are
removed when the next podman runtime starts, as its process twin reaps orphans.

Every podman call has a timeout, except ``podman wait``, which lasts as long as the container
(it is the container's supervisor, as the kubelet's wait on a process is).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from dpctl.log import KV
from dpsim.kubelet.runtime import ContainerHandle, ContainerSpec, Exit, ExitCallback, Launch, StartFailed

PODMAN: Final = "podman"
NSENTER: Final = "nsenter"
# A pull from a loopback registry takes seconds; the bound is for a registry that hangs.
PULL_TIMEOUT_S: Final = 180.0
# create/start/inspect/rm/kill are local; podman's own locking can take a while on 2 busy cores.
CALL_TIMEOUT_S: Final = 60.0
# podman stop waits the grace period itself; this margin covers its own work around it.
STOP_MARGIN_S: Final = 30.0
# After the wait itself failed: how often to look at the container's state, at most.
POLL_MAX_S: Final = 5.0
STATE_LABEL: Final = "dpctl.sim.state"
KUBELET_LABEL: Final = "dpctl.sim.kubelet"
NAME_PREFIX: Final = "dpctl-sim-"


class PodmanError(RuntimeError):
    """A podman call failed; the message is podman's (its last stderr line)."""


@dataclass(frozen=True)
class Pulled:
    image_id: str  # repository@sha256:... as a runtime reports it
    size: int
    seconds: float | None  # None: already present, not pulled


async def _run(argv: Sequence[str], timeout: float, env: Mapping[str, str] | None = None) -> str:
    """Run podman; its stdout, or PodmanError with its last stderr line."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env) if env is not None else None,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise PodmanError(f"{' '.join(argv[:2])}: no answer within {timeout:g} s") from None
    if proc.returncode != 0:
        lines = [line for line in err.decode(errors="replace").splitlines() if line.strip()]
        raise PodmanError(lines[-1].removeprefix("Error: ") if lines else f"exit code {proc.returncode}")
    return out.decode(errors="replace")


def _kubelet_identity() -> str:
    """This process, beyond pid reuse: its pid and start time (field 22 of /proc/self/stat)."""
    stat = Path("/proc/self/stat").read_text()
    start = stat.rsplit(")", 1)[1].split()[19]
    return f"{os.getpid()}-{start}"


def _alive(identity: str) -> bool:
    pid, _, start = identity.partition("-")
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return False
    return stat.rsplit(")", 1)[1].split()[19] == start


def create_argv(launch: Launch, spec: ContainerSpec, labels: Mapping[str, str]) -> list[str]:
    """``podman create`` for one container instance (the env is passed by name, values inherited)."""
    argv = [
        PODMAN,
        "create",
        "--name",
        container_name(launch.container_id),
        "--network",
        "host",
        "--hostname",
        spec.hostname,
        "--pull",
        "never",  # pulled before, per imagePullPolicy
        "--log-driver",
        "k8s-file",
        "--log-opt",
        f"path={launch.log_path}",
        # Kubernetes mounts no tmpfs the pod did not ask for; a read-only root stays read-only.
        "--read-only-tmpfs=false",
    ]
    for key, value in labels.items():
        argv += ["--label", f"{key}={value}"]
    for name in launch.env:
        argv += ["--env", name]
    if spec.user:
        argv += ["--user", spec.user]
    if spec.read_only_root:
        argv.append("--read-only")
    if spec.drop_all_caps:
        argv += ["--cap-drop", "all"]
    if spec.no_new_privileges:
        argv += ["--security-opt", "no-new-privileges"]
    if spec.working_dir:
        argv += ["--workdir", spec.working_dir]
    for m in spec.mounts:
        options = "ro" if m.read_only else "rw"
        argv += ["--volume", f"{m.source}:{m.target}:{options}"]
    rest: list[str] = list(spec.args)
    if spec.command:
        # Kubernetes: command replaces the entrypoint and drops the image's cmd; args follow it.
        argv += ["--entrypoint", json.dumps(list(spec.command))]
    argv.append(spec.image)
    return argv + rest


def container_name(container_id: str) -> str:
    return NAME_PREFIX + container_id.rsplit("/", 1)[-1][:32]


class _PodmanHandle:
    def __init__(self, launch: Launch, runtime: PodmanRuntime) -> None:
        self._launch = launch
        self._name = container_name(launch.container_id)
        self._runtime = runtime
        self._exit: Exit | None = None
        self._done = asyncio.Event()
        self.pid: int | None = None

    @property
    def container_id(self) -> str:
        return self._launch.container_id

    def status(self) -> Exit | None:
        return self._exit

    async def stop(self, grace: float) -> Exit:
        if self._exit is None:
            grace_s = max(int(grace + 0.999), 0)
            with contextlib.suppress(PodmanError):
                await _run([PODMAN, "stop", "--time", str(grace_s), self._name], grace_s + STOP_MARGIN_S)
        await self._done.wait()
        assert self._exit is not None
        return self._exit

    def kill(self) -> None:
        # Synchronous, as a machine dies: SIGKILL to the container's init from the host.
        if self._exit is None and self.pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGKILL)

    async def exec_sync(self, argv: list[str], timeout: float) -> int:
        cmd = [PODMAN, "exec", self._name, *argv]
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with asyncio.timeout(timeout):
                return await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return -1

    async def supervise(self, on_exit: ExitCallback) -> None:
        try:
            code = await self._wait()
            self._exit = Exit(code, dt.datetime.now(dt.UTC), code - 128 if code > 128 else None)
        finally:
            if self._exit is None:  # cancelled (the kubelet is exiting): make sure it is gone
                self.kill()
                self._exit = Exit(128 + signal.SIGKILL, dt.datetime.now(dt.UTC), signal.SIGKILL)
            self._done.set()
            self._runtime.forget(self.container_id)
            await self._runtime.remove(self._name)
        on_exit(self._exit)

    async def _wait(self) -> int:
        """The exit code: ``podman wait`` (as long as the container runs); should the wait itself
        fail, the container's state, looked at with a growing interval."""
        proc = await asyncio.create_subprocess_exec(
            PODMAN,
            "wait",
            self._name,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await proc.communicate()
        text = out.decode(errors="replace").strip()
        if proc.returncode == 0 and text.lstrip("-").isdigit():
            return int(text)
        delay = 0.2
        while True:
            state = await self._runtime.state(self._name)
            if state is None:
                return 128 + signal.SIGKILL  # removed behind our back: it is not running
            running, code = state
            if not running:
                return code
            await asyncio.sleep(delay)
            delay = min(delay * 2, POLL_MAX_S)


@dataclass
class PodmanRuntime:
    """Containers of the images under ``prefixes``, run by rootful podman (module docstring)."""

    state_dir: Path
    prefixes: tuple[str, ...]
    log: KV
    # Pull from here (the host's network namespace), where a registry on the host's loopback is.
    host_netns: Path | None = None
    _handles: dict[str, _PodmanHandle] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _identity: str = field(default_factory=_kubelet_identity)
    _reaped: bool = False

    def runs(self, image: str) -> bool:
        return any(image.startswith(p) for p in self.prefixes)

    async def pull(self, image: str, policy: str) -> Pulled:
        """Make the image present per ``imagePullPolicy``; raises PodmanError (the pull error)
        or LookupError (``Never`` and absent)."""
        await self._reap_once()
        present = await self._inspect_image(image)
        if policy == "Never" or (policy == "IfNotPresent" and present is not None):
            if present is None:
                raise LookupError(image)
            return Pulled(present[0], present[1], None)
        began = time.monotonic()
        pull = [PODMAN, "pull", "--quiet", image]
        if self.host_netns is not None:
            pull = [NSENTER, f"--net={self.host_netns}", "--", *pull]
        await _run(pull, PULL_TIMEOUT_S)
        took = time.monotonic() - began
        found = await self._inspect_image(image)
        if found is None:
            raise PodmanError(f"{image}: pulled but not present")
        return Pulled(found[0], found[1], took)

    async def _inspect_image(self, image: str) -> tuple[str, int] | None:
        try:
            out = await _run([PODMAN, "image", "inspect", image], CALL_TIMEOUT_S)
        except PodmanError:
            return None
        info = json.loads(out)[0]
        # The digest under this image's own repository (the same image may be in several).
        repo = image.split("@", 1)[0]
        if repo.rfind(":") > repo.rfind("/"):
            repo = repo[: repo.rfind(":")]
        digests = [str(d) for d in info.get("RepoDigests") or [] if str(d).startswith(repo + "@")]
        own = f"{repo}@{info.get('Digest')}"  # the manifest podman keeps for the image
        image_id = own if own in digests else digests[0] if digests else f"{repo}@sha256:{info['Id']}"
        return image_id, int(info.get("Size") or 0)

    async def start(self, launch: Launch, on_exit: ExitCallback) -> ContainerHandle:
        spec = launch.container
        if spec is None:
            raise StartFailed("the podman runtime runs images; this launch names none")
        await self._reap_once()
        labels = {STATE_LABEL: str(self.state_dir), KUBELET_LABEL: self._identity}
        name = container_name(launch.container_id)
        try:
            # podman's own settings (CONTAINERS_CONF, ...) from ours; the container's by name.
            await _run(create_argv(launch, spec, labels), CALL_TIMEOUT_S, env={**os.environ, **launch.env})
        except PodmanError as e:
            raise StartFailed(f"failed to create container: {e}") from e
        handle = _PodmanHandle(launch, self)
        try:
            await _run([PODMAN, "start", name], CALL_TIMEOUT_S)
            pid = (
                await _run([PODMAN, "inspect", "--format", "{{.State.Pid}}", name], CALL_TIMEOUT_S)
            ).strip()
        except PodmanError as e:
            await self.remove(name)
            raise StartFailed(f"failed to start container: {e}") from e
        handle.pid = int(pid) if pid.isdigit() and int(pid) > 0 else None
        self._handles[launch.container_id] = handle
        task = asyncio.get_running_loop().create_task(handle.supervise(on_exit), name=f"podman-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return handle

    def forget(self, container_id: str) -> None:
        self._handles.pop(container_id, None)

    async def state(self, name: str) -> tuple[bool, int] | None:
        """(running, exit code) of a container, None when it does not exist."""
        try:
            out = await _run(
                [PODMAN, "inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}", name],
                CALL_TIMEOUT_S,
            )
        except PodmanError:
            return None
        running, _, code = out.strip().partition(" ")
        return running == "true", int(code or 0)

    async def remove(self, name: str) -> None:
        try:
            await _run([PODMAN, "rm", "--force", "--time", "0", name], CALL_TIMEOUT_S)
        except PodmanError as e:
            self.log.warning("Could not remove a container", container=name, error=str(e))

    async def _reap_once(self) -> None:
        """Remove the containers of this state dir's previous kubelet and of kubelets that are gone."""
        if self._reaped:
            return
        self._reaped = True
        try:
            out = await _run(
                [PODMAN, "ps", "--all", "--filter", f"label={KUBELET_LABEL}", "--format", "json"],
                CALL_TIMEOUT_S,
            )
        except (PodmanError, OSError) as e:
            self.log.warning("Could not list podman containers", error=str(e))
            return
        for c in json.loads(out or "[]"):
            labels = c.get("Labels") or {}
            owner = str(labels.get(KUBELET_LABEL, ""))
            if owner != self._identity and (
                labels.get(STATE_LABEL) == str(self.state_dir) or not _alive(owner)
            ):
                names = c.get("Names") or [c.get("Id")]
                self.log.warning("Removing a container a previous kubelet left behind", container=names[0])
                await self.remove(str(names[0]))

    def running(self) -> int:
        return len(self._handles)

    async def shutdown(self, grace: float) -> None:
        handles = list(self._handles.values())
        if handles:
            await asyncio.gather(*(h.stop(grace) for h in handles), return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
