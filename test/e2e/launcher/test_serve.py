"""A requester served by a launcher that is already there, put to sleep, and woken (launcher
contract §7 A1–A5): the binding, the instance, the wake and relay, the unbind that keeps the
sleeping instance, and the hot path that wakes it for the next requester on that GPU."""

from __future__ import annotations

import pytest

from dpctl import api
from dpctl.api import LogMsg
from helpers import wait_for

from . import objects
from .harness import Lx, T, unbound
from .monitor import labels

pytestmark = pytest.mark.e2e


def test_a1_a2_a3_ready_launcher_is_bound_its_instance_created_woken_and_relayed(lx: Lx) -> None:
    lx.launcher_config("lc-a1")
    lx.isc("isc-a1", "lc-a1", 8005)
    launcher = lx.launcher("lc-a1")
    created_before = lx.actuations(path="warm", isc_name="isc-a1")

    lx.requester_set("rs-a1", "isc-a1")
    s = lx.serve("rs-a1", "isc-a1")

    # A1: that launcher (the only candidate), bound on both Pods within 5 s of the stub answering,
    # then the instance PUT within 5 s of the binding.
    assert s.launcher == launcher, f"bound {s.launcher}, not the Ready unbound launcher {launcher}"
    assert len(lx.launchers()) == 1, "a second launcher was created although one was Ready"
    lx.within("A1 binding after the stub answered", s.t_stub, s.t_bound, 5)
    lx.within("A1 instance created after the binding", s.t_bound, s.t_instance, 5)
    assert list(lx.instances(launcher)) == [s.instance]
    # A2: awake ⇒ sleeping=false with the ISC's labels and annotations, and the requester Ready.
    lx.within("A2 launcher routed after the instance woke", s.t_awake, s.t_routed, 7)
    lx.within("A2 requester Ready after the instance woke", s.t_awake, s.t_ready, 7)
    # A3: no update of the launcher carried the ISC's labels before it was routed (the monitor
    # also checks this on every update, of every launcher, in every test).
    early = [
        u.at
        for u in lx.mon.updates(launcher)
        if objects.ISC_LABEL in labels(u.pod) and labels(u.pod).get(api.SLEEPING_LABEL) != "false"
    ]
    assert early == [], f"A3: the launcher carried the ISC labels before it was awake, at {early}"
    assert lx.log_count(LogMsg.BOUND_LAUNCHER) >= 1 and lx.log_count(LogMsg.CREATED_INSTANCE) >= 1
    lx.wait_event(s.requester, "Normal", "LauncherBound")
    lx.wait_event(s.requester, "Normal", "InstanceCreated")
    wait_for(lambda: lx.duality(s) == 1, T, "fma_duality 1 for the bound pair")
    wait_for(
        lambda: lx.actuations(path="warm", isc_name="isc-a1") == created_before + 1,
        T,
        'fma_actuation_seconds{path="warm"} +1 (an instance was created, not a launcher)',
    )


def test_a4_a5_scale_to_zero_keeps_the_instance_asleep_and_scale_back_wakes_it_hot(lx: Lx) -> None:
    lx.launcher_config("lc-a4")
    lx.isc("isc-a4", "lc-a4", 8005)
    launcher = lx.launcher("lc-a4")
    lx.requester_set("rs-a4", "isc-a4")
    first = lx.serve("rs-a4", "isc-a4")

    # A4: the requester goes within 10 s; the launcher stays, unbound, asleep, instance kept.
    t0 = lx.scale("rs-a4", 0)
    gone = wait_for(lambda: lx.mon.gone_at(first.requester), T, f"requester {first.requester} gone")
    lx.within("A4 requester gone after scale to 0", t0, gone, 10)
    t_asleep = wait_for(lx.unbound_asleep(launcher, first.instance, first.port), T, "A4's unbound launcher")
    t_unbound = lx.mon.first(launcher, unbound, after=t0)
    lx.within("A4 launcher unbound and asleep after scale to 0", t0, t_unbound, 10)
    assert t_asleep
    lx.wait_event(first.requester, "Normal", "InstanceSlept")
    wait_for(lambda: lx.duality(first) == 0, T, "fma_duality 0 once the pair is unbound")
    revision = lx.listing(launcher)
    assert revision is not None
    woke_before = lx.log_count(LogMsg.WOKE)
    created_before = lx.log_count(LogMsg.CREATED_INSTANCE)
    wakes_before = lx.instance_log(launcher, first.instance).count("seconds to wake up")
    hot_before = lx.actuations(path="hot", isc_name="isc-a4")

    # A5: back to 1 on the same GPU: the same launcher and instance, woken, no new PUT.
    lx.scale("rs-a4", 1)
    again = lx.serve("rs-a4", "isc-a4", exclude=(first.requester,))
    assert again.uuids == first.uuids, "the replacement requester did not get the same GPU (test setup)"
    assert (again.launcher, again.instance) == (first.launcher, first.instance)
    lx.within("A5 requester Ready after its stub answered", again.t_stub, again.t_ready, 5)
    after = lx.listing(launcher)
    assert after is not None and after["revision"] == revision["revision"], (
        f"A5: the launcher's instances changed (revision {revision['revision']} -> {after and after['revision']}):"
        " a new PUT or a delete"
    )
    assert lx.log_count(LogMsg.CREATED_INSTANCE) == created_before, "A5: a second 'Created vLLM instance'"
    wakes = lx.instance_log(launcher, first.instance).count("seconds to wake up") - wakes_before
    assert wakes == 1, f"A5: the instance woke {wakes} times, not once"
    assert lx.log_count(LogMsg.WOKE) == woke_before + 1, "A5: not exactly one 'Woke inference server'"
    wait_for(
        lambda: lx.actuations(path="hot", isc_name="isc-a4") == hot_before + 1,
        T,
        'fma_actuation_seconds{path="hot"} +1',
    )
    assert labels(lx.mon.pod(launcher) or {}).get(api.SLEEPING_LABEL) == "false"
    lx.wait_event(again.requester, "Normal", "InstanceWoken")
