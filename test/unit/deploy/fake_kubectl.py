"""A stand-in for the few kubectl commands hack/ensure-nodes-mapped.sh runs, over a JSON state file.

Run as ``fake_kubectl.py ARGS`` with ``$FAKE_KUBECTL_STATE`` naming the state file:

``namespace``; ``nodes``: [{name, unschedulable, labels, allocatable}]; ``configmap``: null or
{"data": {...}}; ``behaviour``: node -> {phase, log, polls, reason, message} (the Pod of that node
reports ``Pending`` for ``polls`` status reads, then ``phase``; ``reason``/``message`` are its
waiting state meanwhile); ``fail_create``: nodes whose Pod cannot be created. The fake adds
``pods`` (name -> the manifest created), ``deleted`` (Pod names) and ``calls`` (argv lists).

Anything it does not know exits 99, so a new kubectl call in the script fails its tests loudly.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml


def fail(message: str, code: int = 1) -> None:
    print(message, file=sys.stderr)
    raise SystemExit(code)


def option(args: list[str], name: str) -> str | None:
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a[len(name) + 1 :]
    return None


def main(args: list[str], state: dict[str, Any]) -> None:
    state.setdefault("calls", []).append(args)
    pods: dict[str, Any] = state.setdefault("pods", {})
    behaviour: dict[str, Any] = state.setdefault("behaviour", {})
    output = option(args, "-o") or ""
    match args[:2]:
        case ["config", "view"]:
            print(state.get("namespace", ""), end="")
        case ["get", "nodes"]:
            assert output.startswith("jsonpath="), output
            for n in state["nodes"]:
                fields = [
                    n["name"],
                    "true" if n.get("unschedulable") else "",
                    n.get("labels", {}).get("nvidia.com/gpu.present", ""),
                    n.get("allocatable", {}).get("nvidia.com/gpu", ""),
                ]
                print("|".join(fields))
        case ["get", "configmap"]:
            assert args[2] == "gpu-map" and "--ignore-not-found" in args and output.startswith("go-template=")
            for key in sorted((state.get("configmap") or {}).get("data") or {}):
                print(key)
        case ["create", "-f"]:
            manifest = yaml.safe_load(sys.stdin.read())
            assert manifest["kind"] == "Pod", manifest
            node = manifest["spec"]["nodeName"]
            if node in state.get("fail_create", []):
                fail(
                    f'Error from server (Forbidden): pods "{manifest["metadata"]["generateName"]}" is forbidden'
                )
            name = f"{manifest['metadata']['generateName']}{len(pods):05d}"
            pods[name] = manifest
            assert output == "jsonpath={.metadata.name}", output
            print(name, end="")
        case ["get", "pod"]:
            name = args[2]
            if name not in pods or name in state.get("deleted", []):
                fail(f'Error from server (NotFound): pods "{name}" not found')
            b = behaviour.setdefault(pods[name]["spec"]["nodeName"], {})
            if b.get("polls", 0) > 0 or b.get("phase") is None:
                b["polls"] = b.get("polls", 0) - 1
                print(f"Pending|{b.get('reason', '')}|{b.get('message', '')}", end="")
            else:
                print(f"{b['phase']}||", end="")
        case ["logs", name]:
            if name not in pods:
                fail(f'Error from server (NotFound): pods "{name}" not found')
            text = behaviour.get(pods[name]["spec"]["nodeName"], {}).get("log", "")
            if option(args, "--tail"):
                text = "\n".join(text.splitlines()[-int(option(args, "--tail") or 0) :]) + "\n"
            sys.stdout.write(text)
        case ["delete", "pod"]:
            assert "--ignore-not-found" in args, args
            selector = option(args, "-l")
            deleted = state.setdefault("deleted", [])
            if selector:
                wanted = dict(kv.split("=", 1) for kv in selector.split(","))
                for name, manifest in pods.items():
                    if wanted.items() <= manifest["metadata"]["labels"].items() and name not in deleted:
                        deleted.append(name)
            elif args[2] not in deleted:
                deleted.append(args[2])
        case ["patch", "configmap"]:
            assert args[2] == "gpu-map" and option(args, "--type") == "merge", args
            if state.get("configmap") is None:
                fail('Error from server (NotFound): configmaps "gpu-map" not found')
            patch = json.loads(option(args, "-p") or "")
            for key, value in patch["data"].items():
                assert isinstance(value, str), value
                state["configmap"].setdefault("data", {})[key] = value
            print("configmap/gpu-map patched")
        case ["create", "configmap"]:
            assert args[2] == "gpu-map", args
            if state.get("configmap") is not None:
                fail('Error from server (AlreadyExists): configmaps "gpu-map" already exists')
            literal = option(args, "--from-literal") or ""
            key, _, value = literal.partition("=")
            state["configmap"] = {"data": {key: value}}
            print("configmap/gpu-map created")
        case _:
            fail(f"fake kubectl: unexpected command {args}", 99)


if __name__ == "__main__":
    path = Path(os.environ["FAKE_KUBECTL_STATE"])
    state = json.loads(path.read_text())
    try:
        main(sys.argv[1:], state)
    finally:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(path)
