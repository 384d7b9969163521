"""`dpctl sim-kubelet`: run the simulated kubelet, or (``ctl``) tell a running one what to do.

Serve::

    dpctl sim-kubelet --kubeconfig K --state-dir D --nodes N --gpus G \\
        [--gpu-product NVIDIA-L40S] [--node-prefix node-] [--ca-cert C --ca-key K]
        [--hollow [--hollow-listen pod|any] [--hollow-ledger memory|sqlite]]

Control (through the admin API whose port the server wrote to ``D/kubelet-admin.json``)::

    dpctl sim-kubelet ctl --state-dir D node NAME --not-ready|--ready|--remove|--add
    dpctl sim-kubelet ctl --state-dir D nodes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from dpctl import log
from dpsim.kubelet import ctl
from dpsim.kubelet.ips import LOOPBACK, PLANS

if TYPE_CHECKING:
    from dpsim.kubelet.kubelet import KubeletConfig

EXIT_USAGE = 2
EXIT_FAILED = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "The simulated kubelet of the local cluster: N GPU nodes in one process."
    parser.add_argument("--kubeconfig", type=Path, help="credentials for the API server (required to serve)")
    parser.add_argument("--state-dir", type=Path, help="where pods, logs, GPU tables and allocations live")
    parser.add_argument("--nodes", type=int, help="how many nodes to register (<prefix>1..<prefix>N)")
    parser.add_argument("--gpus", type=int, help="nvidia.com/gpu per node")
    parser.add_argument("--gpu-product", default="NVIDIA-L40S", help="the nvidia.com/gpu.product label")
    parser.add_argument("--node-prefix", default="node-", help="node names are <prefix><n>")
    parser.add_argument("--ca-cert", type=Path, help="CA that issues the nodes' serving certificates")
    parser.add_argument("--ca-key", type=Path, help="key of --ca-cert")
    parser.add_argument(
        "--kubelet-port", type=int, default=10250, help="kubelet endpoint port on each node IP"
    )
    parser.add_argument(
        "--backoff-base",
        type=float,
        default=1.0,
        help="first crash-loop/image-pull back-off in seconds, doubling per retry (a kubelet uses 10)",
    )
    parser.add_argument("--backoff-cap", type=float, default=300.0, help="longest back-off in seconds")
    parser.add_argument(
        "--max-grace", type=float, default=30.0, help="upper bound on a pod's termination grace period (s)"
    )
    parser.add_argument(
        "--status-interval", type=float, default=60.0, help="seconds between node status posts (leases: 10 s)"
    )
    parser.add_argument("--workers", type=int, default=8, help="pods synced concurrently")
    parser.add_argument(
        "--address-block",
        type=int,
        default=0,
        help="which block of node addresses of --network to use (see dpsim.kubelet.ips); one per local cluster",
    )
    parser.add_argument(
        "--network",
        choices=sorted(PLANS),
        default=LOOPBACK.name,
        help="node and pod addresses on the host's loopback, or in the local cluster's network namespace "
        "(run this kubelet there)",
    )
    parser.add_argument(
        "--host-netns",
        type=Path,
        help="the host's network namespace (a /proc/PID/ns/net), where image pulls run when --network netns",
    )
    parser.add_argument(
        "--hollow",
        action="store_true",
        help="serve requester stubs and vLLM emulators inside this process instead of one process each",
    )
    parser.add_argument(
        "--hollow-listen",
        choices=["pod", "any"],
        default="pod",
        help="hollow servers listen per pod IP and port (pod), or on 0.0.0.0 per port (any)",
    )
    parser.add_argument(
        "--hollow-ledger",
        choices=["memory", "sqlite"],
        default="memory",
        help="GPU ledger of hollow emulators: in this process, or the cluster's sqlite file",
    )
    parser.add_argument(
        "--podman-images",
        action="append",
        default=[],
        metavar="PREFIX",
        help="run images whose reference starts with PREFIX as real containers under podman (repeatable)",
    )
    parser.add_argument("-v", "--verbosity", type=int, default=2, help="log verbosity (klog-style)")
    sub = parser.add_subparsers(dest="kubelet_command", metavar="ctl")
    ctl_parser = sub.add_parser("ctl", help="change a node of a running simulated kubelet")
    ctl_parser.add_argument("--state-dir", type=Path, required=True, help="the running kubelet's --state-dir")
    what = ctl_parser.add_subparsers(dest="ctl_object", required=True, metavar="{node,nodes}")
    what.add_parser("nodes", help="list the nodes and their states")
    node = what.add_parser("node", help="make a node NotReady, Ready, removed or added")
    node.add_argument("name")
    action = node.add_mutually_exclusive_group(required=True)
    for flag in ctl.ACTIONS:
        action.add_argument(f"--{flag}", dest="action", action="store_const", const=flag)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "kubelet_command", None) == "ctl":
        return _ctl(args)
    missing = [
        f"--{n.replace('_', '-')}"
        for n in ("kubeconfig", "state_dir", "nodes", "gpus")
        if getattr(args, n) is None
    ]
    if missing:
        print(f"dpctl sim-kubelet: missing {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    if (args.ca_cert is None) != (args.ca_key is None):
        print("dpctl sim-kubelet: --ca-cert and --ca-key go together", file=sys.stderr)
        return EXIT_USAGE
    log.setup(args.verbosity)
    # Imported here so that `ctl` does not pay for the whole kubelet.
    from dpsim.kubelet.kubelet import KubeletConfig, KubeletError

    cfg = KubeletConfig(
        kubeconfig=args.kubeconfig.resolve(),
        state_dir=args.state_dir.resolve(),
        nodes=args.nodes,
        gpus=args.gpus,
        gpu_product=args.gpu_product,
        node_prefix=args.node_prefix,
        ca_cert=args.ca_cert.resolve() if args.ca_cert else None,
        ca_key=args.ca_key.resolve() if args.ca_key else None,
        kubelet_port=args.kubelet_port,
        backoff_base=args.backoff_base,
        backoff_cap=args.backoff_cap,
        max_grace=args.max_grace,
        status_interval=args.status_interval,
        workers=args.workers,
        address_plan=PLANS[args.network],
        address_block=args.address_block,
        host_netns=args.host_netns,
        hollow=args.hollow,
        hollow_listen=args.hollow_listen,
        hollow_ledger=args.hollow_ledger,
        podman_images=tuple(args.podman_images),
    )
    try:
        asyncio.run(_serve(cfg))
    except (KubeletError, OSError) as e:
        print(f"dpctl sim-kubelet: {e}", file=sys.stderr)
        return EXIT_FAILED
    return 0


async def _serve(cfg: KubeletConfig) -> None:
    from dpsim.kubelet.kubelet import SimKubelet

    """Serve until SIGTERM or SIGINT, then stop every container before returning."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    _watch_children_with_pidfds(loop)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await SimKubelet.serve(cfg)


def _watch_children_with_pidfds(loop: asyncio.AbstractEventLoop) -> None:
    """Python 3.11 waits for every child in a thread of its own; a pidfd per child on the event
    loop does the same without a thread per container (3.12 does this by default)."""
    if sys.version_info < (3, 12) and hasattr(asyncio, "PidfdChildWatcher"):
        watcher = asyncio.PidfdChildWatcher()
        watcher.attach_loop(loop)
        asyncio.set_child_watcher(watcher)


def _ctl(args: argparse.Namespace) -> int:
    try:
        if args.ctl_object == "nodes":
            status, body = ctl.call(args.state_dir, "GET", "/nodes")
        else:
            status, body = ctl.call(args.state_dir, "POST", f"/nodes/{args.name}/{args.action}")
    except RuntimeError as e:
        print(f"dpctl sim-kubelet ctl: {e}", file=sys.stderr)
        return EXIT_FAILED
    if status != 200:
        print(
            f"dpctl sim-kubelet ctl: {body.get('error', body) if isinstance(body, dict) else body}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(json.dumps(body, indent=2))
    return 0
