"""The ``gpu-map`` ConfigMap: which GPU UUID has which index on which Node.

An admin script fills ``data[<node>]`` with JSON ``{"<GPU UUID>": <index>, ...}``. The map is
user input, so parsing never raises: a bad entry is kept as an error for its Node and every
requester on that Node gets that error in its status annotation, while other Nodes keep working.
An absent ConfigMap is a distinct state ("not available"), never an empty map: the upstream
controller crashed on exactly that confusion.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dpctl import api


@dataclass(frozen=True)
class NodeEntry:
    """One Node's parsed entry: UUID → index, or the reason it could not be used."""

    gpus: Mapping[str, int] = field(default_factory=dict)
    error: str = ""


@dataclass(frozen=True)
class GpuMap:
    nodes: Mapping[str, NodeEntry]
    # UUID → every node whose entry lists it; more than one is a misconfiguration.
    owners: Mapping[str, tuple[str, ...]]

    @property
    def gpu_count(self) -> int:
        return sum(len(e.gpus) for e in self.nodes.values())


class GpuMapError(Exception):
    """Why a requester's GPUs cannot be mapped to indices; the message goes into its status."""


def parse(configmap: Mapping[str, Any] | None) -> GpuMap | None:
    """Parse the ConfigMap; None when it does not exist."""
    if configmap is None:
        return None
    data = configmap.get("data") or {}
    nodes: dict[str, NodeEntry] = {}
    owners: dict[str, list[str]] = {}
    if isinstance(data, Mapping):
        for node, text in data.items():
            entry = _parse_entry(str(node), text)
            nodes[str(node)] = entry
            for uuid in entry.gpus:
                owners.setdefault(uuid, []).append(str(node))
    return GpuMap(nodes=nodes, owners={u: tuple(sorted(n)) for u, n in owners.items()})


def _parse_entry(node: str, text: Any) -> NodeEntry:
    where = f"the {api.GPU_MAP_NAME} entry for node {node!r}"
    try:
        doc = json.loads(text) if isinstance(text, str) else None
    except ValueError as err:
        return NodeEntry(error=f"{where} is not valid JSON: {err}")
    except RecursionError:  # json.loads recurses once per level of [ or {
        return NodeEntry(error=f"{where} nests JSON arrays or objects too deeply")
    if not isinstance(doc, dict):
        return NodeEntry(error=f'{where} must be a JSON object like {{"GPU-...": 0}}')
    gpus: dict[str, int] = {}
    seen: dict[int, str] = {}
    for uuid, index in doc.items():
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            return NodeEntry(error=f"{where} maps {uuid!r} to {index!r}; an index must be an integer >= 0")
        if not uuid:
            return NodeEntry(error=f"{where} has an empty GPU UUID")
        if index in seen:
            return NodeEntry(error=f"{where} gives index {index} to both {seen[index]!r} and {uuid!r}")
        seen[index] = uuid
        gpus[uuid] = index
    return NodeEntry(gpus=gpus)


def indices_for(gpu_map: GpuMap | None, node: str, uuids: Sequence[str]) -> list[int]:
    """The indices of ``uuids`` on ``node``, in the order given; raises GpuMapError saying why not."""
    if gpu_map is None:
        raise GpuMapError(
            f"the GPU map ConfigMap {api.GPU_MAP_NAME} is not available; create it "
            "(e.g. with hack/ensure-nodes-mapped.sh)"
        )
    if not uuids:
        raise GpuMapError(
            "the assigned set of GPUs is empty (does the requester's container request nvidia.com/gpu?)"
        )
    entry = gpu_map.nodes.get(node)
    if entry is None:
        raise GpuMapError(f"the GPU map ConfigMap {api.GPU_MAP_NAME} has no entry for node {node!r}")
    if entry.error:
        raise GpuMapError(entry.error)
    indices: list[int] = []
    for uuid in uuids:
        elsewhere = [n for n in gpu_map.owners.get(uuid, ()) if n != node]
        if elsewhere:
            raise GpuMapError(
                f"GPU {uuid} is mapped to node {elsewhere[0]!r} in {api.GPU_MAP_NAME}, "
                f"but the requester runs on node {node!r}"
            )
        if uuid not in entry.gpus:
            raise GpuMapError(f"GPU {uuid} is not in the {api.GPU_MAP_NAME} entry for node {node!r}")
        indices.append(entry.gpus[uuid])
    return indices
