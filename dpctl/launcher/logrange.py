"""The ``Range`` header of ``GET /v2/vllm/instances/{id}/log`` (L9); pure.

Only ``bytes=S-E`` and ``bytes=S-`` are served, as upstream serves them; a suffix range
(``bytes=-N``), several ranges, or E < S are malformed (400). A start at or past the end of the
log, an empty log included, is unsatisfiable (416). A reply holds at most
:data:`~dpctl.launcher.api.MAX_LOG_REPLY_BYTES`; a reader pages on from the ``Content-Range`` end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from dpctl.launcher.api import MAX_LOG_REPLY_BYTES

_RANGE: Final = re.compile(r"bytes=(\d+)-(\d+)?")


class MalformedRange(ValueError):
    """HTTP 400."""


class RangeNotSatisfiable(Exception):
    """HTTP 416: the start is at or past the end of the log."""

    def __init__(self, total: int) -> None:
        super().__init__(f"the log holds {total} bytes")
        self.total = total


@dataclass(frozen=True)
class Slice:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def parse_range(header: str) -> tuple[int, int | None]:
    """(start, inclusive end or None for open-ended)."""
    m = _RANGE.fullmatch(header)
    if m is None:
        raise MalformedRange(f"Unsupported or malformed Range header: {header}")
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) is not None else None
    if end is not None and end < start:
        raise MalformedRange(f"Range end ({end}) must be >= start ({start})")
    return start, end


def clamp(start: int, end: int | None, total: int, limit: int = MAX_LOG_REPLY_BYTES) -> Slice:
    """The bytes to send of a log of ``total`` bytes."""
    if start >= total:
        raise RangeNotSatisfiable(total)
    last = total - 1 if end is None else min(end, total - 1)
    return Slice(start, min(last, start + limit - 1))
