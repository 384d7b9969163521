"""`dpctl status`: what the dual-pods controller sees in a namespace, per Node and GPU, and its
launchers with their vLLM instances.

Owns the subcommand's arguments, the three reads it makes of the API server (the namespace's
Pods, the cluster's Nodes, the ``gpu-map`` ConfigMap), the questions it asks each Ready launcher
Pod (``GET http://<Pod IP>:8001/v2/vllm/instances``, then ``GET /is_sleeping`` on each running
instance's port; all at once, each bounded by the clients' timeouts, a failure shown in the
report and never fatal) and the output formats; the report itself is
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
from dpctl.clients.http import HttpCallError, HttpClient
from dpctl.clients.inference import InferenceClient
from dpctl.clients.launcher import LauncherClient, launcher_url
from dpctl.dualpods import launcherview, podview
from dpctl.kube import CONFIGMAPS, NODES, PODS, ApiError, Kube, RawObj
from dpctl.kube.transport import SERVICE_ACCOUNT_DIR, in_cluster, kubeconfig_contexts
from dpctl.launcher.api import InstanceState, Status
from dpctl.status import fleet

# Where a Pod's service account tells its namespace; kubectl reads the same file in-cluster.
SERVICE_ACCOUNT_NAMESPACE = SERVICE_ACCOUNT_DIR / "namespace"

# kubectl's tabwriter: cells padded by 3 spaces, columns at least 6 wide.
_PADDING = 3
_MIN_WIDTH = 6


class StatusError(Exception):
    """Why no report could be made, in words for the user."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Show GPUs, requesters, runners, sleepers, launchers with their instances, and errors of a namespace."
    )
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
    seen = await ask_launchers(pods)
    return fleet.build(namespace, pods, nodes, gpu_map, now=dt.datetime.now(dt.UTC), launchers_seen=seen)


async def ask_launchers(
    pods: Sequence[RawObj], launcher_port: int = api.LAUNCHER_PORT
) -> dict[str, fleet.LauncherSeen]:
    """What every launcher Pod worth asking (`fleet.should_ask`) says of its instances, by Pod name."""
    asked = [p for p in pods if podview.is_launcher(p) and fleet.should_ask(p)]
    if not asked:
        return {}
    http = HttpClient()
    try:
        answers = await asyncio.gather(*(_ask_launcher(http, p, launcher_port) for p in asked))
    finally:
        await http.close()
    return {p["metadata"]["name"]: seen for p, seen in zip(asked, answers, strict=True)}


async def _ask_launcher(http: HttpClient, pod: RawObj, launcher_port: int) -> fleet.LauncherSeen:
    ip = str((pod.get("status") or {}).get("podIP") or "")
    try:
        states = await LauncherClient(http).instances(launcher_url(ip, launcher_port))
    except HttpCallError as err:
        return fleet.LauncherSeen(error=err.detail)
    except (ValueError, OSError) as err:  # an odd Pod IP: reported, never fatal
        return fleet.LauncherSeen(error=f"{type(err).__name__}: {err}")
    inference = InferenceClient(http)
    return fleet.LauncherSeen(
        instances=tuple(await asyncio.gather(*(_ask_instance(inference, ip, s) for s in states)))
    )


async def _ask_instance(inference: InferenceClient, ip: str, state: InstanceState) -> fleet.InstanceSeen:
    port = launcherview.instance_port(state)
    if state.status != Status.RUNNING or port is None:
        return fleet.InstanceSeen(state=state)
    try:
        return fleet.InstanceSeen(state=state, sleeping=await inference.is_sleeping(ip, port))
    except HttpCallError as err:
        return fleet.InstanceSeen(state=state, error=err.detail)


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
    """Up to five tables like ``kubectl get``: Nodes, GPUs, launchers, their instances, errors;
    empty ones are left out."""
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
    if report.launchers:
        sections.append(
            _table(
                ["LAUNCHER", "CONFIG", "NODE", "READY", "REQUESTER", "READY", "SLEEPING", "LAST-USED", "API"],
                [_launcher_row(launcher, now) for launcher in report.launchers],
            )
        )
    instance_rows = [_instance_row(la, i) for la in report.launchers for i in la.instances]
    if instance_rows:
        sections.append(
            _table(["LAUNCHER", "INSTANCE", "ISC", "PORT", "GPUS", "STATE", "REQUESTER"], instance_rows)
        )
    if report.errors:
        sections.append(_table(["OBJECT", "ERROR"], [[p.object, p.message] for p in report.errors]))
    if not sections:
        return f"No GPUs, requesters, runners or launchers found in {report.namespace} namespace.\n"
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


def _launcher_row(launcher: fleet.Launcher, now: dt.datetime) -> list[str]:
    requester = launcher.requester
    return [
        launcher.name,
        launcher.launcher_config,
        launcher.node,
        _bool(launcher.ready),
        requester.name if requester else "",
        _bool(requester.ready) if requester else "",
        "terminating" if launcher.terminating else _bool(launcher.sleeping),
        age(now - launcher.last_used) if launcher.last_used else "",
        launcher.api,
    ]


def _instance_row(launcher: fleet.Launcher, inst: fleet.Instance) -> list[str]:
    gpus = ",".join(
        str(index) if index is not None else uuid
        for uuid, index in zip(inst.gpu_uuids, inst.gpu_indices, strict=True)
    )
    state = inst.state if inst.exit_code is None else f"{inst.state}(exit {inst.exit_code})"
    return [
        launcher.name,
        inst.id,
        inst.isc,
        _opt(inst.port),
        gpus,
        state,
        launcher.requester.name if inst.bound and launcher.requester else "",
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
