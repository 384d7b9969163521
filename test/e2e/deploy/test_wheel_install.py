"""The container images' install steps, without a container engine: build the dpctl wheel as the
Containerfile's builder stage does, install it with the ``nvml`` extra into a fresh virtualenv
(dependencies from the package index) as its runtime stage does, and run both entrypoints from
there. Also checks what the Containerfile declares: non-root user, entrypoints, ports; and that
the wheel carries none of the simulator (``sim/``, its own distribution).

Slow-ish (a wheel build and a dependency install), hence here rather than in the unit tests.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import wait_for

REPO = Path(__file__).resolve().parents[3]
CONTAINERFILE = REPO / "Containerfile"

pytestmark = pytest.mark.timeout(900)


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    workdir: Path  # outside the checkout, so nothing can import dpctl from the source tree

    @property
    def dpctl(self) -> Path:
        return self.venv / "bin" / "dpctl"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "POD_NAMESPACE")}
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return {**env, **extra}

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.dpctl), *args],
            check=False,
            cwd=self.workdir,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _check(cmd: list[str], what: str, cwd: Path | None = None) -> None:
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600, cwd=cwd)
    assert result.returncode == 0, (
        f"{what} failed ({' '.join(cmd)}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("wheel-install")
    wheels, venv, workdir = root / "wheels", root / "venv", root / "work"
    workdir.mkdir()
    # As the builder stage: `pip wheel --no-deps .`
    _check(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), str(REPO)],
        "building the wheel",
        cwd=root,
    )
    (wheel,) = wheels.glob("dpctl-*.whl")
    assert wheel.name.endswith("-py3-none-any.whl"), f"{wheel.name}: the wheel must be pure Python"
    # As the runtime stage: the wheel by path (PyPI's `dpctl` is another project), with [nvml].
    _check([sys.executable, "-m", "venv", str(venv)], "creating the virtualenv")
    _check(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"{wheel}[nvml]"],
        "installing the wheel",
        cwd=workdir,
    )
    yield Installed(wheel, venv, workdir)


def test_the_installed_package_is_the_wheel_not_the_checkout(installed: Installed) -> None:
    result = subprocess.run(
        [str(installed.venv / "bin" / "python"), "-c", "import dpctl, pynvml; print(dpctl.__file__)"],
        cwd=installed.workdir,
        env=installed.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    location = Path(result.stdout.strip()).resolve()
    assert installed.venv.resolve() in location.parents, location
    assert REPO not in location.parents


def test_the_wheel_and_its_install_carry_no_simulator(installed: Installed) -> None:
    files = zipfile.ZipFile(installed.wheel).namelist()
    assert [f for f in files if not f.startswith(("dpctl/", "dpctl-0.1.0.dist-info/"))] == []
    assert [f for f in files if f.startswith(("dpctl/localcluster/", "dpctl/emulator/"))] == []
    result = installed.run("--help")
    assert result.returncode == 0, result.stderr
    for simulated in ("local-cluster", "sim-kubelet", "sim-nvidia-smi", "vllm-emulator"):
        assert simulated not in result.stdout


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return e.code


def test_requester_entrypoint_serves_and_stops_on_sigterm(installed: Installed) -> None:
    probes, spi = _free_port(), _free_port()
    env = installed.env(PROBES_PORT=str(probes), SPI_PORT=str(spi), DPCTL_LISTEN_HOST="127.0.0.1")
    log = installed.workdir / "requester.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(installed.dpctl), "requester"], cwd=installed.workdir, env=env, stdout=out, stderr=out
        )
    try:
        # Not ready until the controller relays readiness: 503.
        wait_for(
            lambda: _status(f"http://127.0.0.1:{probes}/ready") == 503,
            60,
            f"GET /ready on :{probes} to answer 503 (log: {log})",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_controller_entrypoint_help(installed: Installed) -> None:
    result = installed.run("controller", "--help")
    assert result.returncode == 0, result.stderr
    for flag in ("--namespace", "--sleeper-limit", "--num-workers", "--metrics-port", "--leader-elect"):
        assert flag in result.stdout


def test_controller_without_a_namespace_exits_2_with_a_clear_message(installed: Installed) -> None:
    result = installed.run("controller")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "namespace" in result.stderr
    assert "POD_NAMESPACE" in result.stderr, result.stderr


def test_launcher_and_notifier_entrypoints_are_in_the_wheel(installed: Installed) -> None:
    result = installed.run("launcher", "--help")
    assert result.returncode == 0, result.stderr
    for flag in ("--port", "--mock-gpus", "--mock-gpu-count", "--instance-command", "--stop-grace-seconds"):
        assert flag in result.stdout
    # Without vLLM (not in the wheel's dependencies) and no instance command, it says what to give.
    result = installed.run("launcher")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--instance-command" in result.stderr
    result = installed.run("launcher-notifier")
    assert result.returncode == 2
    assert "POD_NAME" in result.stderr


# --- what the Containerfile declares --------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    user: str | None = None
    entrypoint: str | None = None
    cmd: str | None = None
    expose: str = ""


def stages() -> dict[str, Stage]:
    out: dict[str, Stage] = {}
    current: Stage | None = None
    # Joined continuation lines; comments dropped.
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest.strip(), re.IGNORECASE)
            assert m, line
            current = Stage(m.group(2) or f"#{len(out)}", m.group(1))
            out[current.name] = current
        elif current is None:
            continue
        elif word == "USER":
            current.user = rest.strip()
        elif word == "ENTRYPOINT":
            current.entrypoint, current.cmd = rest.strip(), None  # ENTRYPOINT resets an inherited CMD
        elif word == "CMD":
            current.cmd = rest.strip()
        elif word == "EXPOSE":
            current.expose = f"{current.expose} {rest.strip()}".strip()
    return out


def effective(all_stages: dict[str, Stage], name: str, attr: str) -> str | None:
    stage: Stage | None = all_stages[name]
    while stage is not None:
        value: str | None = getattr(stage, attr)
        if value is not None:
            return value
        stage = all_stages.get(stage.base)
    return None


def test_containerfile_user_lines_are_non_root() -> None:
    users = [
        line.split(None, 1)[1] for line in CONTAINERFILE.read_text().splitlines() if line.startswith("USER ")
    ]
    assert users, "the Containerfile sets no USER: the images would run as root"
    for user in users:
        uid, _, gid = user.partition(":")
        assert uid.isdigit() and int(uid) != 0, user  # numeric, so runAsNonRoot can verify it
        assert not gid or (gid.isdigit() and int(gid) != 0), user
    all_stages = stages()
    for target in ("requester", "launcher", "controller"):
        assert effective(all_stages, target, "user") == "65532:65532", target


def test_containerfile_targets() -> None:
    all_stages = stages()
    requester, controller = all_stages["requester"], all_stages["controller"]
    assert requester.entrypoint == '["dpctl", "requester"]'
    assert set(requester.expose.split()) == {"8080", "8081"}
    assert controller.entrypoint == '["dpctl"]' and controller.cmd == '["controller"]'
    assert controller.expose.split() == ["8002"]
    launcher = all_stages["launcher"]
    assert launcher.base == "${VLLM_IMAGE}"
    assert launcher.entrypoint == '["dpctl"]' and launcher.cmd == '["launcher"]'
    assert launcher.expose.split() == ["8001"]
    assert list(all_stages)[-1] == "controller", "the controller stays the default target"
    text = CONTAINERFILE.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.MULTILINE)
    assert all_stages["builder"].base == all_stages["base"].base == "${PYTHON_IMAGE}"
    assert "pip wheel --no-cache-dir --no-deps" in text
    assert "[nvml]" in text
