"""An ISC's spec edited under its instances (launcher contract §7 A13, R20, R22): the sleeping one
is deleted, the bound one keeps serving with its labels until its requester goes, and is then
deleted instead of put to sleep."""

from __future__ import annotations

import time

import pytest

from dpctl.api import LogMsg
from helpers import wait_for

from .harness import FAST, Lx, T, routed, unbound
from .monitor import is_ready

pytestmark = pytest.mark.e2e


def test_a13_an_edited_isc_deletes_its_sleeping_instance_and_the_bound_one_on_unbind(lx: Lx) -> None:
    lx.launcher_config("lc-a13", max_instances=2)
    lx.isc("isc-a13", "lc-a13", 8005)
    lx.launcher("lc-a13")
    lx.launcher("lc-a13")
    # Two requesters of one ISC on two GPUs: one port, so two launchers.
    lx.requester_set("rs-a13-a", "isc-a13")
    a = lx.serve("rs-a13-a", "isc-a13")
    lx.requester_set("rs-a13-b", "isc-a13")
    b = lx.serve("rs-a13-b", "isc-a13")
    assert a.launcher != b.launcher and a.uuids != b.uuids
    lx.scale("rs-a13-a", 0)
    wait_for(lx.unbound_asleep(a.launcher, a.instance, a.port), T, "a's instance asleep, unbound")
    committed = lx.iscs["isc-a13"]
    slept = lx.log_count(LogMsg.SLEPT)
    obsolete = lx.log_count(LogMsg.DELETED_OBSOLETE)

    t0 = time.time()
    lx.edit_isc_options("isc-a13", "--max-model-len 2048")
    t_gone = wait_for(
        lambda: a.instance not in lx.instances(a.launcher) and time.time(),
        T,
        f"the sleeping obsolete instance {a.instance} deleted",
        max_interval=FAST,
    )
    lx.within("A13 sleeping instance deleted after the ISC edit", t0, t_gone, 10)
    assert lx.log_count(LogMsg.DELETED_OBSOLETE) == obsolete + 1
    # The bound one serves on, with the labels it was committed to.
    assert b.instance in lx.instances(b.launcher)
    assert lx.is_sleeping(b.launcher, b.port) is False
    assert routed(lx.mon.pod(b.launcher) or {}, committed), "A13: the bound launcher lost its routing"
    assert is_ready(lx.mon.pod(b.requester))

    lx.scale("rs-a13-b", 0)
    wait_for(lambda: (p := lx.mon.pod(b.launcher)) is not None and unbound(p), T, "b's launcher unbound")
    assert b.instance not in lx.instances(b.launcher), "A13: the obsolete bound instance survived its unbind"
    assert lx.log_count(LogMsg.SLEPT) == slept, (
        "A13: an obsolete instance was put to sleep instead of deleted"
    )
    lx.wait_event(b.requester, "Normal", "InstanceDeleted")
