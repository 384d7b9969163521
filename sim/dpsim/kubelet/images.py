"""Which local program a container image stands for: the simulated kubelet's "image store".

The simulated kubelet pulls nothing; it knows a small table of images and runs a local program
for each (this file is that table; add a rule to support another image):

- ``*/requester`` (any registry, any tag): the requester stub, ``dpctl requester``;
- ``vllm/vllm-openai`` (any registry prefix, any tag) started as ``vllm serve ...`` (or
  ``python -m vllm.entrypoints.openai.api_server ...``, or args only, the image's entrypoint
  being ``vllm serve``): the vLLM emulator, ``dpctl vllm-emulator serve <same arguments>``;
- ``*/dual-pods-controller``: dpctl itself, ``dpctl <command and args without a leading dpctl>``;
- ``*/launcher`` (upstream's launcher image, or dpctl's): ``dpctl launcher`` whatever the command
  (``uvicorn launcher:app --port 8001``, ``python3 launcher.py ...``), keeping its ``--port`` and
  ``--log-level``, with vLLM emulator instances; a command naming ``launcher_pod_notifier.py`` is
  the notifier sidecar, ``dpctl launcher-notifier``. The simulated node has GPUs (the
  ``nvidia-smi`` shim), so ``--mock-gpus``, meant for clusters without any, is dropped;
- CUDA base images (``nvcr.io/nvidia/cuda*``, ``nvidia/cuda``) and small utility images
  (busybox, ubuntu, debian, alpine): the pod's own command, if its program is on
  :data:`COMMAND_ALLOWLIST`.

The allowlist exists because these commands run on the host, not in a container: a command an
image would provide (``/app/server``, ``pip``) either does not exist here or is not what the image
meant, and running arbitrary host binaries by accident is worse than failing loudly. It is not a
security boundary: ``sh -c`` can still run anything, as a pod could in a real cluster.

Anything else fails as a real kubelet fails on an image it cannot pull (``ErrImagePull``, then
``ImagePullBackOff``), with a message that names the image and says why. The image also decides
the NVIDIA container runtime's default ``NVIDIA_VISIBLE_DEVICES``: ``all`` for CUDA-based images
(the CUDA and vLLM images set it in their image config), none for the rest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from dpctl.launcher.notifier import BASE_URL_ENV
from dpctl.podbuild.launcher import NOTIFIER_COMMAND

# Programs a utility image may run on the host; `nvidia-smi` resolves to the shim on PATH.
COMMAND_ALLOWLIST: Final = frozenset({"nvidia-smi", "sh", "bash", "echo", "sleep", "cat", "true", "env"})

_DOCKER_HUB: Final = "docker.io"
_VLLM_API_SERVER: Final = "vllm.entrypoints.openai.api_server"
_UTILITY_REPOS: Final = ("library/busybox", "library/ubuntu", "library/debian", "library/alpine")
# The notifier sidecar the launcher Pod builder adds, recognised by its script.
_NOTIFIER_SCRIPT: Final = os.path.basename(NOTIFIER_COMMAND[-1])
# The launcher flags that mean the same to dpctl's launcher; the rest (uvicorn's, --host: the
# launcher binds the Pod's address by itself) do not apply.
_LAUNCHER_FLAGS: Final = frozenset({"--port", "--log-level"})


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference, normalized as Docker does (``ubuntu`` is docker.io/library/ubuntu)."""

    registry: str
    repository: str
    tag: str
    digest: str

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def repo_is(self, suffix: str) -> bool:
        """The repository path is ``suffix`` or ends in ``/suffix``."""
        return self.repository == suffix or self.repository.endswith("/" + suffix)


def parse_image(image: str) -> ImageRef:
    ref = image.strip()
    digest = ""
    if "@" in ref:
        ref, digest = ref.split("@", 1)
    tag = ""
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        ref, tag = ref[:colon], ref[colon + 1 :]
    first, _, rest = ref.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = _DOCKER_HUB, ref
    if registry == _DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    return ImageRef(registry, repository.lower(), tag or ("" if digest else "latest"), digest)


@dataclass(frozen=True)
class Program:
    """What to execute: ``argv[0]`` is a path, or a name looked up on the container's PATH."""

    kind: str
    argv: tuple[str, ...]
    # NVIDIA_VISIBLE_DEVICES the image sets by default ("all" for CUDA images), None for none.
    default_visible_devices: str | None = None
    # Variables holding a URL whose loopback host means "this Pod": simulated containers share
    # the host's network, so the kubelet points them at the Pod's own address instead.
    loopback_env: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImageUnavailable:
    """The image has no local program: the container waits with ErrImagePull/ImagePullBackOff."""

    message: str


@dataclass(frozen=True)
class CommandRefused:
    """The image is known but the command is not runnable here: the container fails to start."""

    message: str


Resolution = Program | ImageUnavailable | CommandRefused


@dataclass(frozen=True)
class _Rule:
    kind: str
    matches: Callable[[ImageRef], bool]
    build: Callable[[ImageRef, Sequence[str], Sequence[str], str], Program | CommandRefused]
    default_visible_devices: str | None = None


def _requester(_: ImageRef, command: Sequence[str], args: Sequence[str], python: str) -> Program:
    # The command's first word names the stub binary, whatever the image calls it; the rest are flags.
    return Program("requester", (python, "-m", "dpctl", "requester", *command[1:], *args))


def _vllm(
    ref: ImageRef, command: Sequence[str], args: Sequence[str], python: str
) -> Program | CommandRefused:
    words = [*command, *args] if command else ["vllm", "serve", *args]
    rest = _strip_vllm_launcher(words)
    if rest is None:
        return CommandRefused(
            f"image {ref.name}: the simulated kubelet runs this image only as `vllm serve ...` or"
            f" `python -m {_VLLM_API_SERVER} ...`, not {' '.join(words)!r}"
        )
    return Program("vllm-emulator", (python, "-m", "dpctl", "vllm-emulator", "serve", *rest))


def _strip_vllm_launcher(words: Sequence[str]) -> list[str] | None:
    if len(words) >= 2 and os.path.basename(words[0]) == "vllm" and words[1] == "serve":
        return list(words[2:])
    is_python = bool(words) and os.path.basename(words[0]).startswith("python")
    if is_python and len(words) >= 3 and words[1] == "-m" and words[2] == _VLLM_API_SERVER:
        return list(words[3:])
    return None


def _controller(_: ImageRef, command: Sequence[str], args: Sequence[str], python: str) -> Program:
    # The image's entrypoint is `dpctl controller`; the chart may spell the command out in full.
    words = [*command, *args] if command else ["dpctl", "controller", *args]
    if words and os.path.basename(words[0]) == "dpctl":
        words = words[1:]
    return Program("dpctl", (python, "-m", "dpctl", *words))


def _launcher(_: ImageRef, command: Sequence[str], args: Sequence[str], python: str) -> Program:
    words = [*command, *args]
    if any(os.path.basename(w) == _NOTIFIER_SCRIPT for w in words):
        return Program(
            "launcher-notifier", (python, "-m", "dpctl", "launcher-notifier"), loopback_env=(BASE_URL_ENV,)
        )
    kept: list[str] = []
    for i, word in enumerate(words):
        flag, eq, _value = word.partition("=")
        if flag in _LAUNCHER_FLAGS:
            kept += [word] if eq else [word, *words[i + 1 : i + 2]]
    emulator = shlex.join([python, "-m", "dpctl", "vllm-emulator", "serve"])
    return Program("launcher", (python, "-m", "dpctl", "launcher", *kept, "--instance-command", emulator))


def _utility(ref: ImageRef, command: Sequence[str], args: Sequence[str], _: str) -> Program | CommandRefused:
    words = [*command, *args] if command else ["sh", *args]
    program = os.path.basename(words[0])
    if program not in COMMAND_ALLOWLIST:
        allowed = ", ".join(sorted(COMMAND_ALLOWLIST))
        return CommandRefused(
            f"image {ref.name}: the simulated kubelet runs commands on the host and only allows"
            f" {allowed}; {words[0]!r} is not one of them"
        )
    # By name, so the container's PATH (the nvidia-smi shim first) decides what runs.
    return Program("utility", (program, *words[1:]))


def _is_cuda(ref: ImageRef) -> bool:
    return ref.repository.startswith("nvidia/cuda") and ref.registry in ("nvcr.io", _DOCKER_HUB)


RULES: Final[tuple[_Rule, ...]] = (
    _Rule("requester", lambda r: r.repo_is("requester"), _requester),
    _Rule("vllm", lambda r: r.repo_is("vllm/vllm-openai"), _vllm, default_visible_devices="all"),
    _Rule("controller", lambda r: r.repo_is("dual-pods-controller"), _controller),
    _Rule("launcher", lambda r: r.repo_is("launcher"), _launcher, default_visible_devices="all"),
    _Rule("cuda", _is_cuda, _utility, default_visible_devices="all"),
    _Rule("utility", lambda r: r.repository in _UTILITY_REPOS, _utility),
)


def resolve(image: str, command: Sequence[str], args: Sequence[str], python: str) -> Resolution:
    """The program for a container, given its (already ``$(VAR)``-expanded) command and args."""
    ref = parse_image(image)
    for rule in RULES:
        if rule.matches(ref):
            built = rule.build(ref, command, args, python)
            if isinstance(built, Program) and rule.default_visible_devices is not None:
                return dataclasses.replace(built, default_visible_devices=rule.default_visible_devices)
            return built
    return ImageUnavailable(
        f'Failed to pull image "{image}": the simulated kubelet has no program for image'
        f" {ref.name} (it runs the requester, vLLM, dual-pods-controller, launcher, CUDA and small utility"
        " images only)"
    )


def image_id(image: str) -> str:
    """A stable stand-in for the digest a runtime reports (``imageID`` in container statuses)."""
    ref = parse_image(image)
    digest = ref.digest or "sha256:" + hashlib.sha256(image.encode()).hexdigest()
    return f"{ref.name}@{digest}"
