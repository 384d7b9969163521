"""What survives a restart of the simulated kubelet: each live pod's IP and GPUs, in
``<state dir>/allocations.json``.

A restarted kubelet must not hand a GPU still recorded for a pod to another one, and a pod keeps
its IP for life (the API server rejects a changed ``podIP``). The file is rewritten atomically
(temp file + rename) whenever an allocation changes; it is small, so that is quick.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

_VERSION: Final = 1


@dataclass(frozen=True)
class PodAllocation:
    pod: str  # namespace/name, for humans reading the file
    node: str
    ip: str | None
    gpus: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"pod": self.pod, "node": self.node, "ip": self.ip, "gpus": list(self.gpus)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> PodAllocation:
        return cls(
            str(doc["pod"]), str(doc["node"]), doc.get("ip"), tuple(str(g) for g in doc.get("gpus") or [])
        )


class AllocationFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, PodAllocation]:
        """The recorded allocations by pod UID; an unreadable file counts as empty (and is logged
        by the caller), since the API still has every pod's IP."""
        try:
            doc = json.loads(self.path.read_text())
            return {uid: PodAllocation.from_json(a) for uid, a in (doc.get("pods") or {}).items()}
        except FileNotFoundError:
            return {}

    def save(self, allocations: dict[str, PodAllocation]) -> None:
        doc = {"version": _VERSION, "pods": {uid: a.to_json() for uid, a in sorted(allocations.items())}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, self.path)
