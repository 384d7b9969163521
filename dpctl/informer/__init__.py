"""Generic Kubernetes informers: list+watch into an indexed, read-only cache with change handlers.

Owns caching and change delivery for any resource. May import :mod:`dpctl.kube`; knows nothing
about dual pods.
"""

from dpctl.informer.backoff import Backoff
from dpctl.informer.informer import Informer, Transform
from dpctl.informer.listwatch import ListerWatcher, kube_lister
from dpctl.informer.metrics import InformerMetrics, NoopInformerMetrics
from dpctl.informer.store import Changes, IndexFunc, Store
from dpctl.kube import RawObj
from dpctl.kube.objects import meta_namespace_key, resource_version

__all__ = [
    "Backoff",
    "Changes",
    "IndexFunc",
    "Informer",
    "InformerMetrics",
    "ListerWatcher",
    "NoopInformerMetrics",
    "RawObj",
    "Store",
    "Transform",
    "kube_lister",
    "meta_namespace_key",
    "resource_version",
]
