"""The recipe as typed, with real images: build and push them with the Makefile, check what was
pushed, then run Examples 1 and 7 with the controller and the requesters as real containers.

A registry (``registry``, built by ``hack/images/setup.sh``) serves on a free loopback port;
``make build-requester push-requester build-controller CONTAINER_IMG_REG=127.0.0.1:<port>/fma``
builds the ``Containerfile`` on the test-only base image (``PYTHON_IMAGE``, as no public registry
is reachable here) and pushes both images. crane reads them back: entrypoint, user 65532, ports,
and no simulator code inside. The recipe's cases of ``test_cycle`` then run again with the
chart's ``--set Image=<pushed controller>`` and ``mkrs``'s ``${CONTAINER_IMG_REG}/requester:latest``
(the ``controller_image`` and ``requester_image`` fixtures below); the simulated kubelet runs those
images under podman (the session's ``--podman-images 127.0.0.1:``), pulled from the registry,
while runners stay emulator processes. A requester whose image is not in the registry fails to
pull as on a real node.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dpctl import api
from dpctl.api import LISTEN_HOST_ENV
from dpctl.gpuenv import NVIDIA_VISIBLE_DEVICES_ENV
from dpsim.kubelet import images
from dpsim.kubelet.podman import NAME_PREFIX
from e2e.conftest import PODMAN_IMAGES, podman_config
from e2e.recipe import Kubectl, ServerPatch, mkrs, name_of, requesters_of, runners, unique_name
from helpers import wait_for

from .conftest import REPO, Dpctlr, T
from .test_cycle import (
    test_example_1_requester_gets_a_runner_on_its_node_and_scaling_to_zero_leaves_a_sleeper as test_example_1_with_real_images,
)
from .test_cycle import (
    test_example_7_scale_up_on_the_same_gpu_wakes_and_binds_the_sleeping_runner as test_example_7_with_real_images,
)

__all__ = ["test_example_1_with_real_images", "test_example_7_with_real_images"]

# About images (or scraping), not the names on Pods: the recipe's dialect is enough.
ONE_DIALECT = True
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SETUP = REPO / "hack" / "images" / "setup.sh"
# Cold: apt, a debootstrap and two go installs (minutes); warm: checks only.
SETUP_TIMEOUT_S = 1800
# Two image builds and two pushes; ~25 s warm on 2 cores, pip's downloads the first time.
BUILD_TIMEOUT_S = 900
CALL_TIMEOUT_S = 60
UID = "65532"


@dataclass(frozen=True)
class Pushed:
    registry: str  # CONTAINER_IMG_REG
    requester: str
    controller: str
    crane: str

    def crane_json(self, *args: str) -> Any:
        return json.loads(_run([self.crane, *args, "--insecure"]))


def _run(argv: list[str], timeout: float = CALL_TIMEOUT_S, **kw: Any) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    assert done.returncode == 0, f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return str(done.stdout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def pushed(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushed]:
    """The recipe's image steps against a registry of our own on loopback."""
    if not cluster.is_local:
        pytest.skip("runs images in the local cluster's simulated kubelet (KUBECONFIG names another cluster)")
    settings = dict(line.split("=", 1) for line in _run([str(SETUP)], SETUP_TIMEOUT_S).splitlines())
    for name, path in podman_config().items():
        assert settings[name] == str(path), f"setup.sh wrote {settings[name]}, the kubelet reads {path}"
    work = tmp_path_factory.mktemp("registry")
    port = _free_port()
    (work / "config.yml").write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {work / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = (work / "registry.log").open("wb")
    registry = subprocess.Popen(
        [settings["REGISTRY"], "serve", str(work / "config.yml")],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    reg = f"127.0.0.1:{port}/fma"
    controller = ""
    try:
        wait_for(lambda: _answers(port), 30, f"the registry on 127.0.0.1:{port}")
        assert reg.startswith(PODMAN_IMAGES), "the kubelet would run these images as processes"
        out = _run(
            [
                "make",
                "--no-print-directory",  # under `make test` a sub-make would print "Leaving directory" last
                "build-requester",
                "push-requester",
                "build-controller",
                f"CONTAINER_IMG_REG={reg}",
                f"PYTHON_IMAGE={settings['PYTHON_IMAGE']}",
            ],
            BUILD_TIMEOUT_S,
            cwd=REPO,
            env={**os.environ, "MAKEFLAGS": ""},
        )
        controller = out.strip().splitlines()[-1]  # build-controller prints the reference last
        assert controller.startswith(f"{reg}/dual-pods-controller:"), out[-2000:]
        yield Pushed(reg, f"{reg}/requester:latest", controller, settings["CRANE"])
    finally:
        # The tags of this registry's port are of no use after it (the layers stay, shared).
        subprocess.run(
            ["podman", "rmi", "--force", f"{reg}/requester:latest", *([controller] if controller else [])],
            capture_output=True,
            timeout=CALL_TIMEOUT_S,
            check=False,
        )
        registry.send_signal(signal.SIGTERM)
        registry.wait(timeout=30)
        log.close()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def controller_image(pushed: Pushed) -> str:
    return pushed.controller


@pytest.fixture
def requester_image(pushed: Pushed) -> str:
    return pushed.requester


@pytest.mark.parametrize(
    ("image", "entrypoint", "cmd", "ports"),
    [
        ("requester", ["dpctl", "requester"], None, {"8080/tcp", "8081/tcp"}),
        ("controller", ["dpctl"], ["controller"], {"8002/tcp"}),
    ],
)
def test_the_pushed_images_are_what_the_containerfile_says(
    pushed: Pushed, tmp_path: Path, image: str, entrypoint: list[str], cmd: list[str] | None, ports: set[str]
) -> None:
    ref = pushed.requester if image == "requester" else pushed.controller
    config = pushed.crane_json("config", ref)["config"]
    assert config["Entrypoint"] == entrypoint
    assert config.get("Cmd") == cmd
    assert config["User"] == f"{UID}:{UID}"
    assert set(config["ExposedPorts"]) == ports
    # The flattened filesystem: dpctl is installed, the simulator is not.
    fs = tmp_path / "fs.tar"
    _run([pushed.crane, "export", ref, str(fs), "--insecure"], BUILD_TIMEOUT_S)
    with tarfile.open(fs) as tar:
        names = tar.getnames()
    assert any(n.endswith("-packages/dpctl/__init__.py") for n in names), "no dpctl package in the image"
    assert not [n for n in names if "dpsim" in n or "dpctl_sim" in n], "simulator code in the image"


def _container_of(pod: dict[str, Any]) -> dict[str, Any]:
    """What podman says of the Pod's one running container (its name is the container ID's)."""
    (status,) = pod["status"]["containerStatuses"]
    name = NAME_PREFIX + status["containerID"].rsplit("/", 1)[-1][:32]
    (info,) = json.loads(_run(["podman", "inspect", name]))
    return dict(info)


def test_the_controller_and_the_requesters_run_as_containers_of_the_pushed_images(
    kubectl: Kubectl, dpctlr: Dpctlr, pushed: Pushed, gpu_map: dict[str, dict[str, int]]
) -> None:
    rs = unique_name()
    kubectl.apply(mkrs(rs, ServerPatch(), image=pushed.requester))
    req = wait_for(
        lambda: (
            len(r := requesters_of(kubectl.pods(), rs)) == 1
            and (r[0].get("status") or {}).get("phase") == "Running"
            and dict(r[0])
        ),
        T,
        "the requester Running",
    )
    controller = dpctlr.pod()
    assert controller is not None
    for pod, ref in ((controller, pushed.controller), (req, pushed.requester)):
        (status,) = pod["status"]["containerStatuses"]
        # The image's digest as podman has it (the process runtime reports a hash of the name).
        (local,) = json.loads(_run(["podman", "image", "inspect", ref]))
        assert status["imageID"] in local["RepoDigests"], (status["imageID"], local["RepoDigests"])
        assert status["imageID"] != images.image_id(ref)
        info = _container_of(pod)
        assert info["State"]["Running"] is True
        assert info["HostConfig"]["NetworkMode"] == "host"
        mounts = {m["Destination"]: m for m in info["Mounts"]}
        assert "/var/run/secrets/kubernetes.io/serviceaccount" in mounts, mounts
        env = dict(e.split("=", 1) for e in info["Config"]["Env"])
        assert env[LISTEN_HOST_ENV] == pod["status"]["podIP"]
        assert "KUBECONFIG" not in env, "a real container uses its ServiceAccount, not a kubeconfig"
        assert not [k for k in env if k.startswith("DPCTL_SIM_")], "simulator variables in a real container"
    # The chart's securityContext: UID 65532, read-only root, no capabilities.
    info = _container_of(controller)
    assert info["Config"]["User"] == f"{UID}:{UID}"
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    assert "/tmp" in {m["Destination"] for m in info["Mounts"]}
    assert _container_of(req)["Config"]["User"] == f"{UID}:{UID}"  # the image's USER
    # No NVML, no nvidia-smi in the image: the GPUs come from the device plugin's variable, as in
    # a real container without the NVIDIA tools; the stub's log reaches `kubectl logs`.
    wait_for(
        lambda: "Discovered GPUs" in (out := kubectl.run("logs", name_of(req))) and out,
        T,
        "the stub's GPU discovery in its log",
    )
    assert f"via {NVIDIA_VISIBLE_DEVICES_ENV}" in kubectl.run("logs", name_of(req))
    events = kubectl.run("get", "events", "--field-selector", f"involvedObject.name={name_of(req)}")
    assert f'Successfully pulled image "{pushed.requester}"' in events, events


def _waiting(kubectl: Kubectl, rs: str) -> tuple[str, str] | None:
    reqs = requesters_of(kubectl.pods(), rs)
    if len(reqs) != 1:
        return None
    for s in (reqs[0].get("status") or {}).get("containerStatuses") or []:
        waiting = (s.get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            return str(waiting["reason"]), str(waiting.get("message", ""))
    return None


def test_a_requester_whose_image_is_not_in_the_registry_fails_to_pull_as_on_a_real_node(
    kubectl: Kubectl, dpctlr: Dpctlr, pushed: Pushed, gpu_map: dict[str, dict[str, int]]
) -> None:
    missing = f"{pushed.registry}/requester-missing:latest"
    rs = unique_name()
    kubectl.apply(mkrs(rs, ServerPatch(), image=missing))
    pulled = wait_for(
        lambda: (w := _waiting(kubectl, rs)) is not None and w[0] == "ErrImagePull" and w, T, "ErrImagePull"
    )
    assert "requester-missing" in pulled[1], pulled
    backoff = wait_for(
        lambda: (w := _waiting(kubectl, rs)) is not None and w[0] == "ImagePullBackOff" and w,
        T,
        "ImagePullBackOff",
    )
    assert backoff[1].startswith(f'Back-off pulling image "{missing}": ErrImagePull: '), backoff
    (req,) = requesters_of(kubectl.pods(), rs)
    described = kubectl.run("describe", "pod", name_of(req))
    assert "ImagePullBackOff" in described or "ErrImagePull" in described, described
    for line in (f'Pulling image "{missing}"', f'Failed to pull image "{missing}"', "Error: ErrImagePull"):
        assert line in described, f"{line!r} not in the Events:\n{described}"
    # Nothing else disturbed: the controller stays Ready and makes no runner for a requester
    # that never started.
    assert dpctlr.pod() is not None
    assert [name_of(r) for r in runners(kubectl.pods())] == []
    assert api.DUAL_LABEL not in (req["metadata"].get("labels") or {})
