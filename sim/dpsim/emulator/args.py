"""The `vllm serve` command line, as far as the emulator needs it; every other flag is accepted.

A runner's command may carry any of vLLM's hundreds of flags, and the emulator must never fail on
one it does not know, so this is a tolerant hand parser rather than argparse. The flags it reads
are parsed as vLLM parses them: ``--flag=value`` or ``--flag value``, underscores or dashes, the
model positionally (winning over ``--model``, as in vLLM) or by ``--model``. An unknown flag takes
the next token as its value unless that token looks like a flag or the unknown flag is one of the
valueless vLLM switches listed here (so ``--trust-remote-code MODEL`` keeps MODEL as the model).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

DEFAULT_MODEL: Final = "Qwen/Qwen3-0.6B"  # vLLM's own default
DEFAULT_PORT: Final = 8000
DEFAULT_GPU_MEMORY_UTILIZATION: Final = 0.9
_T = TypeVar("_T")

USAGE: Final = (
    "usage: dpctl vllm-emulator serve [MODEL] [--model MODEL] [--port PORT] [--host HOST]\n"
    "                                 [--enable-sleep-mode] [--max-model-len N]\n"
    "                                 [--gpu-memory-utilization F] [--served-model-name NAME ...]\n"
    "                                 [any other vllm serve flag, accepted and ignored]"
)

_SLEEP_MODE = "--enable-sleep-mode"
_NO_SLEEP_MODE = "--no-enable-sleep-mode"
_SERVED_NAME = "--served-model-name"
_VALUED: Final = frozenset({"--model", "--port", "--host", "--max-model-len", "--gpu-memory-utilization"})
# vLLM flags that take no value: after them comes the next flag or the model, never their value.
_KNOWN_SWITCHES: Final = frozenset(
    {
        "--trust-remote-code",
        "--enforce-eager",
        "--disable-log-requests",
        "--enable-log-requests",
        "--disable-log-stats",
        "--enable-prefix-caching",
        "--enable-chunked-prefill",
        "--enable-auto-tool-choice",
        "--enable-lora",
        "--disable-custom-all-reduce",
        "--disable-frontend-multiprocessing",
        "--disable-fastapi-docs",
        "--headless",
    }
)


class ServeArgsError(ValueError):
    """The command line names a flag we read with a value vLLM would reject."""


@dataclass(frozen=True)
class ServeArgs:
    model: str = DEFAULT_MODEL
    served_model_names: tuple[str, ...] = ()
    host: str | None = None
    port: int = DEFAULT_PORT
    enable_sleep_mode: bool = False
    max_model_len: int | None = None
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION
    ignored: tuple[str, ...] = ()  # flags accepted without being understood
    help: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        """The names clients use for the model (vLLM: the served names, else the model)."""
        return self.served_model_names or (self.model,)


def parse_serve_args(argv: list[str]) -> ServeArgs:
    values: dict[str, str] = {}
    served: list[str] = []
    positional: list[str] = []
    ignored: list[str] = []
    sleep_mode = False
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if token in ("-h", "--help"):
            return ServeArgs(help=True)
        if not token.startswith("-") or _is_number(token):
            positional.append(token)
            continue
        name, eq, inline = token.partition("=")
        name = _normalise(name)
        if name in (_SLEEP_MODE, _NO_SLEEP_MODE):
            if eq:
                raise ServeArgsError(f"argument {name}: ignored explicit argument {inline!r}")
            sleep_mode = name == _SLEEP_MODE
        elif name == _SERVED_NAME:
            taken = [inline] if eq else _take_values(argv, i)
            i += 0 if eq else len(taken)
            served = taken
        elif name in _VALUED:
            if not eq and not (i < len(argv) and _is_value(argv[i])):
                raise ServeArgsError(f"argument {name}: expected one argument")
            values[name] = inline if eq else argv[i]
            i += 0 if eq else 1
        else:
            ignored.append(name)
            if _takes_next(name, eq) and i < len(argv) and _is_value(argv[i]):
                i += 1
    if len(positional) > 1:
        raise ServeArgsError(f"unrecognized arguments: {' '.join(positional[1:])}")
    return _build(values, positional, tuple(served), sleep_mode, tuple(ignored))


def _build(
    values: dict[str, str],
    positional: list[str],
    served: tuple[str, ...],
    sleep_mode: bool,
    ignored: tuple[str, ...],
) -> ServeArgs:
    port = _convert(values, "--port", int)
    if port is not None and not 0 <= port <= 65535:
        raise ServeArgsError(f"argument --port: {port} is not a TCP port")
    utilization = _convert(values, "--gpu-memory-utilization", float)
    if utilization is not None and not 0 < utilization <= 1:
        raise ServeArgsError(f"argument --gpu-memory-utilization: {utilization} is not in (0, 1]")
    return ServeArgs(
        model=positional[0] if positional else values.get("--model", DEFAULT_MODEL),
        served_model_names=served,
        host=values.get("--host") or None,
        port=DEFAULT_PORT if port is None else port,
        enable_sleep_mode=sleep_mode,
        max_model_len=_convert(values, "--max-model-len", int),
        gpu_memory_utilization=DEFAULT_GPU_MEMORY_UTILIZATION if utilization is None else utilization,
        ignored=ignored,
    )


def _convert(values: dict[str, str], name: str, kind: Callable[[str], _T]) -> _T | None:
    if name not in values:
        return None
    try:
        return kind(values[name])
    except ValueError:
        raise ServeArgsError(f"argument {name}: invalid value: {values[name]!r}") from None


def _normalise(flag: str) -> str:
    # vLLM's parser accepts --max_model_len for --max-model-len.
    return "--" + flag.lstrip("-").replace("_", "-") if flag.startswith("--") else flag


def _takes_next(unknown_flag: str, inline_equals: str) -> bool:
    """Whether an unknown flag takes the next token as its value."""
    if inline_equals or unknown_flag in _KNOWN_SWITCHES:
        return False
    # A short flag may carry its value: -O3, -O.level=3 (but -tp 2 does not).
    short = not unknown_flag.startswith("--")
    return not (short and (unknown_flag[-1].isdigit() or "." in unknown_flag))


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _is_value(token: str) -> bool:
    return not token.startswith("-") or _is_number(token)


def _take_values(argv: list[str], start: int) -> list[str]:
    taken: list[str] = []
    while start + len(taken) < len(argv) and _is_value(argv[start + len(taken)]):
        taken.append(argv[start + len(taken)])
    if not taken:
        raise ServeArgsError(f"argument {_SERVED_NAME}: expected at least one argument")
    return taken
