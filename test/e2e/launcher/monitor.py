"""The launcher path's invariants, checked all the time a test runs (launcher contract §8).

:class:`Monitor` runs two threads for one namespace:

* a watch of its Pods (``kubectl get pods -w -o json --output-watch-events``), which keeps every
  update with the time it arrived (tests read that history to time the contract's "within T")
  and checks, on every update, what one Pod view can tell exactly:
  I3 (with A3) a launcher carries an ISC's labels only while bound and ``sleeping=false``, and
  its ISC annotations only while bound; I4 at most one launcher bound to a requester UID, a
  launcher's ``dual`` label names the requester its ``requester`` annotation names, and a bound
  requester's ``instance`` label is its launcher's ``instance-id``;
* a poll, every :data:`POLL_S`, of the emulator's GPU ledger and of every launcher's instance
  list (``GET :8001/v2/vllm/instances``), which checks
  I1 never two awake inference servers on one GPU (the ledger records each one as it happens),
  and every GPU held awake by a launcher is held for a requester bound to it that was given
  that GPU; I2 a launcher is bound to a live requester, or unbound with no awake instance, or
  being deleted; I3 a launcher with ISC labels holds a GPU awake; I5 in one launcher no two
  instances on one port and no more than its LauncherConfig's ``maxInstances``;
  I7 no Pod stays Terminating on a ``dual-pods.llm-d.ai/`` finalizer.

What one view shows exactly is a violation at once. What compares two sources (the Pods as the
watch last saw them, the ledger and the launchers as the poll read them) or is allowed for a
moment (a requester being deleted while its launcher unbinds) is a violation only when it
holds for :data:`GRACE_S` without a break, so the lag between the sources is not reported.
Each violation keeps the wall-clock time it began.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dpctl import api
from dpsim.emulator.ledger import Ledger

POLL_S = 0.5
SCALE = float(os.environ.get("DPCTL_E2E_TIMEOUT_SCALE") or 1)
GRACE_S = 3.0 * SCALE  # two sources disagreeing this long is not lag
UNBIND_GRACE_S = 10.0 * SCALE  # A4: a requester's unbind is over within 10 s
TERMINATING_GRACE_S = 30.0 * SCALE  # I7
HTTP_TIMEOUT_S = 2.0

Pod = dict[str, Any]


@dataclass(frozen=True)
class Violation:
    at: float  # wall-clock time it began
    rule: str
    text: str

    def __str__(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.gmtime(self.at)) + f".{int(self.at % 1 * 1000):03d}Z"
        return f"{stamp} {self.rule}: {self.text}"


@dataclass(frozen=True)
class Update:
    at: float  # wall-clock time the watch delivered it
    type: str  # ADDED, MODIFIED, DELETED
    pod: Pod


@dataclass
class Listing:
    at: float
    body: dict[str, Any]

    @property
    def instances(self) -> list[dict[str, Any]]:
        items = self.body.get("instances")
        return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def meta(pod: Mapping[str, Any]) -> dict[str, Any]:
    m = pod.get("metadata")
    return m if isinstance(m, dict) else {}


def name(pod: Mapping[str, Any]) -> str:
    return str(meta(pod).get("name", ""))


def labels(pod: Mapping[str, Any]) -> dict[str, str]:
    return dict(meta(pod).get("labels") or {})


def annots(pod: Mapping[str, Any]) -> dict[str, str]:
    return dict(meta(pod).get("annotations") or {})


def deleting(pod: Mapping[str, Any]) -> bool:
    return bool(meta(pod).get("deletionTimestamp"))


def is_launcher(pod: Mapping[str, Any]) -> bool:
    return api.LAUNCHER_CONFIG_NAME_LABEL in labels(pod)


def is_requester(pod: Mapping[str, Any]) -> bool:
    return bool(annots(pod).get(api.INFERENCE_SERVER_CONFIG_ANNOTATION))


def bound_to(launcher: Mapping[str, Any]) -> tuple[str, str] | None:
    """(requester UID, requester name) of a bound launcher (contract §4: exactly two parts)."""
    parts = annots(launcher).get(api.REQUESTER_ANNOTATION, "").split(" ")
    return (parts[0], parts[1]) if len(parts) == 2 and all(parts) else None


def pod_ip(pod: Mapping[str, Any]) -> str:
    return str((pod.get("status") or {}).get("podIP") or "")


def is_ready(pod: Mapping[str, Any] | None) -> bool:
    for c in ((pod or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return bool(c.get("status") == "True")
    return False


def instance_port(instance: Mapping[str, Any]) -> str:
    return str((instance.get("annotations") or {}).get(api.INFERENCE_PORT_KEY, ""))


def http_json(method: str, url: str, body: Any = None, timeout: float = HTTP_TIMEOUT_S) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            status = int(r.status)
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, raw.decode(errors="replace")


@dataclass
class IscKeys:
    """The ISC routing keys a test uses (label keys, annotation keys), as the monitor checks them."""

    labels: set[str] = field(default_factory=set)
    annotations: set[str] = field(default_factory=set)


class Monitor:
    """Watches one namespace's Pods and polls the ledger and the launchers; records violations."""

    def __init__(
        self,
        kubectl: list[str],
        namespace: str,
        ledger: Ledger,
        max_instances: Callable[[str], int | None],
        keys: IscKeys,
    ) -> None:
        self.namespace = namespace
        self.ledger = ledger
        self.max_instances = max_instances
        self.keys = keys
        self._cmd = [*kubectl, "-n", namespace, "get", "pods", "-w", "-o", "json", "--output-watch-events"]
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self.history: list[Update] = []
        self.pods: dict[str, Pod] = {}  # by name, as last seen
        self.listings: dict[str, Listing] = {}  # by launcher name, the last answer
        self.listing_history: list[tuple[str, Listing]] = []
        self.violations: list[Violation] = []
        self.errors: list[str] = []
        self.polls = 0
        self._pending: dict[tuple[str, str], float] = {}  # (rule, key) -> first seen
        self._reported: set[tuple[str, str]] = set()
        self._texts: set[tuple[str, str]] = set()
        self._ledger_seen = len(ledger.violations())
        self._proc: subprocess.Popen[bytes] | None = None
        self._threads = [
            threading.Thread(target=self._watch, name="lx-watch", daemon=True),
            threading.Thread(target=self._poll_loop, name="lx-poll", daemon=True),
        ]

    # ------------------------------------------------------------------ life

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._halt.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
        for t in self._threads:
            t.join(15)
        self.poll()  # what happened since the last poll

    # ------------------------------------------------------------------ reading, for tests

    def pod(self, pod_name: str) -> Pod | None:
        with self._lock:
            return self.pods.get(pod_name)

    def live_pods(self) -> list[Pod]:
        with self._lock:
            return list(self.pods.values())

    def updates(self, pod_name: str | None = None, after: float = 0.0) -> list[Update]:
        with self._lock:
            return [
                u for u in self.history if u.at >= after and (pod_name is None or name(u.pod) == pod_name)
            ]

    def first(self, pod_name: str, pred: Callable[[Pod], bool], after: float = 0.0) -> float | None:
        """When the watch first delivered an update of ``pod_name`` (at or after ``after``) for
        which ``pred`` holds."""
        for u in self.updates(pod_name, after):
            if u.type != "DELETED" and pred(u.pod):
                return u.at
        return None

    def gone_at(self, pod_name: str, after: float = 0.0) -> float | None:
        for u in self.updates(pod_name, after):
            if u.type == "DELETED":
                return u.at
        return None

    def listing(self, launcher: str) -> Listing | None:
        with self._lock:
            return self.listings.get(launcher)

    def synced(self) -> bool:
        """The watch delivered its first list and the poll ran at least once."""
        with self._lock:
            return bool(self.history) and self.polls > 0

    def report(self) -> str:
        lines = [str(v) for v in self.violations]
        if self.errors:
            lines.append(f"(monitor errors: {len(self.errors)}, last: {self.errors[-1]})")
        return "\n".join(lines)

    # ------------------------------------------------------------------ the watch

    def _watch(self) -> None:
        while not self._halt.is_set():
            try:
                self._proc = subprocess.Popen(self._cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                assert self._proc.stdout is not None
                decoder = json.JSONDecoder()
                buf = ""
                fd = self._proc.stdout.fileno()
                while not self._halt.is_set():
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    buf += chunk.decode(errors="replace")
                    while True:
                        stripped = buf.lstrip()
                        if not stripped:
                            buf = ""
                            break
                        try:
                            event, end = decoder.raw_decode(stripped)
                        except ValueError:
                            buf = stripped
                            break
                        buf = stripped[end:]
                        self._on_event(event)
            except Exception as e:  # the watch restarts; a test never dies of its monitor
                self.errors.append(f"watch: {e!r}")
            finally:
                if self._proc is not None and self._proc.poll() is None:
                    self._proc.terminate()
                    self._proc.wait(10)
            if not self._halt.is_set():
                # Events between the two watches are missed (their list comes as ADDED again).
                self.errors.append("watch: kubectl's watch ended; restarted")
                self._halt.wait(0.2)

    def _on_event(self, event: Any) -> None:
        if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
            return
        kind, pod = str(event.get("type", "")), event["object"]
        now = time.time()
        with self._lock:
            self.history.append(Update(now, kind, pod))
            if kind == "DELETED":
                self.pods.pop(name(pod), None)
                self.listings.pop(name(pod), None)
            else:
                self.pods[name(pod)] = pod
            snapshot = list(self.pods.values())
        if kind != "DELETED":
            self._check_pod(now, pod, snapshot)

    def _violate(self, at: float, rule: str, text: str) -> None:
        """Record a violation once (an exact check sees the same one on every update or poll)."""
        with self._lock:
            if (rule, text) not in self._texts:
                self._texts.add((rule, text))
                self.violations.append(Violation(at, rule, text))

    def _check_pod(self, now: float, pod: Pod, snapshot: list[Pod]) -> None:
        """I3 (A3) and I4 on one observed update."""
        if is_launcher(pod):
            lab, ann, bound = labels(pod), annots(pod), bound_to(pod)
            isc_labels = sorted(k for k in lab if k in self.keys.labels)
            isc_annotations = sorted(k for k in ann if k in self.keys.annotations)
            if isc_labels and (bound is None or lab.get(api.SLEEPING_LABEL) != "false"):
                self._violate(
                    now,
                    "I3/A3",
                    f"launcher {name(pod)} carries ISC labels {isc_labels} while "
                    f"{'unbound' if bound is None else 'bound'} with sleeping={lab.get(api.SLEEPING_LABEL)!r}",
                )
            if isc_annotations and bound is None:
                self._violate(
                    now, "I3", f"unbound launcher {name(pod)} carries ISC annotations {isc_annotations}"
                )
            dual = lab.get(api.DUAL_LABEL)
            if dual is not None and (bound is None or bound[1] != dual):
                self._violate(
                    now, "I4", f"launcher {name(pod)} has dual={dual!r} but requester annotation {bound!r}"
                )
            if bound is not None:
                twins = [
                    name(p) for p in snapshot if is_launcher(p) and (b := bound_to(p)) and b[0] == bound[0]
                ]
                if len(twins) > 1:
                    self._violate(
                        now, "I4", f"launchers {sorted(twins)} all bound to requester UID {bound[0]}"
                    )
        launchers = {name(p): p for p in snapshot if is_launcher(p)}
        for req in [pod] if is_requester(pod) else [p for p in snapshot if is_requester(p)]:
            instance = labels(req).get(api.INSTANCE_LABEL)
            launcher = launchers.get(labels(req).get(api.DUAL_LABEL, ""))
            if instance is None or launcher is None:
                continue
            b = bound_to(launcher)
            if b is not None and b[0] == meta(req).get("uid"):
                iid = annots(launcher).get(api.INSTANCE_ID_ANNOTATION)
                if iid != instance:
                    self._violate(
                        now,
                        "I4",
                        f"requester {name(req)} has instance={instance!r}, its launcher {name(launcher)} "
                        f"instance-id={iid!r}",
                    )

    # ------------------------------------------------------------------ the poll

    def _poll_loop(self) -> None:
        while not self._halt.wait(POLL_S):
            self.poll()

    def poll(self) -> None:
        try:
            self._poll()
        except Exception as e:  # a busy sqlite file, a launcher going away: the next poll reads it
            self.errors.append(f"poll: {e!r}")

    def _poll(self) -> None:
        now = time.time()
        with self._lock:
            snapshot = list(self.pods.values())
        # I1: two awake servers on one GPU, as the ledger recorded them.
        found = self.ledger.violations()
        new, self._ledger_seen = found[self._ledger_seen :], len(found)
        prefix = self.namespace + "/"
        for v in new:
            if v.holder.pod.startswith(prefix) or v.intruder.pod.startswith(prefix):
                self._violate(v.at, "I1", f"GPU ledger: {v}")
        holds = [h for h in self.ledger.holds() if h.holder.pod.startswith(prefix)]
        listings: dict[str, Listing] = {}
        for p in snapshot:
            if is_launcher(p) and pod_ip(p) and not deleting(p):
                try:
                    status, body = http_json(
                        "GET", f"http://{pod_ip(p)}:{api.LAUNCHER_PORT}/v2/vllm/instances"
                    )
                except OSError:
                    continue
                if status == 200 and isinstance(body, dict):
                    listings[name(p)] = Listing(time.time(), body)
        with self._lock:
            self.listings.update(listings)
            self.listing_history.extend(listings.items())
            current = {name(p): p for p in self.pods.values()}
        pods = {name(p): p for p in snapshot if name(p) in current}
        requesters = {str(meta(p).get("uid")): p for p in pods.values() if is_requester(p)}
        seen: set[tuple[str, str]] = set()

        def suspect(rule: str, key: str, text: str, grace: float = GRACE_S) -> None:
            seen.add((rule, key))
            first = self._pending.setdefault((rule, key), now)
            if now - first >= grace and (rule, key) not in self._reported:
                self._reported.add((rule, key))
                self._violate(first, rule, text)

        awake_by_pod: dict[str, list[str]] = {}
        for h in holds:
            if h.awake:
                awake_by_pod.setdefault(h.holder.pod.removeprefix(prefix), []).append(h.gpu)
        for pname, gpus in awake_by_pod.items():
            launcher = pods.get(pname)
            if launcher is None or not is_launcher(launcher) or deleting(launcher):
                continue
            b = bound_to(launcher)
            req = requesters.get(b[0]) if b else None
            given = set(annots(req).get(api.ACCELERATORS_ANNOTATION, "").split(",")) if req else set()
            for gpu in gpus:
                if gpu not in given:
                    suspect(
                        "I1",
                        f"{pname}/{gpu}",
                        f"launcher {pname} holds GPU {gpu} awake but is "
                        + (f"bound to {b[1]} whose accelerators are {sorted(given)}" if b else "unbound"),
                    )
        for p in pods.values():
            if not is_launcher(p) or deleting(p):
                continue
            pname, b = name(p), bound_to(p)
            if b is not None:
                req = requesters.get(b[0])
                if req is None or deleting(req):
                    suspect(
                        "I2",
                        f"{pname}/dead",
                        f"launcher {pname} stays bound to requester {b[1]} ({b[0]}), which is "
                        + ("being deleted" if req is not None else "gone"),
                        UNBIND_GRACE_S,
                    )
            elif awake_by_pod.get(pname):
                suspect(
                    "I2", f"{pname}/awake", f"unbound launcher {pname} holds GPUs {awake_by_pod[pname]} awake"
                )
            if any(k in self.keys.labels for k in labels(p)) and not awake_by_pod.get(pname):
                suspect(
                    "I3", f"{pname}/labels", f"launcher {pname} carries ISC labels but holds no GPU awake"
                )
            listing = listings.get(pname)
            if listing is not None:
                self._check_instances(now, p, listing.instances)
        # I7: Terminating on a dual-pods finalizer.
        for p in pods.values():
            fins = [f for f in meta(p).get("finalizers") or [] if f.startswith("dual-pods.llm-d.ai/")]
            if deleting(p) and fins:
                suspect(
                    "I7",
                    name(p),
                    f"Pod {name(p)} Terminating on finalizers {fins}",
                    TERMINATING_GRACE_S,
                )
        for key in list(self._pending):
            if key not in seen:
                del self._pending[key]
        with self._lock:
            self.polls += 1

    def _check_instances(self, now: float, launcher: Pod, instances: Iterable[dict[str, Any]]) -> None:
        """I5 on one listing: exact (one source), so a violation at once."""
        items = list(instances)
        ports: dict[str, list[str]] = {}
        for i in items:
            ports.setdefault(instance_port(i), []).append(str(i.get("instance_id")))
        for port, ids in ports.items():
            if len(ids) > 1:
                self._violate(now, "I5", f"launcher {name(launcher)} has instances {ids} all on port {port}")
        limit = self.max_instances(labels(launcher).get(api.LAUNCHER_CONFIG_NAME_LABEL, ""))
        if limit is not None and len(items) > limit:
            self._violate(
                now,
                "I5",
                f"launcher {name(launcher)} has {len(items)} instances, more than maxInstances={limit}: "
                + ", ".join(f"{i.get('instance_id')}:{i.get('status')}" for i in items),
            )
