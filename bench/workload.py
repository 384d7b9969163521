"""What the benchmark creates: the recipe's ReplicaSets per node and model, the gpu-map, fillers.

Requesters come in *sets*: one ReplicaSet per node and model (``n<k>-a``, ``n<k>-b``), pinned to
its node with the recipe's ``nodeSelector``, in the recipe's shape (``test/e2e/recipe.py``'s
``mkrs`` and ``ServerPatch``). Model ``a`` and ``b`` differ only in a served model name, so their
runners have different nominal hashes: a requester of ``a`` landing on a GPU where an ``a`` runner
sleeps is woken (hot), anything else is a new runner (cold). Both kinds carry ``bench=dual`` so
one watch sees requesters and runners; the server-patch removes each set's own selector label
from the runner, as the recipe's removes ``app``, so no ReplicaSet ever adopts a runner.

Fillers are plain Pods that never run (a scheduling gate holds them), for the restart scenario:
as big as a typical Pod, so listing them costs what listing real Pods costs.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from dpctl import api
from dpsim.emulator.gputable import load_gpu_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
from e2e.recipe import ServerPatch, mkrs  # the recipe's objects live with the tests

BENCH_LABEL: Final = "bench"
BENCH_VALUE: Final = "dual"
SET_LABEL: Final = "bench-set"
MODELS: Final = ("a", "b")


@dataclass(frozen=True)
class Timing:
    """The emulator's delays and the probe periods (seconds)."""

    load_s: float
    wake_s: float
    sleep_s: float
    probe_period_s: int = 1
    # The kubelet's default is 1 s. One process plays every node's kubelet here, so under a burst a
    # probe can wait its turn for longer than that: a failure of the harness, not of the server.
    probe_timeout_s: int = 5


def set_name(node: int, model: str) -> str:
    return f"n{node}-{model}"


def server_patch(model: str, timing: Timing, set_label: str) -> str:
    """The recipe's server-patch, with the emulator's delays and a per-model served name."""
    patch: dict[str, Any] = yaml.safe_load(
        ServerPatch(
            startup_delay_s=timing.load_s,
            readiness_initial_delay_s=0,
            readiness_period_s=timing.probe_period_s,
            extra_env={
                "VLLM_EMULATOR_WAKE_DELAY": str(timing.wake_s),
                "VLLM_EMULATOR_SLEEP_DELAY": str(timing.sleep_s),
            },
        ).text()
    )
    patch["metadata"]["labels"][set_label] = None
    container = patch["spec"]["containers"][0]
    container["command"].append(f"--served-model-name=granite-{model}")
    container["readinessProbe"]["timeoutSeconds"] = timing.probe_timeout_s
    return yaml.safe_dump(patch, sort_keys=False)


def replica_set(node: int, model: str, replicas: int, timing: Timing) -> dict[str, Any]:
    name = set_name(node, model)
    rs = mkrs(
        name,
        server_patch(model, timing, SET_LABEL),
        replicas=replicas,
        node_selector={api.HOSTNAME_LABEL: f"node-{node}"},
        probe_period_s=timing.probe_period_s,
    )
    labels = {BENCH_LABEL: BENCH_VALUE, SET_LABEL: name}
    rs["spec"]["selector"]["matchLabels"].update({SET_LABEL: name})
    rs["spec"]["template"]["metadata"]["labels"].update(labels)
    # Deleting a requester should be prompt: the stub exits at once on SIGTERM anyway.
    rs["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 5
    for container in rs["spec"]["template"]["spec"]["containers"]:
        container["readinessProbe"]["timeoutSeconds"] = timing.probe_timeout_s
    return rs


def gpu_map(state_dir: Path, nodes: int) -> dict[str, Any]:
    data = {}
    for k in range(1, nodes + 1):
        table = load_gpu_table(state_dir, f"node-{k}")
        data[f"node-{k}"] = json.dumps({g.uuid: g.index for g in table.gpus})
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": api.GPU_MAP_NAME}, "data": data}


def filler_pod(i: int) -> dict[str, Any]:
    """A Pod the scheduler leaves alone (a scheduling gate), about the size of a real one."""
    name = f"filler-{i:05d}"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app": "filler", "tier": "batch", "instance": name},
            "annotations": {"example.com/owner": "bench", "example.com/description": "placeholder " * 8},
        },
        "spec": {
            "schedulingGates": [{"name": "bench.dpctl/never"}],
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "main",
                    "image": "docker.io/library/busybox:1.36",
                    "command": ["sleep", "infinity"],
                    "env": [{"name": f"VAR_{j}", "value": f"value-{j}-{i}"} for j in range(8)],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 10},
                }
            ],
        },
    }


# -- the launcher path ----------------------------------------------------------------------------
#
# One LauncherConfig and one InferenceServerConfig per model, each model on its own port (a second
# ISC on another port finds room in a launcher whose instance of the first sleeps: a warm
# actuation). The launcher image is any whose repository ends in ``/launcher``: the simulated
# kubelet runs ``dpctl launcher`` for it, whose instances are vLLM emulators. Requesters come in
# sets ``l<k>-<model>``, one per node and model, as the direct path's do.

LAUNCHER_IMAGE: Final = "registry.local/dpctl/launcher:bench"
LAUNCHER_CONFIG_NAME: Final = "lc-bench"
ISC_PORTS: Final = {"a": 8005, "b": 8006}


def isc_name(model: str) -> str:
    return f"isc-{model}"


def launcher_set_name(node: int, model: str) -> str:
    return f"l{node}-{model}"


def launcher_config(max_instances: int) -> dict[str, Any]:
    """The LauncherConfig: a bare launcher container; the builder adds the rest (contract §2.4)."""
    return {
        "apiVersion": "fma.llm-d.ai/v1alpha1",
        "kind": "LauncherConfig",
        "metadata": {"name": LAUNCHER_CONFIG_NAME},
        "spec": {
            "maxInstances": max_instances,
            "podTemplate": {
                "metadata": {"labels": {BENCH_LABEL: BENCH_VALUE}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "inference-server",
                            "image": LAUNCHER_IMAGE,
                            "command": ["uvicorn", "launcher:app", "--host", "0.0.0.0", "--port", "8001"],
                            "ports": [{"name": "launcher", "containerPort": 8001}],
                        }
                    ],
                },
            },
        },
    }


def inference_server_config(model: str, timing: Timing) -> dict[str, Any]:
    """An ISC whose instances are the emulator with the direct path's delays and served name."""
    options = (
        "--model=ibm-granite/granite-3.3-2b-instruct --enable-sleep-mode --max-model-len=32768"
        f" --gpu-memory-utilization=0.4 --served-model-name=granite-{model}"
    )
    return {
        "apiVersion": "fma.llm-d.ai/v1alpha1",
        "kind": "InferenceServerConfig",
        "metadata": {"name": isc_name(model)},
        "spec": {
            "launcherConfigName": LAUNCHER_CONFIG_NAME,
            "modelServerConfig": {
                "port": ISC_PORTS[model],
                "options": options,
                "env_vars": {
                    "VLLM_SERVER_DEV_MODE": "1",
                    "VLLM_EMULATOR_STARTUP_DELAY": str(timing.load_s),
                    "VLLM_EMULATOR_WAKE_DELAY": str(timing.wake_s),
                    "VLLM_EMULATOR_SLEEP_DELAY": str(timing.sleep_s),
                },
                "labels": {"bench-model": model},
            },
        },
    }


def isc_replica_set(node: int, model: str, replicas: int, timing: Timing) -> dict[str, Any]:
    """A set of launcher-path requesters (the ISC annotation instead of a server-patch)."""
    name = launcher_set_name(node, model)
    rs = mkrs(
        name,
        None,
        replicas=replicas,
        node_selector={api.HOSTNAME_LABEL: f"node-{node}"},
        probe_period_s=timing.probe_period_s,
    )
    labels = {BENCH_LABEL: BENCH_VALUE, SET_LABEL: name}
    rs["spec"]["selector"]["matchLabels"].update({SET_LABEL: name})
    template = rs["spec"]["template"]
    template["metadata"]["labels"].update(labels)
    template["metadata"]["annotations"][api.INFERENCE_SERVER_CONFIG_ANNOTATION] = isc_name(model)
    template["spec"]["terminationGracePeriodSeconds"] = 5
    for container in template["spec"]["containers"]:
        container["readinessProbe"]["timeoutSeconds"] = timing.probe_timeout_s
    return rs
