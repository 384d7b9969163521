"""Several ISCs on one GPU in one launcher (launcher contract §7 A6–A8, R12): a second port gets a
second instance beside the sleeper (warm), the same port replaces the sleeper, and a full
launcher gives up exactly its least recently used instance before the next one is created."""

from __future__ import annotations

import pytest

from dpctl.api import LogMsg
from helpers import wait_for

from . import objects
from .harness import Lx, Served, T

pytestmark = pytest.mark.e2e


def serve_then_sleep(lx: Lx, rs: str, isc: str) -> Served:
    """Serve one requester of ``isc``, then scale it to 0 and wait for its instance asleep."""
    lx.requester_set(rs, isc)
    s = lx.serve(rs, isc)
    lx.scale(rs, 0)
    wait_for(lx.unbound_asleep(s.launcher, s.instance, s.port), T, f"{isc}'s instance asleep, unbound")
    return s


def test_a6_a_second_isc_on_another_port_gets_a_second_instance_beside_the_sleeper(lx: Lx) -> None:
    lx.launcher_config("lc-a6", max_instances=2)
    lx.isc("isc-a6-a", "lc-a6", 8005, objects.MODELS[0])
    lx.isc("isc-a6-b", "lc-a6", 8006, objects.MODELS[1])
    launcher = lx.launcher("lc-a6")
    a = serve_then_sleep(lx, "rs-a6-a", "isc-a6-a")
    warm_before = lx.actuations(path="warm", isc_name="isc-a6-b")

    lx.requester_set("rs-a6-b", "isc-a6-b")
    b = lx.serve("rs-a6-b", "isc-a6-b")

    assert b.uuids == a.uuids, "the second requester did not get the first one's GPU (test setup)"
    assert b.launcher == a.launcher == launcher, f"A6: served by {b.launcher}, not the launcher with room"
    assert len(lx.launchers()) == 1
    assert set(lx.instances(launcher)) == {a.instance, b.instance}
    assert lx.is_sleeping(launcher, a.port) is True, "A6: the first instance did not stay asleep"
    wait_for(
        lambda: lx.actuations(path="warm", isc_name="isc-a6-b") == warm_before + 1,
        T,
        'fma_actuation_seconds{path="warm",isc_name="isc-a6-b"} +1',
    )


def test_a7_the_same_port_as_the_sleeper_in_the_only_launcher_replaces_the_sleeper(lx: Lx) -> None:
    lx.launcher_config("lc-a7", max_instances=2)
    lx.isc("isc-a7-a", "lc-a7", 8005, objects.MODELS[0])
    lx.isc("isc-a7-c", "lc-a7", 8005, objects.MODELS[2])
    launcher = lx.launcher("lc-a7")
    a = serve_then_sleep(lx, "rs-a7-a", "isc-a7-a")
    reclaimed_before = lx.log_count(LogMsg.RECLAIMED_INSTANCE)

    lx.requester_set("rs-a7-c", "isc-a7-c")
    c = lx.serve("rs-a7-c", "isc-a7-c")

    assert c.launcher == launcher, f"A7: served by {c.launcher}, not the only launcher"
    assert len(lx.launchers()) == 1
    assert set(lx.instances(launcher)) == {c.instance}, (
        f"A7: the sleeper {a.instance} on port {a.port} was not replaced"
    )
    assert lx.log_count(LogMsg.RECLAIMED_INSTANCE) == reclaimed_before + 1
    # Never two instances on one port in one launcher: the monitor's I5, on every listing.


def test_a8_a_full_launcher_deletes_exactly_one_lru_instance_before_the_next(lx: Lx) -> None:
    lx.launcher_config("lc-a8", max_instances=2)
    lx.isc("isc-a8-a", "lc-a8", 8005, objects.MODELS[0])
    lx.isc("isc-a8-b", "lc-a8", 8006, objects.MODELS[1])
    lx.isc("isc-a8-c", "lc-a8", 8007, objects.MODELS[2])
    launcher = lx.launcher("lc-a8")
    a = serve_then_sleep(lx, "rs-a8-a", "isc-a8-a")
    b = serve_then_sleep(lx, "rs-a8-b", "isc-a8-b")
    assert set(lx.instances(launcher)) == {a.instance, b.instance}
    reclaimed_before = lx.log_count(LogMsg.RECLAIMED_INSTANCE)

    lx.requester_set("rs-a8-c", "isc-a8-c")
    c = lx.serve("rs-a8-c", "isc-a8-c")

    assert c.launcher == launcher
    assert set(lx.instances(launcher)) == {b.instance, c.instance}, (
        f"A8: expected the least recently used {a.instance} (isc-a8-a) deleted and {b.instance} kept"
    )
    assert lx.is_sleeping(launcher, b.port) is True
    assert lx.log_count(LogMsg.RECLAIMED_INSTANCE) == reclaimed_before + 1, "A8: not exactly one reclaim"
    # Deleted before the PUT: no listing ever showed c's instance beside a's (and none more
    # than maxInstances: the monitor's I5).
    both = [
        listing.at
        for lname, listing in lx.mon.listing_history
        if lname == launcher
        and {a.instance, c.instance} <= {str(i.get("instance_id")) for i in listing.instances}
    ]
    assert both == [], f"A8: the new instance was listed beside the LRU one at {both}"
