"""Logging for every dpctl process: text or JSON lines, levels like klog's ``-v``, key-values.

Each line carries the objects it concerns (``requester=``, ``runner=``, ``node=``) as key-value
pairs, so ``grep`` works on text logs and JSON logs parse without regexes. Messages users grep
for are constants in :mod:`dpctl.api`; call sites pass them unchanged.

Verbosity follows the Go original's habit: ``-v 0``–``1`` shows warnings and the lifecycle
lines, ``2``–``4`` adds routine progress, ``5`` and up adds per-call traces (``6`` library chatter too),
``7`` and up retries that are routine (a stub still starting). Secrets never reach
the log: values of keys that look like credentials are masked.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import Any, Final, Literal

import orjson

LogFormat = Literal["text", "json"]

# Custom level between INFO and DEBUG for routine progress (klog V(2)–V(4)).
PROGRESS: Final = 15
logging.addLevelName(PROGRESS, "PROGRESS")
# Below DEBUG, for what is only worth reading when chasing a problem (``-v 7`` and up).
TRACE: Final = 5
logging.addLevelName(TRACE, "TRACE")

_SECRET_HINTS: Final = ("token", "password", "secret", "authorization", "bearer")


def level_for_verbosity(v: int) -> int:
    if v <= 1:
        return logging.INFO
    if v <= 4:
        return PROGRESS
    if v <= 6:
        return logging.DEBUG
    return TRACE


_BEARER: Final = re.compile(r"(?i)\b(bearer)\s+[^\s,;\"']+")


def _masked(key: str, value: Any) -> Any:
    """The value as it may be logged: secrets (by key, at any depth, or a bearer token) masked."""
    if any(h in key.lower() for h in _SECRET_HINTS):
        return "<redacted>"
    if isinstance(value, str):
        return _BEARER.sub(r"\1 <redacted>", value)
    if isinstance(value, Mapping):
        return {k: _masked(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked("", v) for v in value]
    return value


class KV(logging.LoggerAdapter[logging.Logger]):
    """A logger whose calls take key-values: ``log.info(msg, requester=name, node=node)``."""

    def __init__(self, logger: logging.Logger, bound: Mapping[str, Any] | None = None) -> None:
        super().__init__(logger, dict(bound or {}))

    def bind(self, **kv: Any) -> KV:
        merged = dict(self.extra or {})
        merged.update(kv)
        return KV(self.logger, merged)

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kv = dict(self.extra or {})
        for key in list(kwargs):
            if key not in ("exc_info", "stack_info", "stacklevel", "extra"):
                kv[key] = kwargs.pop(key)
        kwargs["extra"] = {"kv": kv}
        return msg, kwargs

    def progress(self, msg: str, **kv: Any) -> None:
        self.log(PROGRESS, msg, **kv)


def get(name: str, **bound: Any) -> KV:
    return KV(logging.getLogger(name), bound)


def _quoted(value: Any) -> str:
    """A value as JSON text. orjson, since a busy controller writes a few lines per actuation and
    ``json.dumps`` was the larger part of formatting them; keys of any type, as ``json`` allows."""
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        kv = getattr(record, "kv", {}) or {}
        pairs = " ".join(f"{k}={_quoted(_masked(k, v))}" for k, v in kv.items())
        line = f"{ts}.{int(record.msecs):03d}Z {record.levelname[0]} {record.name}] {record.getMessage()}"
        if pairs:
            line += " " + pairs
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in (getattr(record, "kv", {}) or {}).items():
            doc.setdefault(k, _masked(k, v))
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup(verbosity: int = 2, fmt: LogFormat = "text", stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_for_verbosity(verbosity))
    # Library chatter stays out unless tracing.
    for noisy in ("aiohttp.access", "kubernetes_asyncio", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbosity < 6 else logging.DEBUG)


def setup_plain(level: int | str = logging.INFO) -> None:
    """Plain text lines on stderr, for the small processes in a Pod (stub, launcher, notifier),
    whose readers expect upstream's unadorned format rather than key-values."""
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
