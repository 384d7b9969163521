"""Read-only views of the raw Pod and Node dicts the informers hold, in dual-pods terms.

Everything here is a pure function of one object: is it a requester or a runner, whom is a
runner bound to, which GPUs and port does it use, is its inference-server container running or
ready. Keeping these in one place means the reconcile flow reads like the contract rather than
like dict plumbing. Nothing here mutates its input. Metadata accessors are
:mod:`dpctl.kube.objects`' (re-exported here so a reader of the controller finds one vocabulary).
"""

from collections.abc import Mapping
from typing import Any

from dpctl import api
from dpctl.kube.objects import RawObj as RawObj
from dpctl.kube.objects import annotations as annotations
from dpctl.kube.objects import finalizers as finalizers
from dpctl.kube.objects import is_deleting as is_deleting
from dpctl.kube.objects import labels as labels
from dpctl.kube.objects import meta as meta
from dpctl.kube.objects import name as name
from dpctl.kube.objects import resource_version as resource_version
from dpctl.kube.objects import uid as uid


def is_requester(pod: Mapping[str, Any]) -> bool:
    """Carries a server-patch annotation, in either dialect (contract §2b), or names an
    InferenceServerConfig (the launcher path, launcher contract §4)."""
    found = annotations(pod)
    return bool(api.dialects_of(found)) or api.INFERENCE_SERVER_CONFIG_ANNOTATION in found


def wants_launcher(requester: Mapping[str, Any]) -> bool:
    """Asks for a server from a launcher: it carries the InferenceServerConfig annotation (one
    that carries a server-patch too is refused before anything else, in `decide`)."""
    return api.INFERENCE_SERVER_CONFIG_ANNOTATION in annotations(requester)


def isc_name(requester: Mapping[str, Any]) -> str:
    return annotations(requester).get(api.INFERENCE_SERVER_CONFIG_ANNOTATION, "").strip()


def dialect(requester: Mapping[str, Any]) -> api.Dialect:
    """The dialect the controller answers a requester in: that of its server-patch annotation,
    and upstream's current one on the launcher path, which only that dialect has.

    A requester with both server-patch annotations is refused before anything else (`decide`);
    the original dialect is its answer's spelling only where one is needed, e.g. reading its
    admin port.
    """
    found = api.dialects_of(annotations(requester))
    if len(found) == 1:
        return found[0]
    return api.HEAD if not found and wants_launcher(requester) else api.ORIGINAL


def is_runner(pod: Mapping[str, Any]) -> bool:
    """A server-running Pod of the direct path (built from a server-patch)."""
    return api.NOMINAL_ANNOTATION in annotations(pod)


def is_launcher(pod: Mapping[str, Any]) -> bool:
    """A launcher Pod (launcher contract §1.2): it runs vLLM instances on request."""
    return bool(labels(pod).get(api.LAUNCHER_CONFIG_NAME_LABEL))


def is_provider(pod: Mapping[str, Any]) -> bool:
    """A server-providing Pod of either kind: a direct runner or a launcher."""
    return is_runner(pod) or is_launcher(pod)


def bound_requester(provider: Mapping[str, Any]) -> tuple[str, str] | None:
    """(UID, name) of the requester a runner or launcher is bound to, or None when unbound."""
    value = annotations(provider).get(api.REQUESTER_ANNOTATION)
    if not value:
        return None
    req_uid, _, req_name = value.partition(" ")
    return req_uid, req_name


def nominal_hash(runner: Mapping[str, Any]) -> str:
    return annotations(runner).get(api.NOMINAL_ANNOTATION, "")


def spec(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    s = pod.get("spec")
    return s if isinstance(s, Mapping) else {}


def status(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    s = obj.get("status")
    return s if isinstance(s, Mapping) else {}


def node_name(pod: Mapping[str, Any]) -> str:
    return str(spec(pod).get("nodeName") or "")


def runner_node(runner: Mapping[str, Any]) -> str:
    """The Node a runner is pinned to (its nodeSelector), known before it is scheduled."""
    selector = spec(runner).get("nodeSelector")
    if isinstance(selector, Mapping) and selector.get(api.HOSTNAME_LABEL):
        return str(selector[api.HOSTNAME_LABEL])
    return node_name(runner)


def pod_ip(pod: Mapping[str, Any]) -> str:
    return str(status(pod).get("podIP") or "")


def _container(pod: Mapping[str, Any], container: str) -> Mapping[str, Any] | None:
    for c in spec(pod).get("containers") or []:
        if isinstance(c, Mapping) and c.get("name") == container:
            return c
    return None


def container_status(
    pod: Mapping[str, Any], container: str = api.INFERENCE_SERVER_CONTAINER
) -> Mapping[str, Any]:
    for cs in status(pod).get("containerStatuses") or []:
        if isinstance(cs, Mapping) and cs.get("name") == container:
            return cs
    return {}


def container_running(pod: Mapping[str, Any], container: str = api.INFERENCE_SERVER_CONTAINER) -> bool:
    state = container_status(pod, container).get("state")
    return isinstance(state, Mapping) and "running" in state


def container_ready(pod: Mapping[str, Any], container: str = api.INFERENCE_SERVER_CONTAINER) -> bool:
    return bool(container_status(pod, container).get("ready"))


def container_started_at(pod: Mapping[str, Any], container: str = api.INFERENCE_SERVER_CONTAINER) -> str:
    state = container_status(pod, container).get("state")
    if isinstance(state, Mapping) and isinstance(state.get("running"), Mapping):
        return str(state["running"].get("startedAt") or "")
    return ""


def restart_count(pod: Mapping[str, Any], container: str = api.INFERENCE_SERVER_CONTAINER) -> int:
    value = container_status(pod, container).get("restartCount")
    return value if isinstance(value, int) else 0


def pod_ready(pod: Mapping[str, Any]) -> bool:
    for cond in status(pod).get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def in_trouble(runner: Mapping[str, Any]) -> bool:
    """Restarted and not ready: a crash-looping or wedged inference server (contract §5)."""
    return restart_count(runner) > 0 and not pod_ready(runner)


def server_port(runner: Mapping[str, Any]) -> int | None:
    """The inference server's port: its readiness probe's httpGet port (an int, or ``http``)."""
    container = _container(runner, api.INFERENCE_SERVER_CONTAINER)
    probe = container.get("readinessProbe") if container else None
    http_get = probe.get("httpGet") if isinstance(probe, Mapping) else None
    port = http_get.get("port") if isinstance(http_get, Mapping) else None
    if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
        return port
    if port in ("http", "HTTP"):
        return 80
    return None


def gpu_indices(runner: Mapping[str, Any]) -> list[int]:
    """The GPU indices a runner was pointed at (its inference-server's ``CUDA_VISIBLE_DEVICES``)."""
    container = _container(runner, api.INFERENCE_SERVER_CONTAINER)
    for env in (container or {}).get("env") or []:
        if isinstance(env, Mapping) and env.get("name") == "CUDA_VISIBLE_DEVICES":
            try:
                return [int(part) for part in str(env.get("value") or "").split(",") if part.strip()]
            except ValueError:
                return []
    return []


def admin_port(requester: Mapping[str, Any]) -> int:
    """The requester's SPI port from its annotation; raises ValueError with a user-facing reason."""
    key = dialect(requester).admin_port
    raw = annotations(requester).get(key)
    if raw is None or raw == "":
        return api.DEFAULT_ADMIN_PORT
    try:
        port = int(raw.strip())
    except ValueError:
        raise ValueError(f"annotation {key}={raw!r} is not a port number") from None
    if not 0 < port < 65536:
        raise ValueError(f"annotation {key}={raw!r} is out of range (1-65535)")
    return port


def runner_finalizers(runner: Mapping[str, Any]) -> list[str]:
    """The bound-runner finalizers a Pod carries, of either dialect (another controller version
    may have bound it)."""
    return [f for f in finalizers(runner) if f in api.RUNNER_FINALIZERS]


def manager_time(pod: Mapping[str, Any], manager: str = api.FIELD_MANAGER) -> str:
    """When ``manager`` last changed the object (RFC 3339), else its creation time.

    This is the "last used" clock of the sleeper-limit LRU: the controller writes a runner each
    time it binds or unbinds it.
    """
    latest = ""
    for entry in meta(pod).get("managedFields") or []:
        if isinstance(entry, Mapping) and entry.get("manager") == manager:
            latest = max(latest, str(entry.get("time") or ""))
    return latest or str(meta(pod).get("creationTimestamp") or "")


def node_unschedulable(node: Mapping[str, Any]) -> bool:
    return bool(spec(node).get("unschedulable"))


def status_errors(requester: Mapping[str, Any]) -> tuple[str, ...]:
    """The errors the requester's status annotation reports (contract §3)."""
    key = dialect(requester).status
    raw = annotations(requester).get(key)
    if not raw:
        return ()
    try:
        return api.RequesterStatus.model_validate_json(raw).errors
    except ValueError:
        # The controller only ever writes valid JSON; someone else wrote this one.
        return (f"annotation {key} is not the controller's JSON: {raw[:200]!r}",)


def sleeping_label(runner: Mapping[str, Any]) -> str | None:
    """The FYI label the controller sets for routing: "true", "false", or absent."""
    return labels(runner).get(api.SLEEPING_LABEL)


def asleep(runner: Mapping[str, Any]) -> bool:
    """Whether the runner's server sleeps: the FYI label when set, else unbound means asleep.

    The label is the better witness: the controller flips it to ``false`` only after ``/wake_up``
    succeeded and to ``true`` before ``/sleep``, so a runner being bound or unbound reads right.
    """
    label = sleeping_label(runner)
    if label in ("true", "false"):
        return label == "true"
    return bound_requester(runner) is None
