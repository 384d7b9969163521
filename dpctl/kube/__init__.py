"""A raw-JSON Kubernetes API client: :class:`Kube` and the vocabulary its callers share.

Modules, each owning one job:

* :mod:`~dpctl.kube.transport`: the connection (credentials, TLS, proxy, session); the only
  module that uses kubernetes-asyncio's client and config loaders.
* :mod:`~dpctl.kube.request`: what a call sends (resource paths, queries, DeleteOptions, patch
  content types) and how a watch line reads; pure.
* :mod:`~dpctl.kube.errors`: :class:`ApiError` and the one :func:`is_transient`.
* :mod:`~dpctl.kube.objects`: :data:`RawObj` and the metadata accessors.
* :mod:`~dpctl.kube.ratelimit`: :class:`TokenBucket`, the client-side limit on calls.
* :mod:`~dpctl.kube.client`: :class:`Kube`, the verbs over the transport.

The names below are the package's public surface, importable as ``from dpctl.kube import ...``.
"""

from dpctl.kube.client import Kube, Observer
from dpctl.kube.errors import ApiError, is_transient
from dpctl.kube.objects import RawObj
from dpctl.kube.ratelimit import TokenBucket
from dpctl.kube.request import (
    CONFIGMAPS,
    CORE_EVENTS,
    DEFAULT_TIMEOUT_S,
    LEASES,
    NAMESPACES,
    NODES,
    PODS,
    REPLICASETS,
    SECRETS,
    SERVICEACCOUNTS,
    PatchType,
    Resource,
)
from dpctl.kube.transport import env_proxy

__all__ = [
    "CONFIGMAPS",
    "CORE_EVENTS",
    "DEFAULT_TIMEOUT_S",
    "LEASES",
    "NAMESPACES",
    "NODES",
    "PODS",
    "REPLICASETS",
    "SECRETS",
    "SERVICEACCOUNTS",
    "ApiError",
    "Kube",
    "Observer",
    "PatchType",
    "RawObj",
    "Resource",
    "TokenBucket",
    "env_proxy",
    "is_transient",
]
