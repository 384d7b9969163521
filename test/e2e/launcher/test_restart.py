"""The controller restarted at points of the flow (launcher contract §7 A12, I8): after a binding,
while serving, while asleep. After each restart: no second launcher, no second instance, the
pair as it was, no actuation observed again, and A5's hot wake still works."""

from __future__ import annotations

import pytest

from dpctl import api
from dpctl.api import LogMsg
from e2e.deploy.chart import RELEASE
from helpers import wait_for

from . import objects
from .harness import Lx, Served, T, routed, unbound
from .monitor import bound_to, deleting, is_ready, labels, name

pytestmark = pytest.mark.e2e


def same_pair(lx: Lx, s: Served, launchers: int = 1, revision: int = 1) -> None:
    """The pair of ``s`` unchanged, its launcher holding its one instance, and no other launcher."""
    names = sorted(name(p) for p in lx.launchers())
    assert len(names) == launchers, f"A12: launchers {names}, expected {launchers}"
    launcher = lx.mon.pod(s.launcher)
    assert launcher is not None and bound_to(launcher) == (s.uid, s.requester), "A12: the binding changed"
    assert labels(lx.mon.pod(s.requester) or {}).get(api.INSTANCE_LABEL) == s.instance
    assert list(lx.instances(s.launcher)) == [s.instance], "A12: a second instance"
    seen = (lx.listing(s.launcher) or {}).get("revision")
    assert seen == revision, f"A12: {s.launcher}'s instances changed {seen} times, not {revision}"


def test_a12_a_controller_restart_loses_nothing(lx: Lx) -> None:
    lx.launcher_config("lc-a12")
    lx.isc("isc-a12", "lc-a12", 8005)
    lx.isc("isc-a12-cold", "lc-a12", 8006, objects.MODELS[1])
    launcher = lx.launcher("lc-a12")

    # 1. Killed as soon as the binding shows (the instance may or may not be created yet).
    lx.requester_set("rs-a12", "isc-a12")
    req = lx.one_requester("rs-a12")
    wait_for(lambda: lx.launcher_of(str(req["metadata"]["uid"])), T, "the binding")
    lx.dpctlr.kill()
    s = lx.serve("rs-a12", "isc-a12")
    assert s.launcher == launcher
    same_pair(lx, s)

    # 2. Killed while serving: nothing changes, nothing is observed again.
    lx.dpctlr.kill()
    lx.idle("the restart while serving")
    same_pair(lx, s)
    assert routed(lx.mon.pod(launcher) or {}, lx.iscs["isc-a12"]), "A12: the launcher lost its routing"
    assert is_ready(lx.mon.pod(s.requester)), "A12: the requester is no longer Ready"
    assert lx.is_sleeping(launcher, s.port) is False
    assert lx.actuations() == 0, "A12: the new controller observed an actuation of a pair already served"

    # 3. A second requester finds no free launcher (cold): killed as soon as the launcher it
    # creates shows, and again as soon as that launcher lists the instance.
    lx.requester_set("rs-a12-cold", "isc-a12-cold")
    cold = lx.one_requester("rs-a12-cold")
    created = wait_for(lambda: lx.launcher_of(str(cold["metadata"]["uid"])), T, "the cold launcher")
    lx.dpctlr.kill()
    wait_for(lambda: lx.instances(name(created)), T, "the cold launcher's instance")
    lx.dpctlr.kill()
    c = lx.serve("rs-a12-cold", "isc-a12-cold")
    assert c.launcher == name(created), f"A12: served by {c.launcher}, not the launcher created for it"
    same_pair(lx, c, launchers=2)
    same_pair(lx, s, launchers=2)

    # 4. Killed while asleep: still asleep and unbound after; then A5 works.
    lx.scale("rs-a12", 0)
    wait_for(lx.unbound_asleep(launcher, s.instance, s.port), T, "the instance asleep, unbound")
    revision = (lx.listing(launcher) or {}).get("revision")
    lx.dpctlr.kill()
    lx.idle("the restart while asleep")
    assert len(lx.launchers()) == 2
    assert unbound(lx.mon.pod(launcher) or {}), "A12: the launcher changed while the controller restarted"
    assert list(lx.instances(launcher)) == [s.instance] and lx.is_sleeping(launcher, s.port) is True
    assert lx.actuations() == 0
    created_logged = lx.log_count(LogMsg.CREATED_INSTANCE)
    lx.scale("rs-a12", 1)
    again = lx.serve("rs-a12", "isc-a12", exclude=(s.requester,))
    assert (again.launcher, again.instance) == (launcher, s.instance), "A12: A5 did not reuse the sleeper"
    assert (lx.listing(launcher) or {}).get("revision") == revision, "A12/A5: a new PUT after the restart"
    assert lx.log_count(LogMsg.CREATED_INSTANCE) == created_logged
    lx.within("A12/A5 requester Ready after its stub answered", again.t_stub, again.t_ready, 5)
    wait_for(
        lambda: lx.actuations(path="hot", isc_name="isc-a12") == 1, T, 'fma_actuation_seconds{path="hot"} 1'
    )


def test_a12_r17_an_instance_gone_while_the_controller_was_down_is_created_again(lx: Lx) -> None:
    """R17: a bound instance absent from its launcher, not known to this controller process to
    have existed (it started after the instance went), is created again under its id from the
    committed vllm-config; the requester is kept (only an instance known to have died is fatal)."""
    lx.launcher_config("lc-a12-r17")
    lx.isc("isc-a12-r17", "lc-a12-r17", 8005)
    launcher = lx.launcher("lc-a12-r17")
    lx.requester_set("rs-a12-r17", "isc-a12-r17")
    s = lx.serve("rs-a12-r17", "isc-a12-r17")

    dpctlr = lx.dpctlr
    dpctlr.previous_logs.append(dpctlr.current_log())
    lx.kc.run("scale", f"deploy/{RELEASE}", "--replicas=0")
    wait_for(lambda: not dpctlr.pods(), T, "the controller stopped")
    try:
        assert lx.delete_instance(launcher, s.instance) == 200
        wait_for(lambda: s.instance not in lx.instances(launcher), T, "the instance gone")
    finally:
        lx.kc.run("scale", f"deploy/{RELEASE}", "--replicas=1")
    wait_for(dpctlr.pod, T, "the controller back")
    wait_for(lambda: "Caches synced" in dpctlr.current_log(), T, "the new controller synced")
    wait_for(
        lambda: (i := lx.instances(launcher).get(s.instance)) is not None and i["status"] == "running",
        T,
        f"R17: instance {s.instance} created again",
    )
    wait_for(lambda: lx.is_sleeping(launcher, s.port) is False, T, "the instance awake again")
    lx.idle("the re-creation")
    req = lx.mon.pod(s.requester)
    assert req is not None and not deleting(req), "R17: the requester was deleted"
    same_pair(lx, s, revision=3)  # CREATED, DELETED, CREATED
    assert routed(lx.mon.pod(launcher) or {}, lx.iscs["isc-a12-r17"])
    assert is_ready(lx.mon.pod(s.requester))
