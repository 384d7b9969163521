"""The parsed server patch is remembered per (text, Node), never shared between runners, and
errors are not remembered."""

from __future__ import annotations

from typing import Any

import pytest

from dpctl.api import ORIGINAL
from dpctl.podbuild import BuildError, build_runner, nominal, yamltext

PATCH = """\
spec:
  containers:
  - name: inference-server
    image: vllm/vllm-openai
    command: [vllm, serve, --port=8000]
    readinessProbe: {httpGet: {path: /health, port: 8000}}
    volumeMounts: [{name: local, mountPath: /m}]
  volumes:
  - {name: local, persistentVolumeClaim: {claimName: "vcp-{{ .NodeName }}"}}
"""


def requester(name: str, patch: str = PATCH) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"u-{name}",
            "annotations": {ORIGINAL.server_patch: patch},
        },
        "spec": {"containers": [{"name": "inference-server", "image": "stub"}]},
    }


def test_a_patch_text_is_parsed_once_per_node(monkeypatch: pytest.MonkeyPatch) -> None:
    nominal._server_patch.cache_clear()
    parsed: list[str] = []
    real = yamltext.load_yaml  # what nominal calls, until the test swaps it

    def counting(text: str) -> Any:
        parsed.append(text)
        return real(text)

    monkeypatch.setattr(nominal, "load_yaml", counting)
    a = build_runner(requester("a"), "node-1", [0], [])
    b = build_runner(requester("b"), "node-1", [1], [])
    c = build_runner(requester("c"), "node-2", [0], [])
    assert len(parsed) == 2  # node-1 once, node-2 once
    volumes = [r.pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] for r in (a, b, c)]
    assert volumes == ["vcp-node-1", "vcp-node-1", "vcp-node-2"]


def test_runners_do_not_share_what_the_cache_holds() -> None:
    first = build_runner(requester("a"), "node-1", [0], [])
    first.pod["spec"]["containers"][0]["command"].append("--changed")
    first.pod["spec"]["volumes"].clear()
    again = build_runner(requester("a"), "node-1", [0], [])
    assert again.pod["spec"]["containers"][0]["command"] == ["vllm", "serve", "--port=8000"]
    assert again.nominal_hash == build_runner(requester("b"), "node-1", [0], []).nominal_hash


def test_errors_are_raised_every_time() -> None:
    nominal._server_patch.cache_clear()
    bad = "spec: [unclosed"
    for _ in range(2):
        with pytest.raises(BuildError, match="invalid YAML"):
            build_runner(requester("a", bad), "node-1", [0], [])
