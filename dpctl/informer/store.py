"""The informer's cache: objects by key, plus named secondary indexes kept current on every change.

Owns the key → object map and the index → value → keys sets (client-go's ``threadSafeMap`` and
``storeIndex``). Every mutation is synchronous, so on one event loop readers never see a
half-applied change. Does not own list/watch or event delivery (``informer.py``).

Objects are shared, not copied: the store never changes an object it holds (a change replaces it
with a new dict), and **callers must not mutate what they get** — ``copy.deepcopy`` before
building an update. Results of ``list``/``by_index``/``keys`` come in no particular order.

Cost: an add/update/delete is O(indexes * values per object); an index value whose
set becomes empty is removed, so short-lived high-cardinality values do not pile up.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from dpctl.kube import RawObj
from dpctl.kube.objects import meta_namespace_key, resource_version

IndexFunc = Callable[[RawObj], Iterable[str]]

_log = logging.getLogger(__name__)


@dataclass
class Changes:
    """What a :meth:`Store.replace` did, in the order handlers should hear about it."""

    added: list[RawObj] = field(default_factory=list)
    updated: list[tuple[RawObj, RawObj]] = field(default_factory=list)  # (old, new)
    deleted: list[RawObj] = field(default_factory=list)  # last known state


class Store:
    def __init__(self, indexers: Mapping[str, IndexFunc] | None = None) -> None:
        self._items: dict[str, RawObj] = {}
        self._indexers: dict[str, IndexFunc] = dict(indexers or {})
        # index name -> index value -> keys of the objects with that value
        self._indices: dict[str, dict[str, set[str]]] = {name: {} for name in self._indexers}
        # index name -> key -> the values the object was filed under (to unfile it on change)
        self._filed: dict[str, dict[str, frozenset[str]]] = {name: {} for name in self._indexers}

    # -- reading ---------------------------------------------------------------------------

    def get(self, key: str) -> RawObj | None:
        return self._items.get(key)

    def list(self) -> list[RawObj]:
        return list(self._items.values())

    def keys(self) -> builtins.list[str]:
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def by_index(self, index: str, value: str) -> builtins.list[RawObj]:
        """Objects filed under ``value`` in ``index``; ``KeyError`` for an unknown index."""
        keys = self._index(index).get(value, ())
        return [self._items[key] for key in keys]

    def index_values(self, index: str) -> builtins.list[str]:
        """Every value that at least one object is filed under in ``index``."""
        return list(self._index(index))

    # -- changing (the informer's job; tests may use it to preload) -------------------------

    def upsert(self, obj: RawObj) -> RawObj | None:
        """Add or replace the object; returns the one it replaced, if any."""
        key = meta_namespace_key(obj)
        old = self._items.get(key)
        self._items[key] = obj
        for name, indexer in self._indexers.items():
            self._refile(name, key, _index_values(name, indexer, key, obj))
        return old

    def delete(self, key: str) -> RawObj | None:
        """Remove the object under ``key``; returns it, or ``None`` if there was none."""
        old = self._items.pop(key, None)
        if old is not None:
            for name in self._indexers:
                self._refile(name, key, frozenset())
        return old

    def replace(self, objs: Iterable[RawObj]) -> Changes:
        """Make the store hold exactly ``objs`` (a relist) and say what changed.

        An object whose resourceVersion is unchanged is left alone and not reported. Objects
        missing from ``objs`` are removed and reported with their last known state, so a
        deletion that happened while no watch was open is still seen.
        """
        changes = Changes()
        seen: set[str] = set()
        for obj in objs:
            key = meta_namespace_key(obj)
            seen.add(key)
            old = self._items.get(key)
            if old is not None and resource_version(old) and resource_version(old) == resource_version(obj):
                continue
            self.upsert(obj)
            if old is None:
                changes.added.append(obj)
            else:
                changes.updated.append((old, obj))
        for key in [key for key in self._items if key not in seen]:
            old = self.delete(key)
            if old is not None:
                changes.deleted.append(old)
        return changes

    # -- internals ---------------------------------------------------------------------------

    def _index(self, name: str) -> dict[str, set[str]]:
        try:
            return self._indices[name]
        except KeyError:
            raise KeyError(f"no index named {name!r} (have: {sorted(self._indices)})") from None

    def _refile(self, name: str, key: str, values: frozenset[str]) -> None:
        filed = self._filed[name]
        before = filed.get(key, frozenset())
        if before == values:
            return
        index = self._indices[name]
        for value in before - values:
            keys = index[value]
            keys.discard(key)
            if not keys:
                del index[value]
        for value in values - before:
            index.setdefault(value, set()).add(key)
        if values:
            filed[key] = values
        else:
            filed.pop(key, None)


def _index_values(name: str, indexer: IndexFunc, key: str, obj: RawObj) -> frozenset[str]:
    # An indexer is domain code; one that fails on an odd object must not stop the informer.
    try:
        values = indexer(obj)
        # A bare string is an Iterable[str] too; filing it letter by letter is never meant.
        return frozenset((values,) if isinstance(values, str) else values)
    except Exception:
        _log.exception("Index %r failed on %s; the object is left out of that index", name, key)
        return frozenset()
