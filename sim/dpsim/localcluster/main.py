"""`dpctl local-cluster up|down|status|env`: the local cluster as a background service.

Owns the supervisor: ``up`` starts ``local-cluster serve`` detached (its own session, its own log),
which owns every component as a child and tears them all down on SIGTERM, SIGINT or SIGHUP. ``up``
waits until the supervisor reports Ready and prints exactly one line on stdout,
``export KUBECONFIG=<path>`` (progress goes to stderr), so ``eval "$(dpctl local-cluster up)"``
works. ``down`` stops the supervisor, then kills anything still recorded in ``<state_dir>/pids``.

The supervisor reports its state in ``<state_dir>/supervisor.json``:
``starting`` → ``ready`` (or ``failed``), ``degraded`` when a component died later.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from dpsim.localcluster import kubehttp
from dpsim.localcluster.bins import ENV_BINS, BinsError, resolve_bins
from dpsim.localcluster.cluster import (
    DEFAULT_GPU_PRODUCT,
    LocalCluster,
    kubelet_available,
    python_env,
    ready_gpu_nodes,
)
from dpsim.localcluster.controlplane import Layout
from dpsim.localcluster.pki import write_file
from dpsim.localcluster.procs import (
    WaitTimeout,
    forget_pid,
    poll_until,
    read_pid,
    read_pids,
    record_pid,
    stop_records,
)

SUPERVISOR = "supervisor"
STATUS_FILE = "supervisor.json"
ENV_STATE_DIR = "DPCTL_CLUSTER_DIR"
# Above the supervisor's own worst case: kubelet (45 s) plus three control-plane steps of 15 s.
SUPERVISOR_STOP_TIMEOUT = 120.0
EXIT_NOT_RUNNING = 3  # as LSB init scripts' `status`: "program is not running"


def default_state_dir() -> Path:
    if os.environ.get(ENV_STATE_DIR):
        return Path(os.environ[ENV_STATE_DIR])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "dpctl" / "clusters" / "default"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--state-dir",
            type=Path,
            default=None,
            help=f"the cluster's files (default: ${ENV_STATE_DIR}, else ~/.cache/dpctl/clusters/default)",
        )

    def shape(p: argparse.ArgumentParser) -> None:
        p.add_argument("--nodes", type=int, default=2, help="simulated GPU nodes; 0 = control plane only")
        p.add_argument("--gpus", type=int, default=4, help="GPUs per node")
        p.add_argument("--gpu-product", default=DEFAULT_GPU_PRODUCT, help="nvidia.com/gpu.product label")
        p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for Ready")

    up = sub.add_parser("up", help="start the cluster in the background (building binaries if needed)")
    common(up)
    shape(up)
    common(sub.add_parser("down", help="stop the cluster and everything it started"))
    common(sub.add_parser("status", help="show what runs (exit 0 when Ready, 3 when not running)"))
    common(sub.add_parser("env", help="print the shell lines that point kubectl and helm at the cluster"))
    serve = sub.add_parser("serve", help="(internal) the supervisor process that `up` starts")
    common(serve)
    shape(serve)


def run(args: argparse.Namespace) -> int:
    state_dir = (args.state_dir or default_state_dir()).expanduser().resolve()
    actions = {"up": _up, "down": _down, "status": _status, "env": _env, "serve": _serve}
    return actions[args.action](args, state_dir)


def _say(msg: str) -> None:
    print(f"local-cluster: {msg}", file=sys.stderr, flush=True)


def _export_line(state_dir: Path) -> str:
    return f"export KUBECONFIG={shlex.quote(str(Layout(state_dir).kubeconfig))}"


def _read_status(state_dir: Path) -> dict[str, Any]:
    try:
        doc = json.loads((state_dir / STATUS_FILE).read_text())
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_status(state_dir: Path, **fields: Any) -> None:
    doc = {"pid": os.getpid(), "updated": time.time(), **fields}
    write_file(state_dir / STATUS_FILE, (json.dumps(doc, indent=2) + "\n").encode())


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """Serialises the check-then-start of concurrent `up`s on one state dir."""
    with open(state_dir / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _supervisor_alive(state_dir: Path) -> bool:
    rec = read_pid(Layout(state_dir).pids, SUPERVISOR)
    return rec is not None and rec.alive()


# --- up -------------------------------------------------------------------------------------------


def _up(args: argparse.Namespace, state_dir: Path) -> int:
    state_dir.mkdir(parents=True, exist_ok=True)
    layout = Layout(state_dir)
    with _locked(state_dir):
        if _supervisor_alive(state_dir):
            st = _read_status(state_dir)
            if st.get("state") in ("ready", "degraded"):
                _say(f"already up ({state_dir}): {st.get('nodes')} nodes x {st.get('gpus')} GPUs")
                if (st.get("nodes"), st.get("gpus")) != (args.nodes, args.gpus):
                    _say(f"not the {args.nodes} x {args.gpus} asked for; `down` first to change it")
                print(_export_line(state_dir), flush=True)
                return 0
            _say("a supervisor is already starting the cluster; waiting for it")
        else:
            if args.nodes > 0 and not kubelet_available():
                _say(
                    "the simulated kubelet is not in this checkout; use --nodes 0 for the control plane alone"
                )
                return 1
            _cleanup(state_dir, quiet=True)  # what a crashed supervisor may have left behind
            try:
                bins = resolve_bins(build=True)
            except BinsError as e:
                _say(str(e))
                return 1
            _spawn_supervisor(args, state_dir, bins.env_value())
    try:
        err = _wait_ready(state_dir, args.timeout)
    except KeyboardInterrupt:
        _say("interrupted; stopping what was started")
        _cleanup(state_dir, quiet=True)
        return 130
    if err:
        _say(err)
        if "start failed" not in err:  # else the error already carries the failing log's end
            _say(f"last lines of {layout.log(SUPERVISOR)}:\n{_tail(layout.log(SUPERVISOR))}")
        _say(f"all logs: {layout.logs}")
        _cleanup(state_dir, quiet=True)
        return 1
    st = _read_status(state_dir)
    _say(f"Ready after {st.get('ready_seconds', 0):.1f}s; shell setup in {state_dir / 'env.sh'}")
    print(_export_line(state_dir), flush=True)
    return 0


def _spawn_supervisor(args: argparse.Namespace, state_dir: Path, bins_env: str) -> None:
    layout = Layout(state_dir)
    layout.logs.mkdir(parents=True, exist_ok=True)
    (state_dir / STATUS_FILE).unlink(missing_ok=True)
    argv = [sys.executable, "-m", "dpctl", "local-cluster", "serve", "--state-dir", str(state_dir)]
    argv += ["--nodes", str(args.nodes), "--gpus", str(args.gpus), "--gpu-product", args.gpu_product]
    argv += ["--timeout", str(args.timeout)]
    env = python_env()
    env[ENV_BINS] = bins_env
    with open(layout.log(SUPERVISOR), "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Detached on purpose: it must outlive `up` and ignore the terminal's Ctrl-C and hangup.
            start_new_session=True,
            cwd=state_dir,
            env=env,
        )
    record_pid(layout.pids, SUPERVISOR, proc.pid)
    _say(f"supervisor pid {proc.pid}, log {layout.log(SUPERVISOR)}")
    # `up` exits long before the supervisor: mark it handled so Popen.__del__ does not warn.
    proc.returncode = 0


def _wait_ready(state_dir: Path, timeout: float) -> str | None:
    """None once the supervisor says ready, else why not."""

    def check() -> str | None:
        st = _read_status(state_dir)
        if st.get("state") in ("ready", "degraded"):
            return ""
        if st.get("state") == "failed":
            return f"start failed: {st.get('error', '?')}"
        if not _supervisor_alive(state_dir):
            return "the supervisor exited before the cluster was Ready"
        return None

    try:
        result = poll_until(check, timeout, "the local cluster to be Ready", max_interval=0.5)
    except WaitTimeout as e:
        return str(e)
    return result or None


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- down -----------------------------------------------------------------------------------------


def _cleanup(state_dir: Path, *, quiet: bool) -> list[str]:
    """Stop the supervisor, then anything still recorded; remove the records. Returns what ran."""
    pids = Layout(state_dir).pids
    stopped: list[str] = []
    sup = read_pid(pids, SUPERVISOR)
    if sup is not None:
        stopped += stop_records([sup], SUPERVISOR_STOP_TIMEOUT)
        forget_pid(pids, SUPERVISOR)
    # Left over only if the supervisor was SIGKILLed before PDEATHSIG could act, or pids were reused.
    stopped += stop_records(read_pids(pids), 15.0)
    for rec in read_pids(pids):
        forget_pid(pids, rec.name)
    (state_dir / STATUS_FILE).unlink(missing_ok=True)
    if not quiet and stopped:
        _say(f"stopped {', '.join(stopped)}")
    return stopped


def _down(args: argparse.Namespace, state_dir: Path) -> int:
    if not state_dir.exists():
        _say(f"nothing runs ({state_dir} does not exist)")
        return 0
    if not _cleanup(state_dir, quiet=False):
        _say("nothing was running")
    return 0


# --- status / env ---------------------------------------------------------------------------------


def _status(args: argparse.Namespace, state_dir: Path) -> int:
    layout = Layout(state_dir)
    st = _read_status(state_dir)
    sup = read_pid(layout.pids, SUPERVISOR)
    running = sup is not None and sup.alive()
    print(f"state dir:   {state_dir}")
    if sup is None or not running:
        print("supervisor:  not running")
    else:
        print(f"supervisor:  pid {sup.pid}, state {st.get('state', 'unknown')}")
        if st.get("error"):
            print(f"             {st['error']}")
    for rec in read_pids(layout.pids):
        if rec.name != SUPERVISOR:
            print(f"  {rec.name:<24} pid {rec.pid:<8} {'running' if rec.alive() else 'GONE'}")
    if running and st.get("state") in ("ready", "degraded"):
        print(f"kubeconfig:  {layout.kubeconfig}")
        print(f"server:      {st.get('server')}")
        try:
            admin = kubehttp.KubeHTTP.from_kubeconfig(layout.kubeconfig)
            readyz = admin.request("GET", "/readyz", timeout=5.0)
            print(f"readyz:      HTTP {readyz.status}")
            if st.get("nodes"):
                nodes = ready_gpu_nodes(admin.get("/api/v1/nodes", timeout=5.0), int(st.get("gpus", 0)))
                print(f"nodes:       {len(nodes)} of {st['nodes']} Ready with {st.get('gpus')} GPUs: {nodes}")
            else:
                print("nodes:       none (control plane only)")
        except (OSError, kubehttp.HTTPError, ValueError, KeyError) as e:
            print(f"API:         unreachable ({e})")
        return 0 if st.get("state") == "ready" else 1
    return EXIT_NOT_RUNNING if not running else 1


def _env(args: argparse.Namespace, state_dir: Path) -> int:
    env_file = state_dir / "env.sh"
    if not _supervisor_alive(state_dir) or not env_file.exists():
        _say(f"not up ({state_dir}); run `dpctl local-cluster up`")
        return 1
    sys.stdout.write(env_file.read_text())
    return 0


# --- serve (the supervisor) -----------------------------------------------------------------------


class _Stop(BaseException):
    """Raised in the main thread by a termination signal; BaseException so no `except Exception`
    on the way swallows it before the teardown runs."""


def _serve(args: argparse.Namespace, state_dir: Path) -> int:
    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise _Stop(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    # Stamp the log: it is appended to across runs.
    print(f"--- supervisor pid {os.getpid()} starting at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}", flush=True)
    _write_status(state_dir, state="starting")
    cluster: LocalCluster | None = None
    try:
        bins = resolve_bins(build=False)
        cluster = LocalCluster(
            state_dir, bins, nodes=args.nodes, gpus=args.gpus, gpu_product=args.gpu_product
        )
        cluster.start(args.timeout)
        cp = cluster.control_plane
        ready: dict[str, Any] = {
            "state": "ready",
            "server": cp.server,
            "kubeconfig": str(cp.kubeconfig),
            "nodes": args.nodes,
            "gpus": args.gpus,
            "ready_seconds": cluster.ready_seconds,
            "control_plane_ready_seconds": cp.ready_seconds,
            "pids": cluster.pids(),
        }
        _write_status(state_dir, **ready)
        print(f"ready in {cluster.ready_seconds:.1f}s: {cp.server}; {cluster.network_note}", flush=True)
        _supervise(cluster, state_dir, ready)
    except _Stop as e:
        print(f"received {e}; stopping", flush=True)
    except Exception as e:
        print(f"failed: {type(e).__name__}: {e}", flush=True)
        _write_status(state_dir, state="failed", error=f"{type(e).__name__}: {e}")
        return 1
    finally:
        # A second signal must not interrupt the teardown half-way.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        if cluster is not None:
            cluster.stop()
        forget_pid(Layout(state_dir).pids, SUPERVISOR)
        print("stopped", flush=True)
    (state_dir / STATUS_FILE).unlink(missing_ok=True)
    return 0


def _supervise(cluster: LocalCluster, state_dir: Path, ready: dict[str, Any]) -> None:
    """Until a signal: notice components that die and say so in the status (no restarts: a dead
    component is a bug to look at, and `down`/`up` is the cure)."""
    reported: set[str] = set()
    idle = threading.Event()  # never set: waiting on it is an interruptible, signal-friendly pause
    while True:
        dead = [c for c in cluster.dead() if c.name not in reported]
        for c in dead:
            print(c.exit_message(), flush=True)
            reported.add(c.name)
        if dead:
            _write_status(state_dir, **{**ready, "state": "degraded", "error": f"exited: {sorted(reported)}"})
        idle.wait(2.0)
