"""What breaks under a bound requester (launcher contract §7 A10, A11; R2, R17): its instance
deleted or killed, its launcher Pod deleted by a user."""

from __future__ import annotations

import os
import signal
import time

import pytest

from dpctl.api import LogMsg
from helpers import wait_for

from .harness import Lx, Served, T
from .monitor import deleting

pytestmark = pytest.mark.e2e


def requester_deleted_after(lx: Lx, s: Served, t0: float, what: str) -> None:
    t = wait_for(
        lambda: lx.mon.first(s.requester, deleting, after=t0) or lx.mon.gone_at(s.requester, after=t0),
        T,
        f"requester {s.requester} deleted",
    )
    lx.within(f"A10 requester deletion requested after the instance was {what}", t0, t, 10)
    wait_for(lambda: lx.mon.gone_at(s.requester), T, f"requester {s.requester} gone")


def test_a10_an_instance_deleted_or_killed_while_bound_deletes_the_requester_and_is_replaced(
    lx: Lx,
) -> None:
    lx.launcher_config("lc-a10")
    lx.isc("isc-a10", "lc-a10", 8005)
    lx.launcher("lc-a10")
    stopped_before = lx.log_count(LogMsg.INSTANCE_STOPPED)
    lx.requester_set("rs-a10", "isc-a10")
    first = lx.serve("rs-a10", "isc-a10")

    # DELETEd through the launcher's API.
    t0 = time.time()
    assert lx.delete_instance(first.launcher, first.instance) == 200
    requester_deleted_after(lx, first, t0, "DELETEd")
    second = lx.serve("rs-a10", "isc-a10", exclude=(first.requester,))
    assert lx.is_sleeping(second.launcher, second.port) is False

    # Killed: the instance's process (the GPU ledger names it), as an OOM kill would end it.
    prefix = f"{lx.kc.namespace}/{second.launcher}"
    (pid,) = {
        h.holder.pid
        for h in lx.mon.ledger.holds()
        if h.holder.pod == prefix and h.gpu in second.uuids and h.awake
    }
    t1 = time.time()
    os.kill(pid, signal.SIGKILL)
    requester_deleted_after(lx, second, t1, "killed")
    third = lx.serve("rs-a10", "isc-a10", exclude=(first.requester, second.requester))
    assert lx.is_sleeping(third.launcher, third.port) is False
    assert lx.log_count(LogMsg.INSTANCE_STOPPED) == stopped_before + 2
    lx.wait_event(first.requester, "Warning", "InstanceStopped")
    lx.wait_event(second.requester, "Warning", "InstanceStopped")


def test_a11_deleting_a_bound_launcher_deletes_its_requester_and_leaves_no_finalizer(lx: Lx) -> None:
    lx.launcher_config("lc-a11")
    lx.isc("isc-a11", "lc-a11", 8005)
    lx.launcher("lc-a11")
    lx.requester_set("rs-a11", "isc-a11")
    s = lx.serve("rs-a11", "isc-a11")

    t0 = time.time()
    lx.kc.delete_pod(s.launcher)
    gone = wait_for(lambda: lx.mon.gone_at(s.requester), T, f"requester {s.requester} gone")
    lx.within("A11 requester gone after its launcher was deleted", t0, gone, 10)
    launcher_gone = wait_for(lambda: lx.mon.gone_at(s.launcher), T, f"launcher {s.launcher} gone")
    lx.within("A11 launcher deletion complete", t0, launcher_gone, 10)
