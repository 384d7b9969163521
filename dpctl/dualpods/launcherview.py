"""Read-only views of launcher Pods (launcher contract §1.2–§1.3), in the launcher path's terms.

A launcher is a Pod with the ``launcher-config-name`` label (`podview.is_launcher`); it is
bound when it carries the ``requester`` annotation (read by `podview.bound_requester`, the one
definition for every kind of provider). `bookkeeping` reads what a bound launcher records of its instance, so a restarted
controller carries on from the API alone (R15); `server_config` what an ISC asks for, and
`instance_port` where a listed instance serves. Nothing here mutates its input.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pydantic

from dpctl import api
from dpctl.dualpods import podview
from dpctl.dualpods.podview import RawObj
from dpctl.fma.v1alpha1 import InferenceServerConfigSpec, ModelServerConfig
from dpctl.launcher.api import InstanceState
from dpctl.podbuild.routing import RoutingMetadata


def launcher_config_name(launcher: Mapping[str, Any]) -> str:
    return podview.labels(launcher).get(api.LAUNCHER_CONFIG_NAME_LABEL, "")


def config_hash(launcher: Mapping[str, Any]) -> str:
    """The node-specific hash it was built with: equal means "built from this LC for this Node"."""
    return podview.annotations(launcher).get(api.LAUNCHER_CONFIG_HASH_ANNOTATION, "")


@dataclass(frozen=True)
class Bookkeeping:
    """What a bound launcher records of the instance it serves its requester with."""

    instance_id: str
    server_port: int
    vllm_config: Mapping[str, Any]  # the launch body, PUT again if the instance is gone
    routing: RoutingMetadata


class BookkeepingError(ValueError):
    """A bound launcher's records are missing or garbled; ``str()`` is the requester's status."""


def bookkeeping(launcher: Mapping[str, Any]) -> Bookkeeping:
    """The bound launcher's records; BookkeepingError names the first annotation that is not right."""
    found = podview.annotations(launcher)
    missing = next((k for k in api.BOOKKEEPING_ANNOTATIONS if not found.get(k)), None)
    if missing is not None:
        raise BookkeepingError(
            f"bound launcher Pod {json.dumps(podview.name(launcher))} is missing annotation {json.dumps(missing)}"
        )
    try:
        port = int(found[api.SERVER_PORT_ANNOTATION])
        if not 0 < port < 65536:
            raise ValueError(port)
        config = json.loads(found[api.VLLM_CONFIG_ANNOTATION])
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
        routing = RoutingMetadata.parse(found[api.ISC_ROUTING_METADATA_ANNOTATION])
    except ValueError as e:
        raise BookkeepingError(
            f"bound launcher Pod {json.dumps(podview.name(launcher))} has a garbled bookkeeping annotation: {e}"
        ) from e
    return Bookkeeping(found[api.INSTANCE_ID_ANNOTATION], port, config, routing)


def isc_spec(isc: RawObj) -> InferenceServerConfigSpec | str:
    """The ISC's spec, or why it cannot be used (for the requester's status)."""
    try:
        return InferenceServerConfigSpec.model_validate(isc.get("spec") or {})
    except pydantic.ValidationError as err:
        return f"InferenceServerConfig {json.dumps(podview.name(isc))} is malformed: {malformed(err)}"


def server_config(isc: RawObj) -> ModelServerConfig | None:
    """The ISC's ``modelServerConfig``; None when the spec is malformed."""
    spec = isc_spec(isc)
    return None if isinstance(spec, str) else spec.model_server_config


def instance_port(state: InstanceState) -> int | None:
    """The port an instance serves on, from its ``inference-port`` annotation (None: unreadable)."""
    raw = (state.annotations or {}).get(api.INFERENCE_PORT_KEY, "")
    try:
        port = int(raw)
    except ValueError:
        return None
    return port if 0 < port < 65536 else None


def malformed(err: pydantic.ValidationError) -> str:
    """A pydantic error in a few words for a status: each field and what is wrong with it."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in err.errors())
