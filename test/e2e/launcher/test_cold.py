"""No launcher to use: the controller creates one, already bound (launcher contract §7 A9, R14).

A9's last clause (the populator does not delete a bound launcher) waits for the populator; here
nothing but the controller may delete launchers, and the monitor's I2 sees it stay bound.
"""

from __future__ import annotations

import pytest

from dpctl import api
from dpctl.api import LogMsg
from dpctl.fma.v1alpha1 import API_VERSION
from dpctl.podbuild.launcher import launcher_for_node, launcher_template
from helpers import wait_for

from .harness import PROVIDER_FINALIZER, Lx, T
from .monitor import annots, bound_to, labels, meta

pytestmark = pytest.mark.e2e


def test_a9_without_a_launcher_one_is_created_already_bound_on_the_cold_path(lx: Lx) -> None:
    lx.launcher_config("lc-a9")
    lx.isc("isc-a9", "lc-a9", 8005)
    assert lx.launchers() == []
    cold_before = lx.actuations(path="cold", isc_name="isc-a9")
    creates_before = lx.metric("fma_launcher_create_seconds_count", lcfg_name="lc-a9", success="true")
    logged_before = lx.log_count(LogMsg.CREATED_LAUNCHER)

    lx.requester_set("rs-a9", "isc-a9")
    s = lx.serve("rs-a9", "isc-a9")

    assert len(lx.launchers()) == 1, f"A9: {len(lx.launchers())} launchers, not the one created"
    added = next(u.pod for u in lx.mon.updates(s.launcher) if u.type == "ADDED")
    # Bound in the Create itself: the binding, the provider finalizer, the dual label and the
    # four bookkeeping annotations on the Pod as first stored.
    assert bound_to(added) == (s.uid, s.requester), f"A9: created unbound: {annots(added)}"
    assert PROVIDER_FINALIZER in (meta(added).get("finalizers") or [])
    assert labels(added).get(api.DUAL_LABEL) == s.requester
    missing = [k for k in api.BOOKKEEPING_ANNOTATIONS if k not in annots(added)]
    assert missing == [], f"A9: the created launcher lacks {missing}"
    # Built from the LC for this Node by the shared builder (contract §2.4).
    lc = lx.kc.get_json("launcherconfigs.fma.llm-d.ai", "lc-a9")
    want = launcher_for_node(launcher_template(lc), lx.node)
    for key in (api.LAUNCHER_CONFIG_HASH_ANNOTATION, api.LAUNCHER_TEMPLATE_HASH_ANNOTATION):
        assert annots(added).get(key) == want["metadata"]["annotations"][key], key
    assert labels(added).get(api.NODE_NAME_LABEL) == lx.node
    (owner,) = meta(added).get("ownerReferences") or [{}]
    assert (owner.get("apiVersion"), owner.get("kind"), owner.get("name")) == (
        API_VERSION,
        "LauncherConfig",
        "lc-a9",
    )
    wait_for(
        lambda: lx.actuations(path="cold", isc_name="isc-a9") == cold_before + 1,
        T,
        'fma_actuation_seconds{path="cold"} +1',
    )
    assert (
        lx.metric("fma_launcher_create_seconds_count", lcfg_name="lc-a9", success="true")
        == creates_before + 1
    )
    assert lx.log_count(LogMsg.CREATED_LAUNCHER) == logged_before + 1
