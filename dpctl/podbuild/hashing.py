"""The nominal hash of a server-running Pod, and the short hash in fallback runner names.

Owns the canonical JSON encoding (sorted keys, no whitespace, UTF-8 rather than ``\\u`` escapes,
no NaN) and `nominal_hash`: SHA-256 over an envelope of a format version, the patched Pod, the
node and the GPU indices, written as unpadded base64url (43 characters, a valid annotation
value). Equal hashes mean "this sleeping runner is the runner that would be built now", so the
envelope holds everything that decides the runner and nothing that names a requester: the
caller passes the Pod *before* binding-specific metadata (name, requester annotation, partner
label, finalizer) is added.

`NOMINAL_HASH_VERSION` must change whenever dpctl changes how a runner is derived from these
inputs (e.g. pinning), so that sleepers built the old way are not taken for new ones.

Does not: decide what goes into the patched Pod (see `nominal`), or match the Go controller's
hashes (whose input is Go's JSON encoding); sleepers are not shared between the two.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

NOMINAL_HASH_VERSION: Final = 1


def canonical_json(value: Any) -> bytes:
    """One byte string per JSON value; raises ValueError for NaN/infinity, TypeError for non-JSON."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def nominal_hash(patched_pod: Mapping[str, Any], node: str, gpu_indices: Sequence[int]) -> str:
    """Hash of the runner that ``patched_pod`` becomes on ``node`` with GPUs ``gpu_indices`` (in that order)."""
    envelope = {
        "version": NOMINAL_HASH_VERSION,
        "pod": patched_pod,
        "node": node,
        "gpuIndices": list(gpu_indices),
    }
    digest = hashlib.sha256(canonical_json(envelope)).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def short_hash(text: str, length: int = 5) -> str:
    """The first ``length`` lowercase hex digits of SHA-256(text): safe inside a DNS name."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]
