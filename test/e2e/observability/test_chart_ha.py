"""The chart with ``Replicas=2``: leader election on, exactly one replica holds the Lease, both
are Ready (a standby with warm caches is ready to serve), and when the leader's Pod is force
deleted the Lease moves to another replica (the standby, or the Deployment's replacement if it
asks first) within the lease duration plus slack.

Lease settings are shortened through ``ExtraArgs`` (6 s / 4 s / 1 s), as a user would. The Lease
names its holder by identity (``<hostname>_<pid>``); each replica logs its identity when it
starts ("Waiting to become leader"), which is how the holder is tied to a Pod here. On a real
cluster the hostname is the Pod's name; on the local cluster every Pod shares the host's.

A force delete removes the Pod object at once, and with it the validity of the Pod-bound
ServiceAccount token the leader talks with (on the local cluster as on a real one), so the dying
leader cannot hand the Lease over: a candidate takes it when it expires.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from e2e.deploy.chart import (
    CHART,
    IMAGE,
    RELEASE,
    controller_pods,
    diagnostics,
    helm,
    running_and_ready,
)
from helpers import wait_for

from .conftest import kv, log_lines

if TYPE_CHECKING:
    from e2e.conftest import ClusterHandle

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 6, 4, 1
SLACK_S = 10.0  # the kubelet noticing the deletion, a loaded 2-core machine, polling
METRICS_PORT = 8002
WAITING = "Waiting to become leader"
BECAME = "Became leader"


def _logs(cluster: ClusterHandle, ns: str, pod: str) -> str:
    return cluster.run_kubectl("logs", "-n", ns, pod, check=False).stdout


def _identity(cluster: ClusterHandle, ns: str, pod: str) -> str:
    lines = log_lines(_logs(cluster, ns, pod), WAITING)
    return kv(lines[0].text, "identity") if lines else ""


def _holder(cluster: ClusterHandle, ns: str) -> str:
    r = cluster.run_kubectl(
        "get", "lease", RELEASE, "-n", ns, "-o", "jsonpath={.spec.holderIdentity}", check=False
    )
    return r.stdout.strip() if r.returncode == 0 else ""


def _name(pod: dict[str, Any]) -> str:
    return str(pod["metadata"]["name"])


def _two_ready(cluster: ClusterHandle, ns: str) -> list[dict[str, Any]] | None:
    pods = [p for p in controller_pods(cluster, ns) if not p["metadata"].get("deletionTimestamp")]
    return pods if len(pods) == 2 and all(map(running_and_ready, pods)) else None


def _identities(cluster: ClusterHandle, ns: str, pods: list[dict[str, Any]]) -> dict[str, str] | None:
    ids = {_name(p): _identity(cluster, ns, _name(p)) for p in pods}
    return ids if all(ids.values()) else None


def test_two_replicas_one_lease_holder_both_ready_and_failover(
    cluster: ClusterHandle, namespace: str, node_viewer: str, tmp_path: Path
) -> None:
    ns = namespace
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "Image": IMAGE,
                "NodeViewClusterRole": node_viewer,
                "Replicas": 2,
                "MetricsPort": METRICS_PORT,
                "ExtraArgs": [
                    f"--lease-duration={LEASE_DURATION}",
                    f"--renew-deadline={RENEW_DEADLINE}",
                    f"--retry-period={RETRY_PERIOD}",
                ],
            }
        )
    )
    try:
        helm(cluster, "upgrade", "--install", RELEASE, str(CHART), "--namespace", ns, "-f", str(values))

        # The probes are the controller's health endpoints, on its metrics port.
        deploy = cluster.run_kubectl("get", "deployment", RELEASE, "-n", ns, "-o", "json").stdout
        (container,) = yaml.safe_load(deploy)["spec"]["template"]["spec"]["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        (port,) = container["ports"]
        assert container["livenessProbe"]["httpGet"]["port"] == port["name"]
        assert container["readinessProbe"]["httpGet"]["port"] == port["name"]
        assert port["containerPort"] == METRICS_PORT
        assert f"--metrics-port={METRICS_PORT}" in container["command"]
        assert "--leader-elect" in container["command"]
        assert f"--lease-name={RELEASE}" in container["command"]

        # Both Ready: the standby too.
        pods = wait_for(lambda: _two_ready(cluster, ns), 180, "both controller Pods Running and Ready")
        identities = wait_for(
            lambda: _identities(cluster, ns, pods), 60, "both replicas' identities in their logs"
        )
        assert len(set(identities.values())) == 2, identities
        holder = wait_for(lambda: _holder(cluster, ns), 60, "a Lease holder")
        (leader,) = [name for name, ident in identities.items() if ident == holder]
        (standby,) = [name for name in identities if name != leader]
        assert log_lines(_logs(cluster, ns, leader), BECAME)
        wait_for(lambda: "Caches synced" in _logs(cluster, ns, leader), 60, "the leader's workers started")
        standby_log = _logs(cluster, ns, standby)
        assert not log_lines(standby_log, BECAME) and "Caches synced" not in standby_log
        assert running_and_ready(next(p for p in controller_pods(cluster, ns) if _name(p) == leader))

        # Force-delete the leader: the Lease moves to another replica. Usually the standby; but
        # the Deployment's replacement also campaigns as soon as it starts, and an expired Lease
        # goes to whichever candidate asks first, as with client-go.
        deleted_at = dt.datetime.now(dt.UTC)
        started = time.monotonic()
        cluster.run_kubectl("delete", "pod", leader, "-n", ns, "--grace-period=0", "--force")
        new_holder = wait_for(
            lambda: (h := _holder(cluster, ns)) not in ("", identities[leader]) and h,
            LEASE_DURATION + SLACK_S + 30,
            "another replica holding the Lease",
        )
        observed_s = time.monotonic() - started
        pods = wait_for(lambda: _two_ready(cluster, ns), 180, "two controller Pods Ready again")
        (replacement,) = [_name(p) for p in pods if _name(p) not in identities]
        identities[replacement] = wait_for(
            lambda: _identity(cluster, ns, replacement), 60, "the replacement's identity"
        )
        (new_leader,) = [name for name in (standby, replacement) if identities[name] == new_holder]
        (became,) = wait_for(
            lambda: log_lines(_logs(cluster, ns, new_leader), BECAME), 30, "the new leader's 'Became leader'"
        )
        takeover_s = (became.at - deleted_at).total_seconds()
        print(
            f"lease moved to {'the standby' if new_leader == standby else 'the replacement'}"
            f" {takeover_s:.2f} s after the force delete (seen by polling after {observed_s:.2f} s)"
        )
        assert takeover_s <= LEASE_DURATION + SLACK_S, takeover_s
        wait_for(lambda: "Caches synced" in _logs(cluster, ns, new_leader), 60, "the new leader's workers")

        # The other live replica stays a standby; the Lease stays put.
        (other,) = [name for name in (standby, replacement) if name != new_leader]
        assert not log_lines(_logs(cluster, ns, other), BECAME)
        assert _holder(cluster, ns) == new_holder
    except AssertionError as e:
        raise AssertionError(f"{e}\n{diagnostics(cluster, ns)}") from None
    finally:
        helm(cluster, "uninstall", RELEASE, "--namespace", ns, "--wait", "--timeout", "2m", check=False)
