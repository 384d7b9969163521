"""Container log files in the CRI format, and reading them back as the kubelet serves them.

Each container instance writes ``<pod dir>/logs/<container>/<restart count>.log``; a line is
``<RFC3339Nano time> <stdout|stderr> <F|P> <text>`` (``P``: a partial line, continued by the next
entry), exactly as containerd writes ``/var/log/pods``. The timestamps make ``timestamps=true``,
``sinceSeconds`` and ``sinceTime`` possible. Only the current and the previous instance's files
are kept (``kubectl logs --previous`` reads the latter).

Owns the writer (fed by the runtime's output pumps, one entry per write so a reader never sees
half an entry) and the reader's selection rules (``tailLines``, ``sinceTime``, ``limitBytes``,
``timestamps``). Does not know about HTTP.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# containerd splits lines longer than this into partial entries.
MAX_ENTRY: Final = 16 * 1024


def now_nano() -> str:
    t = dt.datetime.now(dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}000Z"


def log_path(container_dir: Path, instance: int) -> Path:
    return container_dir / f"{instance}.log"


def rotate(container_dir: Path, instance: int) -> Path:
    """Prepare the file of instance ``instance``; delete all but the previous instance's file."""
    container_dir.mkdir(parents=True, exist_ok=True)
    for old in container_dir.glob("*.log"):
        stem = old.stem
        if stem.isdigit() and int(stem) < instance - 1:
            old.unlink(missing_ok=True)
    return log_path(container_dir, instance)


def latest_instances(container_dir: Path) -> list[int]:
    """Instance numbers that have a file, ascending."""
    if not container_dir.is_dir():
        return []
    return sorted(int(p.stem) for p in container_dir.glob("*.log") if p.stem.isdigit())


class CriLogWriter:
    """Appends one container instance's stdout and stderr to its log file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._partial: dict[str, bytes] = {}

    def write(self, stream: str, data: bytes) -> None:
        """Feed output as it arrives; complete lines are written at once, a rest is kept."""
        buf = self._partial.pop(stream, b"") + data
        while True:
            nl = buf.find(b"\n")
            if nl < 0 or nl > MAX_ENTRY:
                break
            self._entry(stream, "F", buf[:nl])
            buf = buf[nl + 1 :]
        while len(buf) > MAX_ENTRY:
            self._entry(stream, "P", buf[:MAX_ENTRY])
            buf = buf[MAX_ENTRY:]
        if buf:
            self._partial[stream] = buf

    def flush_stream(self, stream: str) -> None:
        """The stream ended: write what is left of its last line as a full entry."""
        rest = self._partial.pop(stream, b"")
        if rest:
            self._entry(stream, "F", rest)

    def note(self, text: str) -> None:
        """A line from the kubelet itself (e.g. why the container could not start)."""
        self._entry("stderr", "F", text.encode())

    def _entry(self, stream: str, tag: str, content: bytes) -> None:
        os.write(self._fd, f"{now_nano()} {stream} {tag} ".encode() + content + b"\n")

    def close(self) -> None:
        for stream in list(self._partial):
            self.flush_stream(stream)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@dataclass(frozen=True)
class Entry:
    time: str
    stream: str
    partial: bool
    content: bytes


def parse_entries(data: bytes) -> list[Entry]:
    """Parse complete entries; a malformed line is kept as content so nothing is lost."""
    entries: list[Entry] = []
    for line in data.split(b"\n"):
        if not line:
            continue
        parts = line.split(b" ", 3)
        if len(parts) == 4 and parts[1] in (b"stdout", b"stderr") and parts[2] in (b"F", b"P"):
            entries.append(Entry(parts[0].decode(), parts[1].decode(), parts[2] == b"P", parts[3]))
        else:
            entries.append(Entry("", "stdout", False, line))
    return entries


@dataclass(frozen=True)
class LogOptions:
    """The query of ``/containerLogs`` (``PodLogOptions``)."""

    tail_lines: int | None = None
    since_time: dt.datetime | None = None
    limit_bytes: int | None = None
    timestamps: bool = False
    follow: bool = False
    previous: bool = False


def _parse_time(text: str) -> dt.datetime | None:
    try:
        # RFC3339Nano has up to 9 fractional digits; Python takes 6.
        head, _, frac = text.rstrip("Z").partition(".")
        return dt.datetime.fromisoformat(head + ("." + frac[:6] if frac else "")).replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def select(entries: list[Entry], opts: LogOptions) -> list[Entry]:
    """Apply ``sinceTime`` then ``tailLines`` (counted in whole lines, partial entries joined)."""
    if opts.since_time is not None:
        since = opts.since_time
        entries = [e for e in entries if (t := _parse_time(e.time)) is None or t >= since]
    if opts.tail_lines is not None:
        if opts.tail_lines <= 0:
            return []
        full_lines = 0
        start = len(entries)
        for i in range(len(entries) - 1, -1, -1):
            if not entries[i].partial:
                full_lines += 1
                if full_lines > opts.tail_lines:
                    break
            start = i
        entries = entries[start:]
    return entries


def render(entries: Iterable[Entry], timestamps: bool, line_start: bool = True) -> bytes:
    """The bytes a client sees: each line's text, prefixed with its time when asked."""
    out = bytearray()
    for e in entries:
        if timestamps and line_start:
            out += e.time.encode() + b" "
        out += e.content
        if not e.partial:
            out += b"\n"
        line_start = not e.partial
    return bytes(out)
