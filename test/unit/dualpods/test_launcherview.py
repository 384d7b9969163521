"""What a launcher Pod says: is it one, of which LauncherConfig, and its bound instance's records."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dpctl import api
from dpctl.dualpods.launcherview import (
    BookkeepingError,
    bookkeeping,
    config_hash,
    launcher_config_name,
)
from dpctl.dualpods.podview import is_launcher
from dpctl.podbuild.routing import RoutingMetadata

BODY = {"options": "--model m --port 8005", "gpu_uuids": ["GPU-a"]}


def launcher(**annotations: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "launcher-lc-a-x1",
            "labels": {api.LAUNCHER_CONFIG_NAME_LABEL: "lc-a"},
            "annotations": {api.LAUNCHER_CONFIG_HASH_ANNOTATION: "h", **annotations},
        }
    }


BOUND = {
    api.REQUESTER_ANNOTATION: "uid-1 req-1",
    api.INSTANCE_ID_ANNOTATION: "Iabci",
    api.SERVER_PORT_ANNOTATION: "8005",
    api.VLLM_CONFIG_ANNOTATION: json.dumps(BODY),
    api.ISC_ROUTING_METADATA_ANNOTATION: '{"labels":{"model":"m"}}',
}


def test_a_launcher_is_known_by_its_config_label() -> None:
    assert is_launcher(launcher()) and launcher_config_name(launcher()) == "lc-a"
    assert config_hash(launcher()) == "h"
    assert not is_launcher({"metadata": {"labels": {"app": "x"}}})


def test_a_bound_launcher_s_records_read_back() -> None:
    kept = bookkeeping(launcher(**BOUND))
    assert (kept.instance_id, kept.server_port, dict(kept.vllm_config)) == ("Iabci", 8005, BODY)
    assert kept.routing == RoutingMetadata({"model": "m"}, {})


@pytest.mark.parametrize("key", api.BOOKKEEPING_ANNOTATIONS)
def test_a_missing_record_is_named_in_the_requester_s_words(key: str) -> None:
    records = {k: v for k, v in BOUND.items() if k != key}
    with pytest.raises(BookkeepingError) as e:
        bookkeeping(launcher(**records))
    assert str(e.value) == f'bound launcher Pod "launcher-lc-a-x1" is missing annotation "{key}"'


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (api.SERVER_PORT_ANNOTATION, "http"),
        (api.SERVER_PORT_ANNOTATION, "70000"),
        (api.VLLM_CONFIG_ANNOTATION, "[1]"),
        (api.ISC_ROUTING_METADATA_ANNOTATION, "{"),
    ],
)
def test_a_garbled_record_is_an_error_not_a_crash(key: str, value: str) -> None:
    with pytest.raises(BookkeepingError, match="garbled bookkeeping annotation"):
        bookkeeping(launcher(**{**BOUND, key: value}))
