"""`dpctl render-runner`: print the server-running Pod the controller would create for a requester.

Owns the subcommand's arguments and I/O: read a Pod manifest, or a workload manifest
(ReplicaSet, Deployment, ...) whose Pod template stands in for one of its Pods, build the runner
with `build_runner`, and print it as YAML. A build problem is printed to stderr exactly as the
controller would write it into the requester's status annotation, with exit status 1; a
manifest that cannot be read at all exits with status 2.

Does not: contact a cluster. The input therefore lacks what the API server adds to a real
requester (defaults such as resource requests copied from limits, the service-account volume),
and the output is the runner before the API server defaults it. A requester from a template gets
placeholder name and UID, so its runner's name, and the FYI annotations that quote them, differ
from a real one's; the nominal hash does not depend on them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Final

import yaml

from dpctl.podbuild.nominal import BuildError, build_runner
from dpctl.podbuild.yamltext import YamlTextError, load_yaml

PLACEHOLDER_UID: Final = "00000000-0000-0000-0000-000000000000"
PLACEHOLDER_SUFFIX: Final = "-xxxxx"  # stands for the random suffix a ReplicaSet gives its Pods


class _InputError(Exception):
    """The manifest cannot be read or holds no Pod definition."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--filename",
        required=True,
        metavar="FILE",
        help="a requester Pod, or a ReplicaSet/Deployment (its Pod template is used); - reads stdin",
    )
    parser.add_argument("--node", required=True, help="the requester's Node (the template's .NodeName)")
    parser.add_argument(
        "--gpus",
        type=_indices,
        default=(0,),
        metavar="I,J",
        help="the requester's GPU indices on that Node, as gpu-map gives them (default: 0)",
    )
    parser.add_argument(
        "--gpu-uuids",
        type=_uuids,
        default=(),
        metavar="U1,U2",
        help="the UUIDs of those GPUs, in the same order, for the accelerators annotation (default: none)",
    )


def run(args: argparse.Namespace) -> int:
    if args.gpu_uuids and len(args.gpu_uuids) != len(args.gpus):
        print("dpctl render-runner: --gpu-uuids must give one UUID for each index in --gpus", file=sys.stderr)
        return 2
    try:
        requester = _requester(load_yaml(_read(args.filename)))
    except (_InputError, YamlTextError) as error:
        print(f"dpctl render-runner: {args.filename}: {error}", file=sys.stderr)
        return 2
    try:
        runner = build_runner(requester, args.node, args.gpus, args.gpu_uuids)
    except BuildError as error:
        print(error, file=sys.stderr)
        return 1
    sys.stdout.write(yaml.safe_dump(runner.pod, sort_keys=False))
    return 0


def _indices(text: str) -> tuple[int, ...]:
    try:
        indices = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of GPU indices") from None
    if any(index < 0 for index in indices) or len(set(indices)) != len(indices):
        raise argparse.ArgumentTypeError(f"{text!r}: GPU indices must be distinct and not negative")
    return indices


def _uuids(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.split(",") if part)


def _read(filename: str) -> str:
    if filename == "-":
        return sys.stdin.read()
    try:
        return Path(filename).read_text(encoding="utf-8")
    except OSError as error:
        raise _InputError(error.strerror or str(error)) from error
    except UnicodeDecodeError as error:
        raise _InputError("not UTF-8 text") from error


def _requester(manifest: Any) -> dict[str, Any]:
    """The manifest as a requester Pod, with placeholders for what only the server would assign."""
    if not isinstance(manifest, dict):
        raise _InputError("expected a Kubernetes object (a YAML mapping)")
    metadata = _object(manifest.get("metadata"))
    if manifest.get("kind") == "Pod":
        if not metadata.get("name"):
            prefix = str(metadata.get("generateName") or "requester").rstrip("-")
            metadata = {**metadata, "name": prefix + PLACEHOLDER_SUFFIX}
        return {**manifest, "metadata": {"uid": PLACEHOLDER_UID, **metadata}}
    template = manifest.get("spec", {}).get("template") if isinstance(manifest.get("spec"), dict) else None
    if not isinstance(template, dict):
        raise _InputError(
            f"expected a Pod, or a workload with spec.template; got kind {manifest.get('kind')!r}"
        )
    pod_metadata = {
        **_object(template.get("metadata")),
        "name": str(metadata.get("name") or "requester") + PLACEHOLDER_SUFFIX,
        "uid": PLACEHOLDER_UID,
    }
    if "namespace" in metadata:
        pod_metadata["namespace"] = metadata["namespace"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": pod_metadata,
        "spec": _object(template.get("spec")),
    }


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
