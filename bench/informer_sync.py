"""Micro benchmark: CPU time for an informer to list and sync a namespace of 10,000 Pods.

Runs the real path — ``Kube.list_all`` over HTTP (pages of 500), JSON decoding, the store with
four indexes, a handler that enqueues every Pod into a ``RateLimitingQueue`` — against a
loopback server in a separate process, so the number is the controller's CPU only. Pods are
realistic in size (managedFields, env, probes, status): about 3 KiB of JSON each.

    .venv/bin/python -m bench.informer_sync [--pods 10000]

Prints one JSON line: pods, bytes listed, CPU and wall seconds for the first sync and for a
relist with nothing changed. The target is well under 5 s of CPU on a slow 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
from aiohttp import web

from dpctl.informer import Informer, kube_lister
from dpctl.kube import PODS, Kube
from dpctl.workqueue import RateLimitingQueue

NAMESPACE = "bench"


def make_pod(i: int) -> dict[str, Any]:
    name = f"requester-{i:05d}"
    node = f"node-{i % 50}"
    return {
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": f"00000000-0000-4000-8000-{i:012d}",
            "resourceVersion": str(1000 + i),
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"app": "vllm", "pod-template-hash": "abcdef1234", "instance": name},
            "annotations": {
                "dual-pod.llm-d.ai/admin-port": "8081",
                "dual-pod.llm-d.ai/server-patch": "spec:\n  containers:\n  - name: inference-server\n" * 4,
                "dual-pods.llm-d.ai/accelerators": f"GPU-{i:08d}-aaaa-bbbb-cccc-dddddddddddd",
            },
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "vllm-abcdef1234", "uid": "x" * 36}
            ],
            "managedFields": [
                {
                    "manager": m,
                    "operation": "Update",
                    "apiVersion": "v1",
                    "time": "2026-01-01T00:00:00Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}, "f:instance": {}}}, "f:spec": {}},
                }
                for m in ("kube-controller-manager", "kubelet", "dual-pods-controller")
            ],
        },
        "spec": {
            "nodeName": node,
            "containers": [
                {
                    "name": "requester",
                    "image": "registry.local/dpctl/requester:dev",
                    "ports": [{"containerPort": 8080}, {"containerPort": 8081}],
                    "env": [{"name": f"VAR_{k}", "value": f"value-{k}"} for k in range(10)],
                    "resources": {"limits": {"nvidia.com/gpu": "1", "cpu": "1", "memory": "1Gi"}},
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 2},
                }
            ],
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
        "status": {
            "phase": "Running",
            "podIP": f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}",
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
                for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],
            "containerStatuses": [
                {
                    "name": "requester",
                    "ready": True,
                    "restartCount": 0,
                    "image": "registry.local/dpctl/requester:dev",
                    "imageID": "sha256:" + "0" * 64,
                    "containerID": "containerd://" + "1" * 64,
                    "state": {"running": {"startedAt": "2026-01-01T00:00:01Z"}},
                }
            ],
        },
    }


def serve(pods: int, port_out: Any) -> None:
    """The loopback API server: one paged list of Pods (run in its own process)."""
    items = [make_pod(i) for i in range(pods)]

    async def list_pods(request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", str(pods)))
        start = int(request.query.get("continue") or 0)
        end = min(start + limit, pods)
        meta: dict[str, Any] = {"resourceVersion": str(1000 + pods)}
        if end < pods:
            meta["continue"] = str(end)
        body = {"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": items[start:end]}
        return web.Response(body=json.dumps(body).encode(), content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_get(PODS.path(NAMESPACE), list_pods)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_out.send(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


def _pod_node(obj: dict[str, Any]) -> list[str]:
    node = (obj.get("spec") or {}).get("nodeName")
    return [node] if node else []


INDEXERS = {
    "uid": lambda obj: [obj["metadata"]["uid"]],
    "node": _pod_node,
    "accelerators": lambda obj: (
        obj["metadata"].get("annotations", {}).get("dual-pods.llm-d.ai/accelerators", "").split(",")
    ),
    "app": lambda obj: [obj["metadata"].get("labels", {}).get("app", "")],
}


async def connect(port: int) -> Kube:
    """A client of the loopback server, connected as the controller connects (Kube.connect)."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "bench", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "bench", "user": {}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}],
        "current-context": "bench",
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kubeconfig"
        path.write_text(json.dumps(doc))  # JSON is YAML
        return await Kube.connect(str(path))


async def measure(port: int) -> dict[str, float]:
    kube = await connect(port)
    queue: RateLimitingQueue[str] = RateLimitingQueue("bench")
    informer = Informer("pods", kube_lister(kube, PODS, NAMESPACE), indexers=INDEXERS)
    informer.add_handlers(on_add=lambda obj: queue.add(obj["metadata"]["uid"]))

    cpu, wall = time.process_time(), time.monotonic()
    items, rv = await kube.list_all(PODS, NAMESPACE)
    list_cpu = time.process_time() - cpu
    del items, rv

    cpu, wall = time.process_time(), time.monotonic()
    task = asyncio.create_task(informer.run())
    await informer.wait_synced()
    sync_cpu, sync_wall = time.process_time() - cpu, time.monotonic() - wall
    task.cancel()

    lister = kube_lister(kube, PODS, NAMESPACE)
    items, _ = await lister.list()
    cpu = time.process_time()
    changes = informer.store.replace(items)
    replace_cpu = time.process_time() - cpu
    assert not (changes.added or changes.updated or changes.deleted)
    await kube.close()
    return {
        "pods": len(informer.store),
        "queued": len(queue),
        "list_only_cpu_s": round(list_cpu, 3),
        "sync_cpu_s": round(sync_cpu, 3),
        "sync_wall_s": round(sync_wall, 3),
        "relist_unchanged_replace_cpu_s": round(replace_cpu, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=10_000)
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    server = ctx.Process(target=serve, args=(args.pods, send), daemon=True)
    server.start()
    try:
        port = receive.recv()
        result = uvloop.run(measure(port))
    finally:
        server.terminate()
        server.join()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
