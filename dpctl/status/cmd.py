"""`dpctl status`: what the dual-pods controller sees in a namespace, per Node and GPU.

Owns the subcommand's arguments, the three reads it makes (the namespace's Pods, the cluster's
Nodes, the ``gpu-map`` ConfigMap) and the output formats; the report itself is
:func:`dpctl.status.fleet.build`. ``-o table`` prints kubectl-style tables (columns aligned
like kubectl's tabwriter, ``-`` for empty, ages like ``5m`` or ``2h``); ``-o json`` and
``-o yaml`` print the report model as is, its keys in declaration order.

Also a kubectl plugin: with ``hack/kubectl-dpctl`` and ``dpctl`` on PATH, ``kubectl dpctl status
...`` runs this. kubectl hands a plugin its arguments unparsed, so the global flags a kubectl user
types (``--kubeconfig``, ``--context``, ``-n/--namespace``) are accepted here with kubectl's
meaning, and the namespace defaults to the kubeconfig context's, like kubectl's.

Exit status: 0 with a report, even one full of errors (they are the report); 1 when the API
server cannot be reached or refuses (no credentials, forbidden), with the reason on stderr.
Nodes are read when allowed: without permission the report says so and goes on, as the
controller does.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import yaml

from dpctl import api
from dpctl.kube import CONFIGMAPS, NODES, PODS, ApiError, Kube, RawObj
from dpctl.kube.transport import SERVICE_ACCOUNT_DIR, in_cluster, kubeconfig_contexts
from dpctl.status import fleet

# Where a Pod's service account tells its namespace; kubectl reads the same file in-cluster.
SERVICE_ACCOUNT_NAMESPACE = SERVICE_ACCOUNT_DIR / "namespace"

# kubectl's tabwriter: cells padded by 3 spaces, columns at least 6 wide.
_PADDING = 3
_MIN_WIDTH = 6


class StatusError(Exception):
    """Why no report could be made, in words for the user."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Show GPUs, requesters, runners, sleepers and errors of a namespace."
    parser.epilog = (
        "As a kubectl plugin: put hack/kubectl-dpctl and dpctl on PATH, then `kubectl dpctl status -n NS`."
    )
    parser.add_argument(
        "-n", "--namespace", default="", help="namespace (default: the kubeconfig context's, else default)"
    )
    parser.add_argument(
        "-o", "--output", choices=["table", "json", "yaml"], default="table", help="output format"
    )
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG)")
    parser.add_argument("--context", default=None, help="kubeconfig context")


def run(args: argparse.Namespace) -> int:
    try:
        if args.kubeconfig and not Path(args.kubeconfig).is_file():
            # Said plainly: the loader would only complain about a missing current-context.
            raise StatusError(f"kubeconfig {args.kubeconfig} does not exist")
        namespace = args.namespace or default_namespace(args.kubeconfig, args.context)
        report = asyncio.run(collect(namespace, args.kubeconfig, args.context))
    except StatusError as err:
        print(f"dpctl status: {err}", file=sys.stderr)
        return 1
    sys.stdout.write(render(report, args.output))
    return 0


def default_namespace(kubeconfig: str | None, context: str | None) -> str:
    """kubectl's rule: the context's namespace, in-cluster the Pod's own, else ``default``."""
    if in_cluster(kubeconfig):
        # Kube.connect picks in-cluster credentials in exactly this case; client-go then looks at
        # $POD_NAMESPACE (the chart sets it from the downward API) before the token's namespace.
        if os.environ.get("POD_NAMESPACE"):
            return os.environ["POD_NAMESPACE"]
        try:
            return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
        except OSError:
            return "default"
    try:
        contexts, current = kubeconfig_contexts(kubeconfig)
    except Exception:  # no or bad kubeconfig: connecting will say what is wrong with it
        return "default"
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else current
    ns = ((chosen or {}).get("context") or {}).get("namespace")
    return str(ns) if ns else "default"


async def collect(namespace: str, kubeconfig: str | None, context: str | None) -> fleet.FleetReport:
    """Read the namespace and build its report; raises StatusError saying why it cannot."""
    try:
        kube = await Kube.connect(kubeconfig, context)
    except Exception as err:  # any loader failure means the same thing to the user
        raise StatusError(f"cannot load Kubernetes credentials: {err}") from None
    try:
        pods, _ = await kube.list_all(PODS, namespace)
        nodes = await _nodes(kube)
        gpu_map = await _gpu_map(kube, namespace)
    except ApiError as err:
        if err.forbidden:
            raise StatusError(f"forbidden: {err.message}") from None
        raise StatusError(
            f"the API server at {kube.host} answered {err.status} {err.reason}: {err.message}"
        ) from None
    except (OSError, TimeoutError, aiohttp.ClientError) as err:
        raise StatusError(
            f"cannot reach the API server at {kube.host}: {err or type(err).__name__}"
        ) from None
    finally:
        await kube.close()
    return fleet.build(namespace, pods, nodes, gpu_map, now=dt.datetime.now(dt.UTC))


async def _nodes(kube: Kube) -> list[RawObj] | None:
    """Every Node, or None without permission (the chart binds Node access only when asked)."""
    try:
        nodes, _ = await kube.list_all(NODES)
    except ApiError as err:
        if err.forbidden:
            return None
        raise
    return nodes


async def _gpu_map(kube: Kube, namespace: str) -> RawObj | None:
    try:
        return await kube.get(CONFIGMAPS, api.GPU_MAP_NAME, namespace)
    except ApiError as err:
        if err.not_found:
            return None
        raise


def render(report: fleet.FleetReport, output: str) -> str:
    if output == "json":
        return report.model_dump_json(indent=2) + "\n"
    if output == "yaml":
        return yaml.safe_dump(report.model_dump(mode="json"), sort_keys=False)
    return render_table(report)


def render_table(report: fleet.FleetReport) -> str:
    """Up to three tables like ``kubectl get``: Nodes, GPUs, errors; empty ones are left out."""
    now = report.generated_at
    sections = []
    if report.nodes:
        sections.append(
            _table(
                ["NODE", "STATUS", "ALLOCATABLE", "GPU-MAP"],
                [[n.name, _node_status(n), _opt(n.allocatable_gpus), _map_column(n)] for n in report.nodes],
            )
        )
    gpu_rows = [_gpu_row(n.name, g, now) for n in report.nodes for g in n.gpus]
    if gpu_rows:
        sections.append(
            _table(
                ["NODE", "GPU", "UUID", "REQUESTER", "READY", "RUNNER", "READY", "STATE", "SLEEPERS"],
                gpu_rows,
            )
        )
    if report.errors:
        sections.append(_table(["OBJECT", "ERROR"], [[p.object, p.message] for p in report.errors]))
    if not sections:
        return f"No GPUs, requesters or runners found in {report.namespace} namespace.\n"
    return "\n".join(sections)


def _gpu_row(node: str, gpu: fleet.Gpu, now: dt.datetime) -> list[str]:
    runner = gpu.runner
    return [
        node,
        _opt(gpu.index),
        gpu.uuid,
        gpu.requester.name if gpu.requester else "",
        _bool(gpu.requester.ready) if gpu.requester else "",
        runner.name if runner else "",
        _bool(runner.ready) if runner else "",
        _state(runner) if runner else "",
        ",".join(_sleeper(s, now) for s in gpu.sleepers),
    ]


def _node_status(node: fleet.Node) -> str:
    """kubectl's STATUS column, plus the cases kubectl never sees."""
    if node.found is None:
        return "Unknown"
    if not node.found:
        return "NotFound"
    status = "Ready" if node.ready else "NotReady"
    return status + ",SchedulingDisabled" if node.cordoned else status


def _map_column(node: fleet.Node) -> str:
    if node.gpu_map_entry != "ok":
        return node.gpu_map_entry
    # Only the map knows both index and UUID of a GPU; rows known from one Pod lack one of them.
    mapped = sum(1 for g in node.gpus if g.index is not None and g.uuid)
    return f"{mapped} GPU" if mapped == 1 else f"{mapped} GPUs"


def _state(runner: fleet.RunnerRef) -> str:
    if runner.terminating:
        return "terminating"
    return "asleep" if runner.sleeping else "awake"


def _sleeper(sleeper: fleet.RunnerRef, now: dt.datetime) -> str:
    notes = [age(now - sleeper.last_used)] if sleeper.last_used else []
    if sleeper.terminating:
        notes.append("terminating")
    return f"{sleeper.name}({','.join(notes)})" if notes else sleeper.name


def _opt(value: int | None) -> str:
    return "" if value is None else str(value)


def _bool(value: bool) -> str:
    return "true" if value else "false"


def age(delta: dt.timedelta) -> str:
    """A duration the way kubectl's AGE column writes it (apimachinery's HumanDuration)."""
    seconds = max(0, int(delta.total_seconds()))  # clock skew must not print a negative age
    minutes, hours = seconds // 60, seconds // 3600
    days, years = hours // 24, hours // (24 * 365)
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if hours < 24 * 365 * 2:
        return f"{days}d"
    if hours < 24 * 365 * 8:
        return f"{years}y{days % 365}d" if days % 365 else f"{years}y"
    return f"{years}y"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cells = [list(header)] + [[c or "-" for c in row] for row in rows]
    widths = [max(_MIN_WIDTH, max(len(r[i]) for r in cells) + _PADDING) for i in range(len(header))]
    lines = ["".join(c.ljust(w) for c, w in zip(r[:-1], widths[:-1], strict=True)) + r[-1] for r in cells]
    return "".join(line + "\n" for line in lines)
