"""Image → program mapping: which images run what, with which default GPUs, and how others fail."""

from __future__ import annotations

import pytest

from dpsim.kubelet import images
from dpsim.kubelet.images import CommandRefused, ImageUnavailable, Program, parse_image, resolve
from dpsim.kubelet.launcher import own_address

PY = "/venv/bin/python"


@pytest.mark.parametrize(
    ("ref", "registry", "repository", "tag"),
    [
        ("ubuntu", "docker.io", "library/ubuntu", "latest"),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36"),
        ("vllm/vllm-openai:v0.10.2", "docker.io", "vllm/vllm-openai", "v0.10.2"),
        ("quay.io/x/fma/requester:latest", "quay.io", "x/fma/requester", "latest"),
        ("localhost:5000/a/requester", "localhost:5000", "a/requester", "latest"),
        ("registry.example/x/requester@sha256:abc", "registry.example", "x/requester", ""),
        ("nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04", "nvcr.io", "nvidia/cuda", "12.4.1-base-ubuntu22.04"),
    ],
)
def test_parse_image_normalizes_like_docker(ref: str, registry: str, repository: str, tag: str) -> None:
    parsed = parse_image(ref)
    assert (parsed.registry, parsed.repository, parsed.tag) == (registry, repository, tag)


@pytest.mark.parametrize(
    "image",
    ["quay.io/x/fma/requester:latest", "registry.example/x/requester:latest", "requester", "a/requester:v1"],
)
def test_any_requester_image_runs_the_stub_with_args(image: str) -> None:
    got = resolve(image, [], ["--flag=1"], PY)
    assert got == Program("requester", (PY, "-m", "dpctl", "requester", "--flag=1"))


def test_requester_command_word_is_replaced_and_its_flags_kept() -> None:
    got = resolve("quay.io/x/requester", ["/requester", "--a"], ["--b"], PY)
    assert isinstance(got, Program)
    assert got.argv == (PY, "-m", "dpctl", "requester", "--a", "--b")


def test_a_repository_merely_containing_requester_is_not_the_stub() -> None:
    assert isinstance(resolve("quay.io/x/requester-tools:1", [], [], PY), ImageUnavailable)


@pytest.mark.parametrize(
    ("command", "args"),
    [
        (["vllm", "serve", "--port=8000", "m"], []),
        (["vllm"], ["serve", "--port=8000", "m"]),
        (["python3", "-m", "vllm.entrypoints.openai.api_server", "--port=8000", "m"], []),
        ([], ["--port=8000", "m"]),
    ],
)
def test_vllm_image_runs_the_emulator_with_the_same_arguments(command: list[str], args: list[str]) -> None:
    got = resolve("docker.io/vllm/vllm-openai:v0.10.2", command, args, PY)
    assert got == Program(
        "vllm-emulator", (PY, "-m", "dpctl", "vllm-emulator", "serve", "--port=8000", "m"), "all"
    )


def test_vllm_image_with_another_command_is_refused_with_the_reason() -> None:
    got = resolve("vllm/vllm-openai:latest", ["bash", "-c", "vllm serve x"], [], PY)
    assert isinstance(got, CommandRefused)
    assert "vllm serve" in got.message


def test_controller_image_runs_dpctl_without_the_leading_word() -> None:
    got = resolve("quay.io/me/dual-pods-controller:abc", ["dpctl", "controller", "--sleeper-limit=2"], [], PY)
    assert got == Program("dpctl", (PY, "-m", "dpctl", "controller", "--sleeper-limit=2"))
    default = resolve("quay.io/me/dual-pods-controller:abc", [], ["--x"], PY)
    assert isinstance(default, Program)
    assert default.argv == (PY, "-m", "dpctl", "controller", "--x")


LAUNCHER = "ghcr.io/llm-d-incubation/llm-d-fast-model-actuation/launcher:v0.1.0"
EMULATOR = f"{PY} -m dpctl vllm-emulator serve"


@pytest.mark.parametrize(
    ("command", "args", "kept"),
    [
        (["uvicorn", "launcher:app", "--host", "0.0.0.0", "--port", "8001"], [], ["--port", "8001"]),
        (
            ["python3", "launcher.py"],
            ["--mock-gpus", "--mock-gpu-count=2", "--log-level=debug"],
            ["--log-level=debug"],
        ),
        ([], [], []),
    ],
)
def test_a_launcher_image_runs_dpctl_launcher_with_emulator_instances_whatever_its_command(
    command: list[str], args: list[str], kept: list[str]
) -> None:
    got = resolve(LAUNCHER, command, args, PY)
    assert got == Program(
        "launcher",
        (PY, "-m", "dpctl", "launcher", *kept, "--instance-command", EMULATOR),
        default_visible_devices="all",
    )


def test_the_launcher_image_s_notifier_command_is_the_sidecar_pointed_at_its_own_pod() -> None:
    got = resolve(LAUNCHER, ["python3", "/app/launcher_pod_notifier.py"], [], PY)
    assert isinstance(got, Program) and got.argv == (PY, "-m", "dpctl", "launcher-notifier")
    assert got.loopback_env == ("LAUNCHER_BASE_URL",)


def test_cuda_image_runs_allowlisted_commands_by_name_with_all_gpus() -> None:
    got = resolve(
        "nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04",
        ["/usr/bin/nvidia-smi", "--query-gpu=index,uuid"],
        [],
        PY,
    )
    assert got == Program("utility", ("nvidia-smi", "--query-gpu=index,uuid"), "all")


def test_utility_images_get_no_gpus_by_default() -> None:
    got = resolve("busybox", ["sh", "-c", "echo hi"], [], PY)
    assert got == Program("utility", ("sh", "-c", "echo hi"), None)


def test_commands_off_the_allowlist_are_refused() -> None:
    got = resolve("ubuntu:22.04", ["/app/server"], [], PY)
    assert isinstance(got, CommandRefused)
    assert "'/app/server'" in got.message
    assert "nvidia-smi" in got.message


def test_unknown_images_fail_like_a_pull_naming_the_image() -> None:
    got = resolve("quay.io/nobody/mystery:1.0", [], [], PY)
    assert isinstance(got, ImageUnavailable)
    assert 'Failed to pull image "quay.io/nobody/mystery:1.0"' in got.message
    assert "no program" in got.message


def test_image_id_is_stable_and_digest_shaped() -> None:
    a = images.image_id("busybox")
    assert a == images.image_id("busybox")
    assert a.startswith("docker.io/library/busybox@sha256:")
    assert images.image_id("x.io/a/b@sha256:1234") == "x.io/a/b@sha256:1234"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8001", "http://127.64.0.9:8001"),
        ("http://localhost:8001/x", "http://127.64.0.9:8001/x"),
        ("http://launcher.example:8001", "http://launcher.example:8001"),
    ],
)
def test_a_loopback_url_means_the_pod_s_own_address(url: str, expected: str) -> None:
    assert own_address(url, "127.64.0.9") == expected
