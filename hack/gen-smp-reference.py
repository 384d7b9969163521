#!/usr/bin/env python3
"""Generate test/unit/podbuild/smp_reference.json: strategic merge patches answered by a real API server.

Usage (from the repository root, with a cluster running and its kubectl on PATH, e.g. after
`dpctl local-cluster up --state-dir DIR` and `. DIR/env.sh`):

    .venv/bin/python hack/gen-smp-reference.py [--kubeconfig PATH] [--count 240] [--seed 1729]

The committed file was made with the defaults against the local cluster's kube-apiserver (its
version is recorded in the file); the same seed and server version give the same file byte for
byte. It takes about 40 seconds.

Each case is a random (original, patch) pair of core/v1 Pod templates made with Python's
`random` seeded by --seed. For each pair the script, in a scratch namespace it deletes at the end:

1. creates a PodTemplate ``{template: original}``; the server defaults it, and the answer's
   template is recorded as ``server_original`` (what the server stores and then patches);
2. PATCHes it with ``{template: patch}`` as ``application/strategic-merge-patch+json`` with
   ``?dryRun=All&fieldValidation=Ignore`` and records the answer's template as
   ``server_result``, or a refusal as ``server_error`` (HTTP code and message; code 0 when the
   server dropped the connection, which is how a panic in its patch code looks);
3. applies the same patch to ``server_original`` with ``kubectl patch --local``, which runs the
   same Go strategicpatch code without decoding or defaulting, and keeps the case only if both
   refuse it, or both merge it and the server's result equals kubectl's after `as_stored`
   (below). That discards the cases where the server's
   defaulting changed the merged object (e.g. a patch dropped a defaulted field and the server
   set it again), and those where the server's validation refused a merged object (they say
   nothing about the merge). So for every recorded case the server's answer *is* the merge of
   ``server_original`` and ``patch``, and an offline test can compare exactly:
   ``as_stored(smp(server_original, patch)) == server_result``, or SMP refuses the patch.

``as_stored`` is what the server's typed encoding does to a merged object beyond decoding
(which drops nulls and ``$`` directive keys, as dpctl's SMP does too): empty lists and empty
string maps (labels, resource lists, ...) are omitted. The unit test keeps its own copy.

The generator aims at what dpctl's server-patch annotations do: container, initContainer, env,
port, volumeMount and volume merges; ``$patch: delete|replace`` in maps and lists;
``$retainKeys``; ``$setElementOrder``; ``$deleteFromPrimitiveList``; nulls; atomic lists; and a
share of malformed patches, which the server must refuse. Patches that add to a primitive list
and delete from it in one map without ``$setElementOrder`` are never generated: the server
applies those in Go's random map order, so they have no single answer.
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dpsim.localcluster.kubehttp import KubeHTTP, request  # noqa: E402

OUT = REPO / "test/unit/podbuild/smp_reference.json"
SMP = "application/strategic-merge-patch+json"

IMAGES = ["busybox:1.36", "nginx:1.27", "registry.k8s.io/pause:3.10", "quay.io/example/app:v2"]
CONTAINERS = ["main", "sidecar", "proxy"]
INIT_CONTAINERS = ["init-a", "init-b", "init-c"]
ENV_NAMES = ["A", "B", "C", "D", "E"]
PORTS = [80, 443, 8080, 9090]
MOUNTED = {"data": ["/data", "/srv/data"], "cache": ["/cache", "/var/cache"]}  # never deleted
OTHER_VOLUMES = ["config", "scratch", "extra"]
LABEL_KEYS = ["app", "tier", "team", "example.com/zone"]
FINALIZERS = ["example.com/a", "example.com/b", "example.com/c", "example.com/d"]
WORDS = ["sh", "-c", "sleep 3600", "--port=8000", "--model=m", "serve", "-v"]
MAP_FIELDS = frozenset({"labels", "annotations", "nodeSelector", "limits", "requests", "matchLabels"})

Json = Any


def as_stored(value: Json) -> Json:
    """A decoded object as the server encodes it: no nulls, ``$`` keys, empty lists or empty string maps."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if item is None or key.startswith("$"):
                continue
            stored = as_stored(item)
            if stored == [] or (stored == {} and key in MAP_FIELDS):
                continue
            out[key] = stored
        return out
    if isinstance(value, list):
        return [as_stored(item) for item in value]
    return value


class Gen:
    """Random Pod templates and patches for them; every choice comes from one seeded `random.Random`."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    # --- helpers -----------------------------------------------------------------------------

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def pick(self, items: list[Any]) -> Any:
        return self.rng.choice(items)

    def some(self, items: list[Any], low: int = 0, high: int | None = None) -> list[Any]:
        """A random subset of ``items`` in random order."""
        high = len(items) if high is None else min(high, len(items))
        return self.rng.sample(items, self.rng.randint(min(low, high), high))

    def shuffled(self, items: list[Any]) -> list[Any]:
        return self.rng.sample(items, len(items))

    # --- originals ---------------------------------------------------------------------------

    def env_item(self, name: str) -> dict[str, Any]:
        if self.chance(0.75):
            return {"name": name, "value": self.pick(["1", "2", "on", "/opt"])}
        path = self.pick(["metadata.name", "metadata.namespace", "spec.nodeName"])
        return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}

    def port(self, number: int, protocol: str = "TCP", *, complete: bool = True) -> dict[str, Any]:
        port: dict[str, Any] = {"containerPort": number}
        if complete or self.chance(0.5):
            port["protocol"] = protocol
        if self.chance(0.6):
            port["name"] = f"p{number}-{protocol.lower()}"
        return port

    def probe(self) -> dict[str, Any]:
        handler = (
            {"httpGet": {"path": self.pick(["/health", "/ready"]), "port": 8080, "scheme": "HTTP"}}
            if self.chance(0.7)
            else {"tcpSocket": {"port": 8080}}
        )
        timing = {"timeoutSeconds": 1, "periodSeconds": self.pick([5, 10]), "successThreshold": 1}
        return {**handler, **timing, "failureThreshold": 3}

    def resources(self) -> dict[str, Any]:
        resources: dict[str, Any] = {}
        if self.chance(0.7):
            resources["limits"] = {"cpu": self.pick(["2", "4"]), "memory": self.pick(["1Gi", "2Gi"])}
        if self.chance(0.7):
            resources["requests"] = {"cpu": self.pick(["500m", "1"]), "memory": self.pick(["128Mi", "256Mi"])}
        return resources

    def mounts(self) -> list[dict[str, Any]]:
        paths = [(name, path) for name, paths in MOUNTED.items() for path in paths]
        return [
            {"name": name, "mountPath": path, **({"readOnly": True} if self.chance(0.3) else {})}
            for name, path in self.some(paths, 1, 3)
        ]

    def container(self, name: str, *, complete: bool) -> dict[str, Any]:
        """A container; ``complete`` ones carry every field the server would default."""
        image = self.pick(IMAGES)
        container: dict[str, Any] = {"name": name, "image": image}
        if complete:
            container.update(
                imagePullPolicy="IfNotPresent",
                terminationMessagePath="/dev/termination-log",
                terminationMessagePolicy="File",
                resources=self.resources() if self.chance(0.5) else {},
            )
        elif self.chance(0.5):
            container["resources"] = self.resources()
        if self.chance(0.5):
            container["command"] = self.some(WORDS, 1, 3)
        if self.chance(0.3):
            container["args"] = self.some(WORDS, 1, 3)
        if self.chance(0.7):
            container["env"] = [self.env_item(n) for n in self.some(ENV_NAMES, 1, 4)]
        if self.chance(0.6):
            numbers = self.some(PORTS, 1, 3)
            container["ports"] = [self.port(n, complete=complete) for n in numbers]
            if self.chance(0.25):  # one number, two protocols: SMP merges on containerPort alone
                container["ports"].append(self.port(numbers[0], "UDP"))
        if self.chance(0.5):
            container["volumeMounts"] = self.mounts()
        if name not in INIT_CONTAINERS and self.chance(0.4):  # init containers may not have probes
            container["readinessProbe"] = self.probe()
        if self.chance(0.2):
            container["securityContext"] = {"runAsUser": self.pick([1000, 1001])}
        if self.chance(0.2):
            container["workingDir"] = self.pick(["/work", "/srv"])
        return container

    def volume_source(self, name: str, *, complete: bool) -> dict[str, Any]:
        kind = self.pick(["emptyDir", "emptyDir", "configMap", "secret", "hostPath"])
        if kind == "emptyDir":
            source: dict[str, Any] = self.pick([{}, {"medium": "Memory"}, {"sizeLimit": "1Gi"}])
        elif kind == "configMap":
            source = {"name": f"cm-{name}", "defaultMode": 420}
        elif kind == "secret":
            source = {"secretName": f"s-{name}", "defaultMode": 420}
        else:
            source = {"path": f"/var/lib/{name}", "type": "DirectoryOrCreate"}
        if not complete and kind in ("configMap", "secret") and self.chance(0.5):
            del source["defaultMode"]
        return {kind: dict(source)}

    def volume(self, name: str, *, complete: bool) -> dict[str, Any]:
        return {"name": name, **self.volume_source(name, complete=complete)}

    def original(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "containers": [self.container(n, complete=False) for n in self.some(CONTAINERS, 1, 3)]
        }
        if self.chance(0.4):
            spec["initContainers"] = [
                self.container(n, complete=False) for n in self.some(INIT_CONTAINERS, 1, 2)
            ]
        names = [*MOUNTED, *self.some(OTHER_VOLUMES, 0, 2)]
        spec["volumes"] = [self.volume(n, complete=False) for n in self.shuffled(names)]
        if self.chance(0.4):
            spec["nodeSelector"] = {k: "1" for k in self.some(["disk", "zone", "gpu"], 1, 2)}
        if self.chance(0.4):
            spec["tolerations"] = [
                {"key": k, "operator": "Exists", "effect": "NoSchedule"}
                for k in self.some(["a", "b", "c"], 1, 2)
            ]
        if self.chance(0.3):
            spec["imagePullSecrets"] = [{"name": n} for n in self.some(["reg-a", "reg-b", "reg-c"], 1, 2)]
        if self.chance(0.3):
            spec["hostAliases"] = [
                {"ip": ip, "hostnames": self.some(["a.local", "b.local"], 1, 2)}
                for ip in self.some(["10.0.0.1", "10.0.0.2"], 1, 2)
            ]
        if self.chance(0.3):
            spec["topologySpreadConstraints"] = [
                self.spread(key) for key in self.some(["zone", "rack"], 1, 2)
            ]
        if self.chance(0.3):
            spec["activeDeadlineSeconds"] = self.pick([60, 600])
        if self.chance(0.3):
            spec["securityContext"] = {"runAsNonRoot": True}
        if self.chance(0.3):
            spec["terminationGracePeriodSeconds"] = self.pick([5, 60])
        metadata: dict[str, Any] = {"labels": {k: self.pick(["x", "y"]) for k in self.some(LABEL_KEYS, 1, 3)}}
        if self.chance(0.4):
            metadata["annotations"] = {k: self.pick(["1", "2"]) for k in self.some(["note", "owner"], 1, 2)}
        if self.chance(0.4):
            metadata["finalizers"] = self.some(FINALIZERS, 1, 3)
        return {"metadata": metadata, "spec": spec}

    def spread(self, key: str, when: str = "DoNotSchedule") -> dict[str, Any]:
        return {
            "maxSkew": self.pick([1, 2]),
            "topologyKey": key,
            "whenUnsatisfiable": when,
            "labelSelector": {"matchLabels": {"app": "x"}},
        }

    # --- patches -----------------------------------------------------------------------------

    def string_map(self, current: dict[str, str] | None, keys: list[str]) -> dict[str, Any] | None:
        """Set, change and null keys of a string map; sometimes replace or delete it whole."""
        roll = self.rng.random()
        if roll < 0.08:
            return None
        if roll < 0.16:
            return {"$patch": "delete"}
        patch: dict[str, Any] = {}
        for key in self.some(keys, 1, 3):
            patch[key] = None if key in (current or {}) and self.chance(0.35) else self.pick(["x", "z", "w"])
        if roll < 0.3:
            patch = {"$patch": "replace", **{k: v for k, v in patch.items() if v is not None}}
        return patch

    def keyed_order(
        self, items: list[dict[str, Any]], key: str, patch_items: list[dict[str, Any]]
    ) -> list[Any]:
        """A ``$setElementOrder`` list for the result, with the patch items sorted to match it."""
        deleted = {item[key] for item in patch_items if item.get("$patch") == "delete"}
        final = [item[key] for item in items if item[key] not in deleted]
        final += [item[key] for item in patch_items if "$patch" not in item and item[key] not in final]
        order = self.shuffled(list(dict.fromkeys(final)))
        if self.chance(0.25):  # only the patch's own items: the server slots in the rest
            mentioned = {item[key] for item in patch_items}
            order = [name for name in order if name in mentioned]
        position = {name: at for at, name in enumerate(order)}
        patch_items.sort(key=lambda item: position.get(item[key], -1))
        return [{key: name} for name in order]

    def keyed_list(
        self,
        patch: dict[str, Any],
        field: str,
        current: list[dict[str, Any]],
        key: str,
        pool: list[Any],
        update: Callable[[dict[str, Any]], dict[str, Any]],
        new: Callable[[Any], dict[str, Any]],
        *,
        deletable: Callable[[dict[str, Any]], bool] = lambda item: True,
    ) -> None:
        """Patch a list merged on ``key``: update, add, delete, reorder, or replace it."""
        existing = {item[key] for item in current}
        roll = self.rng.random()
        if roll < 0.06:
            patch[field] = None
            return
        if roll < 0.14:
            keep = [item for item in current if not deletable(item)]
            fresh = [new(value) for value in self.some([v for v in pool if v not in existing], 0, 2)]
            marker: dict[str, Any] = {"$patch": "replace"}
            items = [*keep, *fresh]
            patch[field] = self.shuffled([*items, marker]) if items else [marker]
            return
        items: list[dict[str, Any]] = []
        for item in self.some(current, 0, 3):
            if deletable(item) and self.chance(0.25):
                items.append({key: item[key], "$patch": "delete"})
            else:
                items.append(update(item))
        items += [new(value) for value in self.some([v for v in pool if v not in existing], 0, 2)]
        if not items and self.chance(0.5):
            items = [new(self.pick(pool))] if pool else []
        if current and self.chance(0.3):
            patch[f"$setElementOrder/{field}"] = self.keyed_order(current, key, items)
        patch[field] = items

    def env(self, patch: dict[str, Any], current: list[dict[str, Any]]) -> None:
        def update(item: dict[str, Any]) -> dict[str, Any]:
            changed = self.env_item(item["name"])
            if "value" in item and "valueFrom" in changed:
                changed["value"] = None
            elif "valueFrom" in item and "value" in changed:
                changed["valueFrom"] = None
            return changed

        self.keyed_list(patch, "env", current, "name", ENV_NAMES, update, self.env_item)

    def ports(self, patch: dict[str, Any], current: list[dict[str, Any]]) -> None:
        def update(item: dict[str, Any]) -> dict[str, Any]:
            return {"containerPort": item["containerPort"], "name": f"q{item['containerPort']}"}

        self.keyed_list(patch, "ports", current, "containerPort", PORTS, update, self.port)

    def volume_mounts(self, patch: dict[str, Any], current: list[dict[str, Any]]) -> None:
        def update(item: dict[str, Any]) -> dict[str, Any]:
            if self.chance(0.5):
                return {"mountPath": item["mountPath"], "readOnly": True}
            return {"mountPath": item["mountPath"], "subPath": self.pick(["sub", "other"])}

        def new(path: str) -> dict[str, Any]:
            return {"mountPath": path, "name": next(n for n, paths in MOUNTED.items() if path in paths)}

        pool = [path for paths in MOUNTED.values() for path in paths]
        self.keyed_list(patch, "volumeMounts", current, "mountPath", pool, update, new)

    def container_update(self, current: dict[str, Any]) -> dict[str, Any]:
        update: dict[str, Any] = {"name": current["name"]}
        ops = [
            "image",
            "command",
            "args",
            "env",
            "ports",
            "mounts",
            "resources",
            "security",
            "workdir",
        ]
        if current["name"] not in INIT_CONTAINERS:
            ops.append("probe")
        if current.get("command"):
            ops.append("delete-from-command")
        for op in self.some(ops, 1, 4):
            if op == "image":
                update["image"] = self.pick(IMAGES)
            elif op == "command":
                update["command"] = None if self.chance(0.3) else self.some(WORDS, 1, 3)
            elif op == "args":
                update["args"] = None if self.chance(0.3) else self.some(WORDS, 1, 3)
            elif op == "delete-from-command":  # an atomic list: the server still deletes items
                update["$deleteFromPrimitiveList/command"] = self.some(current["command"] + ["absent"], 1, 2)
            elif op == "env":
                self.env(update, current.get("env", []))
            elif op == "ports":
                self.ports(update, current.get("ports", []))
            elif op == "mounts":
                self.volume_mounts(update, current.get("volumeMounts", []))
            elif op == "resources":
                update["resources"] = self.resources_patch(current.get("resources", {}))
            elif op == "probe":
                self.probe_patch(update, current.get("readinessProbe"))
            elif op == "security":
                update["securityContext"] = self.pick(
                    [
                        None,
                        {"runAsUser": 2000},
                        {"$patch": "replace", "runAsGroup": 3000},
                        {"$patch": "delete"},
                    ]
                )
            else:
                update["workingDir"] = self.pick([None, "/opt"])
        if "command" in update:  # setting and deleting from one list has no single answer (see above)
            update.pop("$deleteFromPrimitiveList/command", None)
        return update

    def resources_patch(self, current: dict[str, Any]) -> dict[str, Any]:
        roll = self.rng.random()
        if roll < 0.15:
            return {"$patch": "delete"}
        if roll < 0.3:
            return {"$patch": "replace", **self.resources()}
        patch: dict[str, Any] = {}
        for part in self.some(["limits", "requests"], 1, 2):
            have = current.get(part, {})
            if part == "limits":
                change = {"cpu": self.pick(["2", "4", None]), "memory": self.pick(["1Gi", "2Gi", None])}
            else:
                change = {
                    "cpu": self.pick(["500m", "1", None]),
                    "memory": self.pick(["128Mi", "256Mi", None]),
                }
            patch[part] = {k: v for k, v in change.items() if v is not None or k in have}
        return patch

    def probe_patch(self, update: dict[str, Any], current: dict[str, Any] | None) -> None:
        if current is None or self.chance(0.2):
            update["readinessProbe"] = self.probe()
            return
        choice = self.pick(["delete", "null", "period", "switch", "replace"])
        if choice == "delete":
            update["readinessProbe"] = {"$patch": "delete"}
        elif choice == "null":
            update["readinessProbe"] = None
        elif choice == "period":
            update["readinessProbe"] = {"periodSeconds": self.pick([3, 30])}
        elif choice == "switch":
            if "httpGet" in current:
                update["readinessProbe"] = {"httpGet": None, "tcpSocket": {"port": 9000}}
            else:
                update["readinessProbe"] = {
                    "tcpSocket": None,
                    "httpGet": {"path": "/x", "port": 9000, "scheme": "HTTP"},
                }
        else:
            update["readinessProbe"] = {"$patch": "replace", **self.probe()}

    def containers(self, patch: dict[str, Any], original: dict[str, Any], field: str) -> None:
        current = original["spec"].get(field, [])
        pool = CONTAINERS if field == "containers" else INIT_CONTAINERS

        def new(name: str) -> dict[str, Any]:
            return self.container(name, complete=True)

        spec = patch.setdefault("spec", {})
        self.keyed_list(spec, field, current, "name", pool, self.container_update, new)
        if spec.get(field) is None and field == "containers":
            spec[field] = [new(self.pick(pool))]  # a Pod needs containers; null would only be invalid

    def volumes(self, patch: dict[str, Any], original: dict[str, Any]) -> None:
        current = original["spec"].get("volumes", [])

        def update(item: dict[str, Any]) -> dict[str, Any]:
            kind = next(k for k in item if k != "name")
            choice = self.pick(["retain", "retain", "null", "inner"])
            fresh = self.volume_source(item["name"], complete=True)
            new_kind = next(iter(fresh))
            if choice == "retain":
                keys = ["name", new_kind] if new_kind != kind or self.chance(0.5) else ["name", kind]
                source = fresh if new_kind in keys else {}
                extra = {kind: None} if kind not in keys and self.chance(0.3) else {}
                return {"name": item["name"], "$retainKeys": keys, **source, **extra}
            if choice == "null" and new_kind != kind:
                return {"name": item["name"], kind: None, **fresh}
            if kind == "emptyDir":
                return {"name": item["name"], "emptyDir": {"medium": self.pick(["Memory", None])}}
            return {"name": item["name"]}

        def new(name: str) -> dict[str, Any]:
            return self.volume(name, complete=True)

        spec = patch.setdefault("spec", {})
        self.keyed_list(
            spec,
            "volumes",
            current,
            "name",
            OTHER_VOLUMES,
            update,
            new,
            deletable=lambda v: v["name"] not in MOUNTED,
        )
        if spec.get("volumes") is None:
            spec["volumes"] = [{"name": n, "$patch": "delete"} for n in OTHER_VOLUMES if self.chance(0.5)]

    def finalizers(self, patch: dict[str, Any], original: dict[str, Any]) -> None:
        metadata = patch.setdefault("metadata", {})
        current = original["metadata"].get("finalizers", [])
        roll = self.rng.random()
        if roll < 0.1:
            metadata["finalizers"] = None
        elif roll < 0.4 and current:
            metadata["$deleteFromPrimitiveList/finalizers"] = self.some([*current, "example.com/z"], 1, 2)
        elif roll < 0.7:
            metadata["finalizers"] = self.some(FINALIZERS, 1, 2)
        else:  # $setElementOrder, with additions and deletions both (its presence fixes the order)
            added = self.some([f for f in FINALIZERS if f not in current], 0, 2)
            deleted = self.some(current, 0, 1)
            final = [f for f in [*current, *added] if f not in deleted]
            order = self.shuffled(final)
            if added:
                metadata["finalizers"] = [f for f in order if f in added]
            if deleted:
                metadata["$deleteFromPrimitiveList/finalizers"] = deleted
            metadata["$setElementOrder/finalizers"] = order

    def spec_misc(self, patch: dict[str, Any], original: dict[str, Any]) -> None:
        spec = patch.setdefault("spec", {})
        current = original["spec"]
        for field in self.some(
            [
                "nodeSelector",
                "tolerations",
                "pullSecrets",
                "aliases",
                "spread",
                "deadline",
                "security",
                "grace",
                *(["order-tolerations"] if current.get("tolerations") else []),
            ],
            1,
            3,
        ):
            if field == "nodeSelector":
                spec["nodeSelector"] = self.string_map(current.get("nodeSelector"), ["disk", "zone", "gpu"])
            elif field == "tolerations":  # atomic: replaced whole
                spec["tolerations"] = self.pick(
                    [None, [{"key": "d", "operator": "Equal", "value": "v", "effect": "NoExecute"}]]
                )
            elif field == "pullSecrets":
                self.keyed_list(
                    spec,
                    "imagePullSecrets",
                    current.get("imagePullSecrets", []),
                    "name",
                    ["reg-a", "reg-b", "reg-c"],
                    dict,
                    lambda name: {"name": name},
                )
            elif field == "aliases":
                self.keyed_list(
                    spec,
                    "hostAliases",
                    current.get("hostAliases", []),
                    "ip",
                    ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
                    lambda item: {"ip": item["ip"], "hostnames": ["c.local"]},  # hostnames: atomic
                    lambda ip: {"ip": ip, "hostnames": ["d.local"]},
                )
            elif field == "spread":  # merged on topologyKey alone, whatever whenUnsatisfiable says
                spec["topologySpreadConstraints"] = [
                    self.spread(key, self.pick(["DoNotSchedule", "ScheduleAnyway"]))
                    for key in self.some(["zone", "rack", "host"], 1, 2)
                ]
            elif field == "deadline":
                spec["activeDeadlineSeconds"] = self.pick([None, 120])
            elif field == "security":
                spec["securityContext"] = self.pick(
                    [{"runAsUser": 1000}, {"runAsNonRoot": None}, {"$patch": "replace", "fsGroup": 2000}]
                )
            elif field == "order-tolerations":  # an atomic list of objects: nothing to order them by
                spec["$setElementOrder/tolerations"] = [{"key": t["key"]} for t in current["tolerations"]]
                spec.pop("tolerations", None)
            else:
                spec["terminationGracePeriodSeconds"] = self.pick([10, 45])

    def retain_spec(self, patch: dict[str, Any], original: dict[str, Any]) -> None:
        """``$retainKeys`` on the spec itself: keep the defaulted fields, drop some others."""
        spec = patch.setdefault("spec", {})
        optional = ["nodeSelector", "tolerations", "imagePullSecrets", "hostAliases", "activeDeadlineSeconds"]
        keep = [k for k in original["spec"] if k not in optional or self.chance(0.4)]
        spec["$retainKeys"] = sorted(
            {*keep, *(k for k, v in spec.items() if v is not None and not k.startswith("$"))}
        )

    def patch(self, original: dict[str, Any]) -> dict[str, Any]:
        patch: dict[str, Any] = {}
        areas: list[Callable[[], None]] = [
            lambda: patch.setdefault("metadata", {}).update(
                labels=self.string_map(original["metadata"].get("labels"), LABEL_KEYS)
            ),
            lambda: patch.setdefault("metadata", {}).update(
                annotations=self.string_map(
                    original["metadata"].get("annotations"), ["note", "owner", "extra"]
                )
            ),
            lambda: self.finalizers(patch, original),
            lambda: self.containers(patch, original, "containers"),
            lambda: self.containers(patch, original, "containers"),
            lambda: self.containers(patch, original, "initContainers"),
            lambda: self.volumes(patch, original),
            lambda: self.spec_misc(patch, original),
        ]
        for area in self.some(areas, 1, 3):
            area()
        if self.chance(0.08):
            self.retain_spec(patch, original)
        roll = self.rng.random()
        if roll < 0.04:  # replace the spec with a complete one: the stored spec, trimmed and changed
            patch["spec"] = {"$patch": "replace", **self.trimmed_spec(original)}
        elif roll < 0.06:  # replace the whole template
            labels = {k: "r" for k in self.some(LABEL_KEYS, 1, 2)}
            return {"$patch": "replace", "metadata": {"labels": labels}, "spec": self.trimmed_spec(original)}
        return patch

    def trimmed_spec(self, original: dict[str, Any]) -> dict[str, Any]:
        spec = copy.deepcopy(original["spec"])
        for field in ["nodeSelector", "tolerations", "imagePullSecrets", "hostAliases", "initContainers"]:
            if self.chance(0.5):
                spec.pop(field, None)
        spec["containers"][0]["image"] = self.pick(IMAGES)
        return spec

    # --- malformed patches -------------------------------------------------------------------

    def break_patch(self, patch: dict[str, Any], stored: dict[str, Any]) -> dict[str, Any]:
        """Make the patch malformed in one of the ways the server refuses."""
        spec = patch.setdefault("spec", {})
        metadata = patch.setdefault("metadata", {})
        name = stored["spec"]["containers"][0]["name"]
        other = next(n for n in CONTAINERS if n != name)
        choice = self.pick(
            [
                "map-directive",
                "list-directive",
                "merge-directive",
                "no-merge-key",
                "delete-without-key",
                "order-not-list",
                "order-mismatch",
                "retain-not-list",
                "retain-missing",
                "list-of-lists",
                "mixed-items",
                "delete-list-not-list",
                *(["delete-from-atomic-objects"] if stored["spec"].get("tolerations") else []),
            ]
        )
        if choice == "map-directive":
            spec["securityContext"] = {"$patch": self.pick(["bogus", "merge"]), "runAsUser": 1}
        elif choice == "list-directive":
            spec["containers"] = [{"name": name, "$patch": "bogus"}]
        elif choice == "merge-directive":
            spec["containers"] = [{"name": name, "$patch": "merge", "image": "x:1"}]
        elif choice == "no-merge-key":
            spec["containers"] = [{"image": "busybox:1.36"}]
        elif choice == "delete-without-key":
            spec["containers"] = [{"name": name, "env": [{"$patch": "delete", "value": "1"}]}]
        elif choice == "order-not-list":
            spec["$setElementOrder/containers"] = {"name": name}
        elif choice == "order-mismatch":
            spec["containers"] = [
                {"name": other, "image": "busybox:1.36"},
                {"name": name, "workingDir": "/w"},
            ]
            spec["$setElementOrder/containers"] = [{"name": name}, {"name": other}]
        elif choice == "retain-not-list":
            spec["volumes"] = [{"name": "data", "$retainKeys": "name", "emptyDir": {}}]
        elif choice == "retain-missing":
            spec["volumes"] = [{"name": "data", "$retainKeys": ["name"], "emptyDir": {}}]
        elif choice == "list-of-lists":
            metadata["finalizers"] = [["example.com/a"]]
        elif choice == "mixed-items":
            metadata["finalizers"] = ["example.com/a", {"x": "y"}]
        elif choice == "delete-list-not-list":
            metadata["$deleteFromPrimitiveList/finalizers"] = "example.com/a"
        else:  # a list of objects that is not merged on a key cannot be deleted from
            spec["$deleteFromPrimitiveList/tolerations"] = stored["spec"]["tolerations"][:1]
        return patch


class Server:
    """The calls this script makes, against one API server and one scratch namespace."""

    def __init__(self, kubeconfig: Path, kubectl: str, namespace: str) -> None:
        self.kube = KubeHTTP.from_kubeconfig(kubeconfig)
        self.kubectl = kubectl
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.base = f"/api/v1/namespaces/{namespace}/podtemplates"

    def version(self) -> str:
        return str(self.kube.get("/version")["gitVersion"])

    def create_namespace(self) -> None:
        self.kube.create(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}},
        )

    def delete_namespace(self) -> None:
        self.kube.request("DELETE", f"/api/v1/namespaces/{self.namespace}")

    def create(self, name: str, template: dict[str, Any]) -> tuple[int, Any]:
        body = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": template}
        answer = self.kube.request("POST", self.base, body)
        return answer.status, answer.body

    def patch(self, name: str, patch: dict[str, Any]) -> tuple[int, Any]:
        """The server's answer; status 0 when it closed the connection instead (a panic in Go)."""
        try:
            answer = request(
                f"{self.kube.server}{self.base}/{name}?dryRun=All&fieldValidation=Ignore",
                "PATCH",
                {"template": patch},
                context=self.kube.context,
                content_type=SMP,
            )
        except http.client.RemoteDisconnected:
            return 0, {"message": "the server closed the connection without an answer"}
        return answer.status, answer.body

    def go_merge(self, stored: dict[str, Any], patch: dict[str, Any]) -> tuple[bool, Any]:
        """kubectl's local strategic merge of ``{template: patch}`` into ``stored``: (ok, object or message)."""
        with tempfile.TemporaryDirectory() as scratch:
            obj, body = Path(scratch, "obj.json"), Path(scratch, "patch.json")
            obj.write_text(json.dumps(stored))
            body.write_text(json.dumps({"template": patch}))
            done = subprocess.run(
                [
                    self.kubectl,
                    "patch",
                    "--local",
                    "-f",
                    str(obj),
                    "--type=strategic",
                    "--patch-file",
                    str(body),
                    "-o",
                    "json",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
            )
        if done.returncode != 0:
            return False, done.stderr.strip()
        return True, json.loads(done.stdout)


def first_difference(ours: Json, theirs: Json, path: str = "") -> str:
    """Where two JSON values first differ, for the log."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for key in sorted(set(ours) | set(theirs)):
            if ours.get(key) != theirs.get(key):
                return first_difference(ours.get(key), theirs.get(key), f"{path}.{key}")
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        for index, (left, right) in enumerate(zip(ours, theirs, strict=True)):
            if left != right:
                return first_difference(left, right, f"{path}[{index}]")
    return f"{path or '.'}: {json.dumps(ours)} -> {json.dumps(theirs)}"


def is_validation_error(status: int, body: Any) -> bool:
    """Did the server refuse the merged object (not the patch)? Those name the object and its fields."""
    details = body.get("details", {}) if isinstance(body, dict) else {}
    return status == 422 and details.get("kind") == "PodTemplate"


def generate(
    server: Server, count: int, seed: int, log: Callable[[str], None]
) -> tuple[list[dict[str, Any]], Counter[str]]:
    gen = Gen(random.Random(seed))
    cases: list[dict[str, Any]] = []
    dropped: Counter[str] = Counter()
    attempt = 0
    while len(cases) < count:
        attempt += 1
        if attempt > count * 5:
            raise SystemExit(f"gave up after {attempt - 1} attempts: {dict(dropped)}")
        original = gen.original()
        name = f"case-{attempt:04d}"
        status, created = server.create(name, original)
        if status != 201:
            raise SystemExit(f"{name}: the server refused the original ({status}): {created}")
        stored = created["template"]
        patch = gen.patch(stored)  # made for what the server stores, so replaced items can be complete
        if gen.chance(0.15):
            patch = gen.break_patch(patch, stored)
        status, answer = server.patch(name, copy.deepcopy(patch))
        ok, merged = server.go_merge(created, copy.deepcopy(patch))
        case: dict[str, Any] = {
            "name": f"ref-{len(cases) + 1:03d}",
            "original": original,
            "patch": patch,
            "server_original": stored,
        }
        if status == 200 and ok:
            if as_stored(merged["template"]) != answer["template"]:
                dropped["defaulting changed the merge"] += 1
                log(
                    f"{name}: the server changed {first_difference(as_stored(merged['template']), answer['template'])}"
                )
                continue
            case["server_result"] = answer["template"]
        elif status == 200 or ok:
            if is_validation_error(status, answer):
                dropped["the merged object is invalid"] += 1
                continue
            dropped["kubectl and the server disagree"] += 1
            log(f"{name}: server {status}, kubectl {'ok' if ok else merged}: {json.dumps(patch)}")
            continue
        else:
            case["server_error"] = {
                "code": status,
                "message": answer.get("message", "") if isinstance(answer, dict) else str(answer),
            }
        cases.append(case)
    return cases, dropped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--kubeconfig", type=Path, default=os.environ.get("KUBECONFIG"), help="default: $KUBECONFIG"
    )
    parser.add_argument("--count", type=int, default=240)
    parser.add_argument("--seed", type=int, default=1729)
    parser.add_argument("--kubectl", default="kubectl", help="kubectl of the server's version")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.kubeconfig is None:
        parser.error("no --kubeconfig and no $KUBECONFIG")

    server = Server(args.kubeconfig, args.kubectl, f"smp-reference-{os.getpid()}")
    server.create_namespace()
    try:
        version = server.version()
        cases, dropped = generate(server, args.count, args.seed, lambda line: print(line, file=sys.stderr))
    finally:
        server.delete_namespace()
    header = {
        "generator": "hack/gen-smp-reference.py",
        "seed": args.seed,
        "server": version,
        "method": "see the generator's docstring",
        "dropped": dict(sorted(dropped.items())),
    }
    lines = [json.dumps(case, sort_keys=True) for case in cases]
    text = json.dumps(header, indent=1)[:-2] + ',\n "cases": [\n' + ",\n".join(lines) + "\n ]\n}\n"
    json.loads(text)  # a cheap check that the hand-joined JSON is JSON
    args.out.write_text(text)
    refused = sum("server_error" in case for case in cases)
    print(
        f"wrote {len(cases)} cases ({len(cases) - refused} merged, {refused} refused) to {args.out}; "
        f"dropped {dict(dropped)}; server {version}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
