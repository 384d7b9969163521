"""What the benchmark watches: the dual pods (by watch), and the controller (by /proc and /metrics).

:class:`PodTracker` follows every Pod labelled ``bench=dual`` with an informer and stamps, on the
benchmark's own monotonic clock, when each requester was first seen and first Ready, and which
runner it was bound to. An actuation is *hot* when that runner existed before the requester was
created (a sleeper was woken), *cold* otherwise. Being one watch on one clock, the figures do
not depend on the API server's one-second timestamps.

:class:`ControllerProcess` runs ``dpctl controller`` as a child process, with its log in a file and
the lines the benchmark waits for ("Caches synced", "First reconcile done") timestamped as they
arrive, and reads its CPU time and peak RSS from ``/proc`` and its metrics from ``/metrics``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.report import cpu_seconds
from bench.workload import BENCH_LABEL, BENCH_VALUE, SET_LABEL
from dpctl import api
from dpctl.informer import Informer, kube_lister
from dpctl.kube import PODS, Kube, RawObj
from dpsim.localcluster.procs import _preexec


def _ready(pod: Mapping[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def _stub_running(pod: Mapping[str, Any]) -> bool:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == api.INFERENCE_SERVER_CONTAINER:
            return "running" in (cs.get("state") or {})
    return False


@dataclass
class Requester:
    uid: str
    name: str
    set: str
    seen: float
    ready: float | None = None
    running: float | None = None  # its inference-server (the stub) first seen running
    runner: str = ""
    path: str = ""  # "cold" or "hot", known once Ready
    terminating: bool = False
    gone: bool = False  # deleted from the API (its finalizer released)
    was_ready: bool = False

    @property
    def actuation_s(self) -> float | None:
        return None if self.ready is None else self.ready - self.seen


@dataclass
class Runner:
    uid: str
    name: str
    seen: float
    bound_to: str = ""  # requester UID, empty when unbound
    sleeping: bool = False
    gone: bool = False
    launcher: bool = False  # a launcher Pod (the launcher path), not a direct runner


@dataclass
class PodTracker:
    """Timings of every requester and runner labelled ``bench=dual`` (see the module docstring)."""

    requesters: dict[str, Requester] = field(default_factory=dict)
    runners: dict[str, Runner] = field(default_factory=dict)  # by name
    informer: Informer | None = None
    flaps: int = 0  # requesters that were Ready and turned unready while serving

    def start(self, kube: Kube, namespace: str) -> Informer:
        self.informer = Informer(
            "bench-pods", kube_lister(kube, PODS, namespace, label_selector=f"{BENCH_LABEL}={BENCH_VALUE}")
        )
        self.informer.add_handlers(
            on_add=self._seen, on_update=lambda _o, n: self._seen(n), on_delete=self._gone
        )
        return self.informer

    def _seen(self, pod: RawObj) -> None:
        now = time.monotonic()
        meta = pod["metadata"]
        ann = meta.get("annotations") or {}
        labels = meta.get("labels") or {}
        uid, name = str(meta["uid"]), str(meta["name"])
        if api.ORIGINAL.server_patch in ann or api.INFERENCE_SERVER_CONFIG_ANNOTATION in ann:
            req = self.requesters.get(uid)
            if req is None:
                req = self.requesters[uid] = Requester(uid, name, str(labels.get(SET_LABEL, "")), now)
            req.runner = str(labels.get(api.DUAL_LABEL) or req.runner)
            req.terminating = bool(meta.get("deletionTimestamp"))
            if req.running is None and _stub_running(pod):
                req.running = now
            ready = _ready(pod)
            if req.ready is None and ready:
                req.ready = now
                req.path = self.path(req)
            elif req.ready is not None and not ready and req.was_ready and not req.terminating:
                self.flaps += 1  # Ready, then not: a probe failed (an overloaded harness, usually)
            req.was_ready = ready
        elif api.NOMINAL_ANNOTATION in ann or api.LAUNCHER_CONFIG_NAME_LABEL in labels:
            run = self.runners.get(name)
            if run is None or run.uid != uid:
                run = self.runners[name] = Runner(
                    uid, name, now, launcher=api.LAUNCHER_CONFIG_NAME_LABEL in labels
                )
            bound = str(ann.get(api.REQUESTER_ANNOTATION) or "")
            run.bound_to = bound.split(" ", 1)[0]
            run.sleeping = labels.get(api.SLEEPING_LABEL) == "true"
            run.gone = bool(meta.get("deletionTimestamp"))

    def _gone(self, pod: RawObj) -> None:
        meta = pod["metadata"]
        uid, name = str(meta["uid"]), str(meta["name"])
        if uid in self.requesters:
            self.requesters[uid].gone = True
        run = self.runners.get(name)
        if run is not None and run.uid == uid:
            del self.runners[name]

    # -- questions ----------------------------------------------------------------------------

    def live_requesters(self, sets: set[str] | None = None) -> list[Requester]:
        """Requesters not terminating (those being deleted do not count as serving)."""
        return [
            r
            for r in self.requesters.values()
            if not (r.gone or r.terminating) and (sets is None or r.set in sets)
        ]

    def existing_requesters(self, sets: set[str] | None = None) -> list[Requester]:
        """Requesters still in the API, terminating or not."""
        return [r for r in self.requesters.values() if not r.gone and (sets is None or r.set in sets)]

    def path(self, req: Requester) -> str:
        run = self.runners.get(req.runner)
        if run is None:
            return "unknown"
        return "hot" if run.seen < req.seen else "cold"

    def sleepers(self) -> int:
        return sum(
            1
            for r in self.runners.values()
            if not r.bound_to and r.sleeping and not r.gone and not r.launcher
        )

    def launchers(self) -> list[Runner]:
        return [r for r in self.runners.values() if r.launcher and not r.gone]

    def launchers_unbound_asleep(self) -> bool:
        """Every launcher let go, marked sleeping (its instance asleep or gone)."""
        return all(not r.bound_to and r.sleeping for r in self.launchers())

    def bound_runners(self) -> int:
        return sum(1 for r in self.runners.values() if r.bound_to and not r.gone)


class ControllerProcess:
    """``dpctl controller`` as a child process (see the module docstring)."""

    MARKERS = ("Caches synced", "First reconcile done")

    def __init__(self, args: list[str], log_path: Path, metrics_port: int, env: Mapping[str, str]) -> None:
        self.args = args
        self.log_path = log_path
        self.metrics_port = metrics_port
        self.env = dict(env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.marks: dict[str, float] = {}
        self.cpu_marks: dict[str, float] = {}
        self.starts = 0
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        self.marks = {}
        self.cpu_marks = {}
        self.started = time.monotonic()
        # BENCH_CPROFILE=<prefix>: run the controller under cProfile (stats in <prefix>.<n>).
        self.starts += 1
        out = f"{os.environ.get('BENCH_CPROFILE')}.{self.starts}"
        profile = ["-m", "cProfile", "-o", out] if os.environ.get("BENCH_CPROFILE") else []
        self.proc = subprocess.Popen(
            [sys.executable, *profile, "-m", "dpctl", "controller", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
            preexec_fn=_preexec(os.getpid()),  # noqa: PLW1509 - it dies with the benchmark, whatever happens
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        with self.log_path.open("ab") as log:
            for line in proc.stdout:
                now = time.monotonic()
                log.write(line)
                text = line.decode(errors="replace")
                for marker in self.MARKERS:
                    if marker in text and marker not in self.marks:
                        self.marks[marker] = now
                        # CPU spent to get there: unlike the wall clock, the machine's load leaves it be.
                        with contextlib.suppress(OSError):
                            self.cpu_marks[marker] = cpu_seconds(proc.pid)

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        if self._reader is not None:
            self._reader.join(5)
        self.proc = None
        return code

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_seconds(self) -> float:
        """utime + stime of the controller process so far."""
        return cpu_seconds(self.pid)

    def memory_mb(self) -> dict[str, float]:
        """VmHWM (peak RSS) and VmRSS in MiB."""
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0]) / 1024
        return out

    def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """Every sample of /metrics: name -> [(labels, value)]."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as resp:
            text = resp.read().decode()
        samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
        return samples

    def ready(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.metrics_port}/readyz"
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False
