"""Readiness, liveness and startup probes, with the kubelet's timing and threshold rules.

Owns: parsing a probe from the container spec (named ports resolved from the container's
``ports``), :class:`ProbeTracker` (pure: when the next probe is due and what a result changes),
and :class:`ProbeWorker` (one asyncio task per probe of a running container instance that runs
the probe at the tracker's times and reports changes).

Timing: the first probe runs ``initialDelaySeconds`` after the container started, then every
``periodSeconds``; a probe that takes longer than ``timeoutSeconds`` fails. A result changes only
after ``successThreshold`` consecutive successes or ``failureThreshold`` consecutive failures.
Initial results: readiness fails (not ready), liveness succeeds, startup fails (not started);
liveness and readiness wait until the startup probe succeeded; the startup probe stops then.

Probe handlers: ``httpGet`` (status 200-399 is a success, to the pod IP unless ``host`` is set),
``tcpSocket`` (a connection is a success) and ``exec`` (exit 0 is a success; run by the caller's
executor, which applies the same allowlist as containers). gRPC probes are not supported and fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

import aiohttp

ProbeKind = Literal["readiness", "liveness", "startup"]
PROBE_KINDS: Final[tuple[ProbeKind, ...]] = ("startup", "liveness", "readiness")
SPEC_KEYS: Final[Mapping[ProbeKind, str]] = {
    "readiness": "readinessProbe",
    "liveness": "livenessProbe",
    "startup": "startupProbe",
}


class ProbeSpecError(ValueError):
    """The probe cannot be run as written (e.g. a named port the container does not declare)."""


@dataclass(frozen=True)
class ProbeSpec:
    handler: Literal["http", "tcp", "exec", "grpc"]
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3
    scheme: str = "HTTP"
    host: str = ""
    port: int = 0
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()


def _port(value: Any, container: Mapping[str, Any]) -> int:
    if isinstance(value, int):
        return value
    text = str(value)
    if text.isdigit():
        return int(text)
    for p in container.get("ports") or []:
        if p.get("name") == text:
            return int(p.get("containerPort", 0))
    raise ProbeSpecError(f"port {text!r} is not a named port of container {container.get('name')!r}")


def _http_get(h: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "handler": "http",
        "scheme": str(h.get("scheme") or "HTTP").upper(),
        "host": str(h.get("host") or ""),
        "port": _port(h.get("port"), container),
        "path": str(h.get("path") or "/"),
        "headers": tuple((str(x.get("name")), str(x.get("value"))) for x in h.get("httpHeaders") or []),
    }


def _tcp_socket(t: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, Any]:
    return {"handler": "tcp", "host": str(t.get("host") or ""), "port": _port(t.get("port"), container)}


def _exec(e: Mapping[str, Any], _: Mapping[str, Any]) -> dict[str, Any]:
    return {"handler": "exec", "command": tuple(str(w) for w in e.get("command") or [])}


# A probe's handler, by its key in the spec, in the order they are looked for (the API server
# allows only one; a spec with none keeps the "grpc" placeholder, which never succeeds here).
_HANDLERS: Final = (("httpGet", _http_get), ("tcpSocket", _tcp_socket), ("exec", _exec))


def parse_probe(probe: Mapping[str, Any] | None, container: Mapping[str, Any]) -> ProbeSpec | None:
    """The probe as a :class:`ProbeSpec` (API defaults applied), or None when there is none."""
    if not probe:
        return None
    timed = ProbeSpec(
        "grpc",
        initial_delay=float(probe.get("initialDelaySeconds") or 0),
        period=float(probe.get("periodSeconds") or 10),
        timeout=float(probe.get("timeoutSeconds") or 1),
        success_threshold=int(probe.get("successThreshold") or 1),
        failure_threshold=int(probe.get("failureThreshold") or 3),
    )
    for key, fields in _HANDLERS:
        if key in probe:
            return replace(timed, **fields(probe[key] or {}, container))
    return timed


class ProbeTracker:
    """One probe of one container instance: its schedule and its thresholded result. Pure; the
    caller passes the (monotonic) time."""

    def __init__(self, kind: ProbeKind, spec: ProbeSpec, started_at: float) -> None:
        self.kind = kind
        self.spec = spec
        self.result = kind == "liveness"
        self._run_value: bool | None = None
        self._run_length = 0
        self._next = started_at + spec.initial_delay

    def next_due(self) -> float:
        return self._next

    def record(self, now: float, ok: bool) -> bool:
        """Note one probe result taken at ``now``; returns True when the thresholded result changed."""
        # Like the kubelet's ticker: a probe that overran its period skips the missed ticks.
        self._next += self.spec.period
        if self._next <= now:
            self._next = now + self.spec.period
        if ok == self._run_value:
            self._run_length += 1
        else:
            self._run_value, self._run_length = ok, 1
        threshold = self.spec.success_threshold if ok else self.spec.failure_threshold
        if self._run_length < threshold or ok == self.result:
            return False
        self.result = ok
        return True


ExecRunner = Callable[[Sequence[str], float], Awaitable[bool]]


async def run_probe(
    spec: ProbeSpec, pod_ip: str, session: aiohttp.ClientSession, exec_runner: ExecRunner | None
) -> tuple[bool, str]:
    """Run the probe once; returns (success, what happened in words for a failure)."""
    host = spec.host or pod_ip
    try:
        if spec.handler == "http":
            return await _http(spec, host, session)
        if spec.handler == "tcp":
            return await _tcp(spec, host)
        if spec.handler == "exec" and exec_runner is not None:
            ok = await exec_runner(spec.command, spec.timeout)
            return ok, "" if ok else f"command {list(spec.command)} failed"
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        return False, f"{type(e).__name__}: {e}"
    return False, f"{spec.handler} probes are not supported by the simulated kubelet"


_INSECURE = ssl.create_default_context()
_INSECURE.check_hostname = False
_INSECURE.verify_mode = ssl.CERT_NONE


async def _http(spec: ProbeSpec, host: str, session: aiohttp.ClientSession) -> tuple[bool, str]:
    url = f"{spec.scheme.lower()}://{host}:{spec.port}{spec.path if spec.path.startswith('/') else '/' + spec.path}"
    headers = {"User-Agent": "kube-probe/dpctl-sim", **dict(spec.headers)}
    timeout = aiohttp.ClientTimeout(total=spec.timeout)
    # The kubelet does not verify the certificate of an HTTPS probe either.
    tls: ssl.SSLContext | bool = _INSECURE if spec.scheme == "HTTPS" else True
    async with session.get(url, headers=headers, timeout=timeout, ssl=tls, allow_redirects=False) as resp:
        ok = 200 <= resp.status < 400
        return ok, "" if ok else f"HTTP probe failed with statuscode: {resp.status}"


async def _tcp(spec: ProbeSpec, host: str) -> tuple[bool, str]:
    async with asyncio.timeout(spec.timeout):
        _, writer = await asyncio.open_connection(host, spec.port)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, ""


class ProbeWorker:
    """Runs the probes of one container instance until stopped; calls ``on_change`` (sync, quick)
    whenever a thresholded result changes."""

    def __init__(
        self,
        specs: Mapping[ProbeKind, ProbeSpec],
        started_at: float,
        pod_ip: str,
        session: aiohttp.ClientSession,
        on_change: Callable[[ProbeKind, bool, str], None],
        exec_runner: ExecRunner | None = None,
    ) -> None:
        self.trackers = {k: ProbeTracker(k, s, started_at) for k, s in specs.items()}
        self._pod_ip = pod_ip
        self._session = session
        self._on_change = on_change
        self._exec = exec_runner
        self._task: asyncio.Task[None] | None = None

    @property
    def started(self) -> bool:
        startup = self.trackers.get("startup")
        return startup is None or startup.result

    @property
    def ready(self) -> bool:
        readiness = self.trackers.get("readiness")
        return self.started and (readiness is None or readiness.result)

    def start(self) -> None:
        if self.trackers and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="probes")

    def cancel(self) -> None:
        """Stop probing (the container ended); results stay readable."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _active(self) -> list[ProbeTracker]:
        if not self.started:
            return [self.trackers["startup"]]
        return [t for k, t in self.trackers.items() if k != "startup"]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            active = self._active()
            if not active:
                return
            tracker = min(active, key=lambda t: t.next_due())
            await asyncio.sleep(max(0.0, tracker.next_due() - loop.time()))
            ok, detail = await run_probe(tracker.spec, self._pod_ip, self._session, self._exec)
            if tracker.record(loop.time(), ok):
                self._on_change(tracker.kind, tracker.result, detail)
                if tracker.kind == "liveness" and not tracker.result:
                    return  # the container is being restarted; a new instance gets a new worker
