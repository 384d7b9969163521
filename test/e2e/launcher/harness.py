"""What the launcher-path tests do and read: the objects they make (``Lx``), one requester served
start to finish with the time of every step (``serve``), the launcher's API and the controller's
metrics and log.

Times are wall-clock (the monitor's and the GPU ledger's clock). The contract's "within T"
(§7) are its numbers times ``$DPCTL_E2E_TIMEOUT_SCALE`` (``within``); waits for what the contract
gives no time for (a Pod scheduled and started, a launcher Ready) use ``T_START``/``T``.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client.parser import text_string_to_metric_families

from dpctl import api
from dpctl.fma.v1alpha1 import ModelServerConfig
from dpctl.podbuild.launcher import instance_id, launcher_for_node, launcher_template
from e2e.dualpods.conftest import release_finalizers
from e2e.recipe import Kubectl, pod_get
from e2e.recipe_suite.conftest import METRICS_PORT, Dpctlr
from helpers import wait_for

from . import objects
from .monitor import (
    SCALE,
    IscKeys,
    Monitor,
    Pod,
    annots,
    bound_to,
    deleting,
    http_json,
    is_launcher,
    is_ready,
    is_requester,
    labels,
    meta,
    name,
    pod_ip,
)

T_START: Final = 90 * SCALE  # a Pod scheduled, started and Ready; a launcher Ready
T: Final = 120 * SCALE  # anything else the controller does that the contract gives no time for
T_CLEAN: Final = 90 * SCALE
FAST: Final = 0.05  # polls that time a contract deadline
PROVIDER_FINALIZER: Final = api.HEAD.runner_finalizer  # dual-pods.llm-d.ai/provider


def within(seconds: float) -> float:
    return seconds * SCALE


@dataclass
class Served:
    """One requester served: who, by which launcher and instance, and when each step was seen."""

    rs: str
    requester: str
    uid: str
    launcher: str
    launcher_ip: str
    instance: str
    port: int
    uuids: list[str]
    t_stub: float  # the stub first answered its accelerators query
    t_bound: float  # both Pods carry the binding (A1)
    t_instance: float  # the instance first listed by the launcher
    t_awake: float  # the instance first answered /is_sleeping=false
    t_routed: float  # the launcher has sleeping=false and the ISC's labels and annotations (A2)
    t_ready: float  # the requester Ready (A2)


@dataclass
class Lx:
    """The test's view of its namespace on the local cluster."""

    kc: Kubectl
    dpctlr: Dpctlr
    mon: Monitor
    keys: IscKeys
    node: str
    max_instances: dict[str, int] = field(default_factory=dict)
    iscs: dict[str, ModelServerConfig] = field(default_factory=dict)
    timings: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ objects

    def launcher_config(self, lc: str, max_instances: int = 2) -> None:
        self.kc.apply(objects.launcher_config(lc, max_instances))
        self.max_instances[lc] = max_instances

    def isc(
        self, isc: str, lc: str, port: int, model: str = objects.MODELS[0], extra_options: str = ""
    ) -> None:
        obj = objects.isc(isc, lc, port, model, extra_options)
        self.keys.labels.add(objects.ISC_LABEL)
        self.keys.annotations.add(objects.ISC_ANNOTATION)
        self.kc.apply(obj)
        self.iscs[isc] = ModelServerConfig.model_validate(obj["spec"]["modelServerConfig"])

    def edit_isc_options(self, isc: str, extra_options: str) -> None:
        """Change the ISC's vLLM options (a spec change that makes its instances obsolete)."""
        current = self.kc.get_json("inferenceserverconfigs.fma.llm-d.ai", isc)
        options = f"{current['spec']['modelServerConfig']['options']} {extra_options}"
        patch = {"spec": {"modelServerConfig": {"options": options}}}
        self.kc.run(
            "patch", "inferenceserverconfigs.fma.llm-d.ai", isc, "--type=merge", "-p", json.dumps(patch)
        )
        self.iscs[isc] = self.iscs[isc].model_copy(update={"options": options})

    def launcher(self, lc: str) -> str:
        """A launcher Pod of ``lc`` on the test's Node, built as the populator builds them; once Ready."""
        obj = self.kc.get_json("launcherconfigs.fma.llm-d.ai", lc)
        pod = launcher_for_node(launcher_template(obj), self.node)
        created = self.kc.run("create", "-f", "-", "-o", "name", input=json.dumps(pod)).strip()
        launcher = created.removeprefix("pod/")
        wait_for(
            lambda: (p := self.mon.pod(launcher)) is not None and is_ready(p) and pod_ip(p),
            T_START,
            f"launcher Pod {launcher} Ready",
        )
        wait_for(lambda: self.listing(launcher) is not None, T_START, f"launcher {launcher} answering")
        return launcher

    def requester_set(self, rs: str, isc: str, replicas: int = 1) -> float:
        """Create the ReplicaSet; the time it was created."""
        t = time.time()
        self.kc.apply(objects.requester_set(rs, isc, self.node, replicas))
        return t

    def scale(self, rs: str, replicas: int) -> float:
        t = time.time()
        self.kc.scale(rs, replicas)
        return t

    # ------------------------------------------------------------------ reading Pods

    def launchers(self) -> list[Pod]:
        return [p for p in self.mon.live_pods() if is_launcher(p)]

    def requesters(self, rs: str) -> list[Pod]:
        return [
            p
            for p in self.mon.live_pods()
            if is_requester(p)
            and not deleting(p)
            and any(o.get("name") == rs for o in meta(p).get("ownerReferences") or [])
        ]

    def one_requester(self, rs: str, exclude: tuple[str, ...] = ()) -> Pod:
        def one() -> Pod | None:
            live = [p for p in self.requesters(rs) if name(p) not in exclude]
            return live[0] if len(live) == 1 and pod_ip(live[0]) else None

        return wait_for(one, T_START, f"one live requester of {rs} with an IP (not {list(exclude)})")

    def launcher_of(self, uid: str) -> Pod | None:
        bound = [p for p in self.launchers() if (b := bound_to(p)) and b[0] == uid]
        return bound[0] if len(bound) == 1 else None

    def stub_answer(self, requester: str) -> tuple[float, list[str]]:
        """When the requester's stub first answers its GPUs (polled fast), and the GPUs."""

        def probe() -> tuple[float, list[str]] | None:
            p = self.mon.pod(requester)
            if p is None or not pod_ip(p):
                return None
            url = f"http://{pod_ip(p)}:{api.DEFAULT_ADMIN_PORT}{api.HEAD.accelerators_path}"
            status, body = http_json("GET", url, timeout=1.0)
            if status == 200 and isinstance(body, list) and body:
                return time.time(), [str(u) for u in body]
            return None

        return wait_for(probe, T_START, f"the stub of {requester} answering", max_interval=FAST)

    # ------------------------------------------------------------------ the launcher's API

    def launcher_ip(self, launcher: str) -> str:
        p = self.mon.pod(launcher)
        assert p is not None and pod_ip(p), f"launcher {launcher} has no IP"
        return pod_ip(p)

    def listing(self, launcher: str) -> dict[str, Any] | None:
        p = self.mon.pod(launcher)
        if p is None or not pod_ip(p):
            return None
        try:
            status, body = http_json("GET", f"http://{pod_ip(p)}:{api.LAUNCHER_PORT}/v2/vllm/instances")
        except OSError:
            return None
        return body if status == 200 and isinstance(body, dict) else None

    def instances(self, launcher: str) -> dict[str, dict[str, Any]]:
        listing = self.listing(launcher)
        assert listing is not None, f"launcher {launcher} does not list its instances"
        return {str(i["instance_id"]): i for i in listing["instances"]}

    def delete_instance(self, launcher: str, iid: str) -> int:
        url = f"http://{self.launcher_ip(launcher)}:{api.LAUNCHER_PORT}/v2/vllm/instances/{iid}"
        return http_json("DELETE", url, timeout=20)[0]

    def is_sleeping(self, launcher: str, port: int) -> bool | None:
        p = self.mon.pod(launcher)
        if p is None or not pod_ip(p):
            return None
        try:
            status, body = http_json("GET", f"http://{pod_ip(p)}:{port}{api.IS_SLEEPING_PATH}", timeout=1.0)
        except OSError:
            return None
        return bool(body["is_sleeping"]) if status == 200 and isinstance(body, dict) else None

    def instance_log(self, launcher: str, iid: str) -> str:
        url = f"http://{self.launcher_ip(launcher)}:{api.LAUNCHER_PORT}/v2/vllm/instances/{iid}/log"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return bytes(r.read()).decode(errors="replace")
        except OSError as e:
            return f"(no log: {e})"

    # ------------------------------------------------------------------ the controller

    def metric(self, sample: str, **want: str) -> float:
        """The sum of the controller's ``/metrics`` samples named ``sample`` with these labels."""
        pod = wait_for(self.dpctlr.pod, T, "a Ready controller Pod")
        text = pod_get(self.kc, pod, METRICS_PORT, "/metrics", direct=True).decode()
        total = 0.0
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == sample and all(s.labels.get(k) == v for k, v in want.items()):
                    total += s.value
        return total

    def actuations(self, **want: str) -> float:
        return self.metric("fma_actuation_seconds_count", **want)

    def idle(self, what: str) -> None:
        """Wait until the (new) controller has taken in the namespace and has nothing queued and
        no worker busy."""
        self.dpctlr.wait_processed(0, what)

    def duality(self, s: Served) -> float:
        """``fma_duality`` of the pair of ``s`` (its series for the pair's GPU)."""
        return self.metric(
            "fma_duality",
            requester_name=s.requester,
            exported_pod=s.launcher,
            instance_id=s.instance,
            UUID=s.uuids[0],
        )

    def events(self, pod: str) -> set[tuple[str, str]]:
        """(type, reason) of the Events about a Pod (contract §10)."""
        items = self.kc.get_json("events", "--field-selector", f"involvedObject.name={pod}")["items"]
        return {(str(e.get("type")), str(e.get("reason"))) for e in items}

    def wait_event(self, pod: str, kind: str, reason: str) -> None:
        wait_for(lambda: (kind, reason) in self.events(pod), T, f"a {kind} Event {reason} about {pod}")

    def log_count(self, message: str) -> int:
        return self.dpctlr.count(message)

    # ------------------------------------------------------------------ timing

    def within(self, what: str, start: float, end: float | None, limit_s: float) -> float:
        """Assert ``end - start <= within(limit_s)``; note the time taken for the report."""
        assert end is not None, f"{what}: never observed"
        took = end - start
        self.timings.append(f"{what}: {took:.2f}s (limit {within(limit_s):g}s)")
        assert took <= within(limit_s), (
            f"{what} took {took:.2f}s, the contract allows {limit_s:g}s (x{SCALE:g})\n"
            + "\n".join(self.timings)
        )
        return took

    # ------------------------------------------------------------------ one requester served

    def serve(self, rs: str, isc: str, exclude: tuple[str, ...] = ()) -> Served:
        """Wait until the one live requester of ``rs`` is served: bound, its instance created,
        awake, routed and relayed. Checks what holds whatever the timing: the binding on both
        Pods, the instance id (§2.5), the bookkeeping annotations (R13). Times each step."""
        req = self.one_requester(rs, exclude)
        rname, uid = name(req), str(meta(req)["uid"])
        t_stub, uuids = self.stub_answer(rname)
        launcher = wait_for(lambda: self.launcher_of(uid), T, f"a launcher bound to {rname}")
        lname = name(launcher)
        msc = self.iscs[isc]
        iid = instance_id(msc, uuids)
        t_l = self.mon.first(lname, lambda p: labels(p).get(api.DUAL_LABEL) == rname)
        t_r = wait_for(
            lambda: self.mon.first(
                rname,
                lambda p: labels(p).get(api.DUAL_LABEL) == lname and api.INSTANCE_LABEL in labels(p),
            ),
            T,
            f"requester {rname} labelled dual={lname} and instance",
        )
        assert t_l is not None, f"launcher {lname} bound to {rname} without dual={rname}"
        r_now = self.mon.pod(rname) or req
        assert annots(r_now).get(api.ACCELERATORS_ANNOTATION) == ",".join(uuids), annots(r_now)
        status = json.loads(annots(r_now).get(api.HEAD.status) or "{}")
        assert status.get("Errors") in (None, []), f"requester {rname} status: {status}"
        assert labels(r_now).get(api.INSTANCE_LABEL) == iid, (
            f"requester {rname}: instance label {labels(r_now).get(api.INSTANCE_LABEL)!r}, "
            f"contract §2.5 gives {iid!r} for GPUs {uuids}"
        )
        ann = annots(self.mon.pod(lname) or launcher)
        assert ann.get(api.INSTANCE_ID_ANNOTATION) == iid
        assert ann.get(api.SERVER_PORT_ANNOTATION) == str(msc.port)
        assert PROVIDER_FINALIZER in (meta(self.mon.pod(lname) or launcher).get("finalizers") or [])
        routing = json.loads(ann.get(api.ISC_ROUTING_METADATA_ANNOTATION, "{}"))
        assert routing == {"labels": msc.labels, "annotations": msc.annotations}, routing
        body = json.loads(ann.get(api.VLLM_CONFIG_ANNOTATION, "{}"))
        assert body.get("gpu_uuids") == uuids and body.get("annotations", {}).get(api.ISC_NAME_KEY) == isc, (
            body
        )
        t_instance = wait_for(
            lambda: iid in self.instances(lname) and time.time(),
            T,
            f"instance {iid} in launcher {lname}",
            max_interval=FAST,
        )
        t_awake = wait_for(
            lambda: self.is_sleeping(lname, msc.port) is False and time.time(),
            T,
            f"instance {iid} answering /is_sleeping=false",
            max_interval=FAST,
        )
        t_routed = wait_for(
            lambda: self.mon.first(lname, lambda p: routed(p, msc)),
            T,
            f"launcher {lname} with sleeping=false and the ISC's labels and annotations",
        )
        t_ready = wait_for(lambda: self.mon.first(rname, is_ready), T, f"requester {rname} Ready")
        return Served(
            rs, rname, uid, lname, self.launcher_ip(lname), iid, msc.port, uuids, t_stub,
            max(t_l, t_r), t_instance, t_awake, t_routed, t_ready,
        )  # fmt: skip

    def unbound_asleep(self, launcher: str, iid: str, port: int) -> Callable[[], bool]:
        """A4's state of a launcher after its requester went."""

        def check() -> bool:
            p = self.mon.pod(launcher)
            return (
                p is not None
                and unbound(p)
                and (i := self.instances(launcher).get(iid)) is not None
                and i["status"] != "stopped"
                and self.is_sleeping(launcher, port) is True
            )

        return check

    # ------------------------------------------------------------------ after each test

    def cleanup(self) -> None:
        """Delete the test's requesters, then its launchers, with the controller running (so
        finalizers go the normal way), then its ISCs and LCs. Forces what will not go."""
        kc = self.kc
        # Only the test's: the controller's Deployment has a ReplicaSet here too.
        kc.run("delete", "replicasets", "-l", objects.RS_LABEL, "--wait=false", check=False)
        kc.run("delete", "pods", "-l", objects.RS_LABEL, "--wait=false", check=False)
        problems = []
        try:
            wait_for(
                lambda: not [p for p in self.mon.live_pods() if is_requester(p)],
                T_CLEAN,
                "the requesters gone",
            )
        except AssertionError as e:
            problems.append(str(e))
        kc.run("delete", "pods", "-l", api.LAUNCHER_CONFIG_NAME_LABEL, "--wait=false", check=False)
        try:
            wait_for(lambda: not self.launchers(), T_CLEAN, "the launchers gone")
        except AssertionError as e:
            problems.append(str(e))
        if problems:
            release_finalizers(kc)
            kc.run(
                "delete",
                "pods",
                "-l",
                "!app.kubernetes.io/instance",
                "--force",
                "--grace-period=0",
                check=False,
            )
        for kind in ("inferenceserverconfigs.fma.llm-d.ai", "launcherconfigs.fma.llm-d.ai"):
            kc.run("delete", kind, "--all", "--wait=false", check=False)
        assert not problems, "cleanup: " + "; ".join(problems)


def routed(p: Pod, msc: ModelServerConfig) -> bool:
    """A2's launcher: awake, with every ISC label and annotation."""
    lab, ann = labels(p), annots(p)
    return (
        lab.get(api.SLEEPING_LABEL) == "false"
        and all(lab.get(k) == v for k, v in msc.labels.items())
        and all(ann.get(k) == v for k, v in msc.annotations.items())
    )


def unbound(p: Pod) -> bool:
    """A4's launcher: no binding, no bookkeeping, no ISC keys, asleep; the LC's own keys kept."""
    lab, ann = labels(p), annots(p)
    return (
        bound_to(p) is None
        and api.REQUESTER_ANNOTATION not in ann
        and api.DUAL_LABEL not in lab
        and PROVIDER_FINALIZER not in (meta(p).get("finalizers") or [])
        and not any(k in ann for k in api.BOOKKEEPING_ANNOTATIONS)
        and objects.ISC_LABEL not in lab
        and objects.ISC_ANNOTATION not in ann
        and lab.get(api.SLEEPING_LABEL) == "true"
        and objects.LC_LABEL in lab
        and objects.LC_ANNOTATION in ann
    )
