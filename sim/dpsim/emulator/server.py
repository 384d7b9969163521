"""The emulated vLLM server: its life (loading, awake, asleep) and its HTTP surface.

What the controller calls on a runner (contract §3) behaves as in vLLM: ``/health`` fails while
the model loads, and ``/is_sleeping`` is answered only once it has loaded (vLLM serves nothing
before; the launcher path's controller, which has no Pod readiness of the instance to go by, relies
on that); ``/sleep``, ``/wake_up`` and ``/is_sleeping`` exist only with
``--enable-sleep-mode`` and ``VLLM_SERVER_DEV_MODE=1``; sleeping or waking twice is harmless.
``/v1/models`` and a deterministic ``/v1/completions`` let users and tests see it serve. Every
change of GPU use (and of GPU memory: see the ledger) goes to the GPU ledger through the
server's ``GpuSeat``.

``Emulator`` binds nothing, so one process can host many (a future hollow kubelet); the loading
timer runs while the app returned by ``make_emulator_app`` runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from aiohttp import web

from dpctl.api import HEALTH_PATH, IS_SLEEPING_PATH, SLEEP_PATH, WAKE_UP_PATH
from dpctl.faults import Faults
from dpsim.emulator.args import ServeArgs
from dpsim.emulator.devices import GpuSeat, cuda_oom_message
from dpsim.emulator.ledger import Violation

EMULATED_VLLM_VERSION: Final = "0.10.2"

DEV_MODE_ENV: Final = "VLLM_SERVER_DEV_MODE"
STARTUP_DELAY_ENV: Final = "VLLM_EMULATOR_STARTUP_DELAY"
SLEEP_DELAY_ENV: Final = "VLLM_EMULATOR_SLEEP_DELAY"
WAKE_DELAY_ENV: Final = "VLLM_EMULATOR_WAKE_DELAY"
OOM_ON_CONFLICT_ENV: Final = "VLLM_EMULATOR_OOM_ON_CONFLICT"
# Seconds the memory a server gives up on sleep or exit stays in use: a server that has not
# released its memory yet (the controller's memory guard before wake must wait for it).
MEMORY_RELEASE_DELAY_ENV: Final = "VLLM_EMULATOR_MEMORY_RELEASE_DELAY"
DEFAULT_STARTUP_DELAY_S: Final = 2.0
DEFAULT_SLEEP_DELAY_S: Final = 0.2
DEFAULT_WAKE_DELAY_S: Final = 0.2

MODELS_PATH: Final = "/v1/models"
COMPLETIONS_PATH: Final = "/v1/completions"
_DEFAULT_MAX_TOKENS: Final = 16
_DEFAULT_MAX_MODEL_LEN: Final = 4096
_WORDS: Final = ("the", "model", "is", "emulated", "and", "answers", "with", "words", "from", "a", "hash")


@dataclass(frozen=True)
class EmulatorConfig:
    args: ServeArgs
    dev_mode: bool
    startup_delay_s: float = DEFAULT_STARTUP_DELAY_S
    sleep_delay_s: float = DEFAULT_SLEEP_DELAY_S
    wake_delay_s: float = DEFAULT_WAKE_DELAY_S
    oom_on_conflict: bool = False
    memory_release_delay_s: float = 0.0

    @classmethod
    def from_env(cls, args: ServeArgs, env: Mapping[str, str]) -> EmulatorConfig:
        """Raises ValueError naming a variable with a bad value."""
        return cls(
            args=args,
            dev_mode=_flag(env, DEV_MODE_ENV),
            startup_delay_s=_seconds(env, STARTUP_DELAY_ENV, DEFAULT_STARTUP_DELAY_S),
            sleep_delay_s=_seconds(env, SLEEP_DELAY_ENV, DEFAULT_SLEEP_DELAY_S),
            wake_delay_s=_seconds(env, WAKE_DELAY_ENV, DEFAULT_WAKE_DELAY_S),
            oom_on_conflict=_flag(env, OOM_ON_CONFLICT_ENV),
            memory_release_delay_s=_seconds(env, MEMORY_RELEASE_DELAY_ENV, 0.0),
        )

    @property
    def sleep_endpoints(self) -> bool:
        return self.args.enable_sleep_mode and self.dev_mode


def _flag(env: Mapping[str, str], name: str) -> bool:
    # vLLM reads its boolean variables as "1" / "true".
    return env.get(name, "").strip().lower() in ("1", "true")


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    value = env.get(name)
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a number of seconds") from None
    if not 0 <= seconds < float("inf"):
        raise ValueError(f"{name}={value!r} is not a number of seconds")
    return seconds


class Phase(StrEnum):
    LOADING = "loading"
    AWAKE = "awake"
    ASLEEP = "asleep"


class NotLoadedError(Exception):
    """The model is still loading."""


class WakeRefusedError(Exception):
    """The wake failed like a CUDA out-of-memory; the message says so."""


class Emulator:
    """One emulated vLLM server. Sleep and wake are serialised, as vLLM's engine serialises them."""

    def __init__(
        self, config: EmulatorConfig, seat: GpuSeat | None, log: logging.Logger | None = None
    ) -> None:
        self.config = config
        self.seat = seat
        self.log = log or logging.getLogger("vllm.entrypoints.openai.api_server")
        self.phase = Phase.LOADING
        # Set once loading is done: vLLM answers nothing before (its socket is bound but not
        # served until the engine is up), which is what a launcher's controller waits on.
        self.loaded = asyncio.Event()
        self.created = int(time.time())
        self._transition = asyncio.Lock()

    async def take_gpus(self) -> bool:
        """Start using the GPUs, as loading a model does; False where CUDA would run out of memory."""
        if self.seat is None:
            return True
        violations = await self.seat.start()
        self._report(violations)
        if violations and self.seat.refuse_conflict:
            self.log.error("%s", cuda_oom_message(violations))
            return False
        return True

    async def release_gpus(self) -> None:
        if self.seat is not None:
            await self.seat.exit()

    async def load(self) -> None:
        started = time.monotonic()
        await asyncio.sleep(self.config.startup_delay_s)
        self.phase = Phase.AWAKE
        self.loaded.set()
        self.log.info("Model loading took 0.0 GiB and %.6f seconds (emulated)", time.monotonic() - started)
        self.log.info("Application startup complete.")

    async def sleep(self, level: int) -> None:
        """Raises NotLoadedError."""
        async with self._transition:
            if self.phase is Phase.LOADING:
                raise NotLoadedError
            if self.phase is Phase.ASLEEP:
                return
            started = time.monotonic()
            await asyncio.sleep(self.config.sleep_delay_s)
            if self.seat is not None:
                await self.seat.sleep()
            self.phase = Phase.ASLEEP
            self.log.info("Sleep mode (level %d) freed the GPU memory of this server (emulated)", level)
            self.log.info("It took %.6f seconds to fall asleep.", time.monotonic() - started)

    async def wake(self) -> None:
        """Raises NotLoadedError, or WakeRefusedError when another server is awake on a GPU."""
        async with self._transition:
            if self.phase is Phase.LOADING:
                raise NotLoadedError
            if self.phase is Phase.AWAKE:
                return
            started = time.monotonic()
            # Memory is taken as the wake begins, so a conflict shows before the delay.
            if self.seat is not None:
                violations = await self.seat.wake()
                self._report(violations)
                if violations and self.seat.refuse_conflict:
                    raise WakeRefusedError(cuda_oom_message(violations))
            await asyncio.sleep(self.config.wake_delay_s)
            self.phase = Phase.AWAKE
            self.log.info("It took %.6f seconds to wake up.", time.monotonic() - started)

    def _report(self, violations: list[Violation]) -> None:
        for v in violations:
            self.log.warning("GPU conflict recorded in the GPU ledger: %s", v)


_EMULATOR: Final = web.AppKey("emulator", Emulator)


def make_emulator_app(emulator: Emulator, faults: Faults | None = None) -> web.Application:
    app = web.Application()
    if faults is not None:
        faults.install(app)
    app[_EMULATOR] = emulator
    app.router.add_get(HEALTH_PATH, _health)
    app.router.add_get(MODELS_PATH, _models)
    app.router.add_post(COMPLETIONS_PATH, _completions)
    if emulator.config.sleep_endpoints:
        app.router.add_post(SLEEP_PATH, _sleep)
        app.router.add_post(WAKE_UP_PATH, _wake_up)
        app.router.add_get(IS_SLEEPING_PATH, _is_sleeping)
    app.cleanup_ctx.append(_loading)
    return app


async def _loading(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[_EMULATOR].load())
    yield
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task


def _error(status: int, kind: str, message: str) -> web.Response:
    """An error in vLLM's OpenAI-style shape."""
    body = {"object": "error", "message": message, "type": kind, "param": None, "code": status}
    return web.json_response(body, status=status)


def _not_loaded() -> web.Response:
    return _error(503, "ServiceUnavailableError", "The model is still loading.")


async def _health(request: web.Request) -> web.Response:
    if request.app[_EMULATOR].phase is Phase.LOADING:
        return web.Response(status=503, text="loading the model")
    return web.Response()


async def _sleep(request: web.Request) -> web.Response:
    level = request.query.get("level", "1")
    if level not in ("1", "2"):
        return _error(400, "BadRequestError", f"sleep level must be 1 or 2, not {level!r}")
    try:
        await request.app[_EMULATOR].sleep(int(level))
    except NotLoadedError:
        return _not_loaded()
    return web.Response()


async def _wake_up(request: web.Request) -> web.Response:
    try:
        await request.app[_EMULATOR].wake()
    except NotLoadedError:
        return _not_loaded()
    except WakeRefusedError as e:
        request.app[_EMULATOR].log.error("Failed to wake up: %s", e)
        return _error(500, "InternalServerError", str(e))
    return web.Response()


async def _is_sleeping(request: web.Request) -> web.Response:
    # Not answered while the model loads, as vLLM's is not: a launcher's instance is known awake
    # (and its requester told ready) only once it serves, not when its process has started.
    emulator = request.app[_EMULATOR]
    await emulator.loaded.wait()
    return web.json_response({"is_sleeping": emulator.phase is Phase.ASLEEP})


async def _models(request: web.Request) -> web.Response:
    emulator = request.app[_EMULATOR]
    args = emulator.config.args
    cards: list[dict[str, Any]] = [
        {
            "id": name,
            "object": "model",
            "created": emulator.created,
            "owned_by": "vllm",
            "root": args.model,
            "parent": None,
            "max_model_len": args.max_model_len or _DEFAULT_MAX_MODEL_LEN,
            "permission": [],
        }
        for name in args.names
    ]
    return web.json_response({"object": "list", "data": cards})


async def _completions(request: web.Request) -> web.Response:
    emulator = request.app[_EMULATOR]
    if emulator.phase is not Phase.AWAKE:
        return _error(503, "ServiceUnavailableError", f"The server is {emulator.phase}, not serving.")
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, "BadRequestError", "The request body is not JSON.")
    parsed = _completion_request(body, emulator.config.args)
    if isinstance(parsed, web.Response):
        return parsed
    model, prompts, max_tokens = parsed
    choices = [
        {
            "index": i,
            "text": _text_for(p, max_tokens),
            "logprobs": None,
            "finish_reason": "length",
            "stop_reason": None,
        }
        for i, p in enumerate(prompts)
    ]
    prompt_tokens = sum(len(p.split()) for p in prompts)
    return web.json_response(
        {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": max_tokens * len(prompts),
                "total_tokens": prompt_tokens + max_tokens * len(prompts),
            },
        }
    )


def _completion_request(body: Any, args: ServeArgs) -> tuple[str, list[str], int] | web.Response:
    """The model, prompts and token count asked for, or the error response vLLM would give."""
    if not isinstance(body, dict):
        return _error(400, "BadRequestError", "The request body must be a JSON object.")
    model = body.get("model") or args.names[0]
    if model not in args.names:
        return _error(404, "NotFoundError", f"The model `{model}` does not exist.")
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        return _error(400, "BadRequestError", "prompt must be a string or a non-empty list of strings.")
    max_tokens = body.get("max_tokens", _DEFAULT_MAX_TOKENS)
    limit = args.max_model_len or _DEFAULT_MAX_MODEL_LEN
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 0 < max_tokens <= limit:
        return _error(400, "BadRequestError", f"max_tokens must be an integer in 1..{limit}.")
    return model, prompts, max_tokens


def _text_for(prompt: str, max_tokens: int) -> str:
    """The same words for the same prompt, every time and on every server."""
    digest = b""
    while len(digest) < max_tokens:
        digest += hashlib.sha256(prompt.encode() + len(digest).to_bytes(4, "big")).digest()
    return "".join(" " + _WORDS[b % len(_WORDS)] for b in digest[:max_tokens])
