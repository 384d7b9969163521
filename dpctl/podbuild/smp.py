"""Kubernetes strategic merge patch (SMP), applied the way the API server applies it.

Owns the merge-strategy tables for core/v1 Pod and Node (which list fields merge, and on which
key; every other list is replaced whole) and `strategic_merge_patch`, a port of the *apply* half
of k8s.io/apimachinery ``pkg/util/strategicpatch`` with the options the API server uses: nulls
that match nothing are dropped, and ``$deleteFromPrimitiveList`` lists are applied. Supported:
``null`` deletes a key; ``$patch: replace|delete`` in maps and list items; ``$retainKeys``;
``$setElementOrder/<field>``; ``$deleteFromPrimitiveList/<field>``; the server's ordering of
merged lists.

Does not: compute patches (no two- or three-way diff), read schemas from OpenAPI, or validate
the result as a Pod (see `validate`). It is pure: inputs are never mutated (the functions below
work on a private copy, in place, as the Go code does).

Two deliberate choices where the server's answer is not a property of the patch:

- The server visits patch keys in Go's random map order, so a patch that both adds to a list and
  deletes from it with ``$deleteFromPrimitiveList`` has no single answer there. We merge first and
  delete after, which is what the server does whenever ``$setElementOrder`` is present too.
- Values the server copies from the patch wholesale (new list items, replaced lists, the body of
  ``$patch: replace``) can still hold directive keys or nulls. The server drops both when it
  decodes the result into a typed object, so the result here has neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

_PATCH: Final = "$patch"
_RETAIN_KEYS: Final = "$retainKeys"
_SET_ORDER: Final = "$setElementOrder"
_DELETE_FROM: Final = "$deleteFromPrimitiveList"


class PatchError(Exception):
    """The patch cannot be applied; the message names the place in the patch and the problem."""


@dataclass(frozen=True)
class MergeList:
    """A list field that SMP merges item by item instead of replacing it.

    ``merge_key`` is the field that identifies an item; None means a set of scalars (finalizers).
    ``retain_keys`` records Go's ``merge,retainKeys`` tag (items are union types). Applying honours
    a ``$retainKeys`` directive wherever it appears, as the server does, so this flag is the
    documentation of where clients are expected to send one.
    """

    merge_key: str | None
    retain_keys: bool = False


# Keys are field paths from the object's root; "[]" steps into the items of a list.
Schema = Mapping[str, MergeList]
_UNKEYED: Final = MergeList(None)


def _under(prefix: str, table: Mapping[str, MergeList]) -> dict[str, MergeList]:
    return {f"{prefix}.{field}": meta for field, meta in table.items()}


# From the patchStrategy/patchMergeKey struct tags of k8s.io/api core/v1 and meta/v1 (identical
# at v0.34, v0.36 and v0.37; see the research notes, control-plane.md §5.1).
_OBJECT_META: Final = {"ownerReferences": MergeList("uid"), "finalizers": MergeList(None)}
_CONTAINER: Final = {
    "ports": MergeList("containerPort"),  # containerPort only: SMP ignores the protocol
    "env": MergeList("name"),
    "volumeMounts": MergeList("mountPath"),
    "volumeDevices": MergeList("devicePath"),
}
_CONTAINER_LISTS: Final = ("initContainers", "containers", "ephemeralContainers")

# status.*containerStatuses[] also tag volumeMounts and allocatedResourcesStatus as merge lists,
# but the status lists themselves are atomic, so those inner tags can never apply; left out.
POD_SCHEMA: Final[Schema] = MappingProxyType(
    {
        **_under("metadata", _OBJECT_META),
        "spec.volumes": MergeList("name", retain_keys=True),
        **_under("spec.volumes[].ephemeral.volumeClaimTemplate.metadata", _OBJECT_META),
        **{f"spec.{field}": MergeList("name") for field in _CONTAINER_LISTS},
        **{
            path: meta
            for field in _CONTAINER_LISTS
            for path, meta in _under(f"spec.{field}[]", _CONTAINER).items()
        },
        "spec.imagePullSecrets": MergeList("name"),
        "spec.hostAliases": MergeList("ip"),
        "spec.topologySpreadConstraints": MergeList("topologyKey"),  # not whenUnsatisfiable
        "spec.schedulingGates": MergeList("name"),
        "spec.resourceClaims": MergeList("name", retain_keys=True),
        "status.conditions": MergeList("type"),
        "status.hostIPs": MergeList("ip"),
        "status.podIPs": MergeList("ip"),
        "status.resourceClaimStatuses": MergeList("name", retain_keys=True),
    }
)

NODE_SCHEMA: Final[Schema] = MappingProxyType(
    {
        **_under("metadata", _OBJECT_META),
        "spec.podCIDRs": MergeList(None),
        "status.conditions": MergeList("type"),
        "status.addresses": MergeList("type"),  # so two InternalIPs collapse into one, as upstream
    }
)


def strategic_merge_patch(
    original: Mapping[str, Any], patch: Mapping[str, Any], schema: Schema = POD_SCHEMA
) -> dict[str, Any]:
    """Return ``original`` with ``patch`` applied as the API server would store it.

    Raises PatchError for a malformed patch (unknown ``$patch`` value, a merge-list item without
    its merge key, mixed item types, ...) and for values JSON cannot express.
    """
    if not isinstance(original, Mapping) or not isinstance(patch, Mapping):
        raise PatchError("both the object and the patch must be mappings")
    merged = _merge_map(_clone(original), _clone(patch), _At(), schema)
    decoded: dict[str, Any] = _decoded(merged)
    return decoded


@dataclass(frozen=True)
class _At:
    """Where we are: ``schema`` is the path in the tables above, ``shown`` the one for messages."""

    schema: str = ""
    shown: str = ""

    def field(self, name: str) -> _At:
        return _At(_join(self.schema, name), _join(self.shown, name))

    def item(self, index: int) -> _At:
        return _At(f"{self.schema}[]", f"{self.shown}[{index}]")

    def __str__(self) -> str:
        return self.shown or "the top level"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _clone(value: Any) -> Any:
    """A deep copy that shares nothing (YAML aliases do share) and admits only JSON values."""
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise PatchError("mapping keys must be strings")
        return {key: _clone(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clone(item) for item in value]
    if value is None or isinstance(value, str | bool | int | float):
        return value
    raise PatchError(f"a {type(value).__name__} value is not valid JSON")


def _merge_map(original: dict[str, Any], patch: dict[str, Any], at: _At, schema: Schema) -> dict[str, Any]:
    """Port of Go's mergeMap; both arguments are private copies and may be changed."""
    if _PATCH in patch:
        return _map_directive(patch, at)
    _apply_retain_keys(original, patch, at)
    _apply_element_orders(original, patch, at, schema)
    deletions = {key: value for key, value in patch.items() if key.startswith(_DELETE_FROM)}
    for key, value in patch.items():
        if key not in deletions:
            _merge_field(original, key, value, at, schema, deleting=False)
    for key, value in deletions.items():
        field = _directive_field(key, _DELETE_FROM, at)
        _merge_field(original, field, value, at, schema, deleting=True)
    return original


def _map_directive(patch: dict[str, Any], at: _At) -> dict[str, Any]:
    directive = patch[_PATCH]
    if directive == "replace":
        return {key: value for key, value in patch.items() if key != _PATCH}
    if directive == "delete":
        return {}
    raise PatchError(f"{at}: unknown {_PATCH} value {directive!r} in a map; expected replace or delete")


def _directive_field(key: str, prefix: str, at: _At) -> str:
    head, slash, field = key.partition("/")
    if head != prefix or not slash or not field:
        raise PatchError(f"{at}: malformed directive {key!r}; expected {prefix}/<field>")
    return field


def _apply_retain_keys(original: dict[str, Any], patch: dict[str, Any], at: _At) -> None:
    if _RETAIN_KEYS not in patch:
        return
    retained = patch.pop(_RETAIN_KEYS)
    if not isinstance(retained, list):
        raise PatchError(f"{at}: {_RETAIN_KEYS} must be a list of field names")
    for key, value in patch.items():
        if value is None or key.startswith((_DELETE_FROM, _SET_ORDER)):
            continue
        if key not in retained:
            raise PatchError(f"{at}: {key!r} is set but not listed in {_RETAIN_KEYS}")
    for key in [key for key in original if key not in retained]:
        del original[key]


def _merge_field(
    original: dict[str, Any], key: str, value: Any, at: _At, schema: Schema, *, deleting: bool
) -> None:
    if value is None:
        original.pop(key, None)
        return
    here = at.field(key)
    if key not in original or _kind(original[key]) != _kind(value):
        # A parallel deletion list for a field that is not there (or not a list) deletes nothing.
        if not deleting:
            _set_literal(original, key, value)
        return
    current = original[key]
    if isinstance(current, dict):
        # No core type tags a map field `replace`, so maps always merge.
        original[key] = _merge_map(current, value, here, schema)
    elif isinstance(current, list):
        meta = schema.get(here.schema)
        if meta is None and deleting:
            # Go applies a deletion list the same way whatever the field's strategy: an atomic list
            # of scalars loses the listed items; one of objects has no key to match them by.
            meta = _UNKEYED
        original[key] = value if meta is None else _merge_list(current, value, meta, here, schema, deleting)
    else:
        original[key] = value


def _set_literal(target: dict[str, Any], key: str, value: Any) -> None:
    """Take a patch value as is, minus nulls and minus maps that carry ``$patch`` (Go's removeDirectives)."""
    literal = _literal(value)
    if literal is _DROP:
        target.pop(key, None)
    else:
        target[key] = literal


_DROP: Final = object()


def _literal(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get(_PATCH) is not None:
            return _DROP
        kept = {key: _literal(item) for key, item in value.items() if item is not None}
        return {key: item for key, item in kept.items() if item is not _DROP}
    if isinstance(value, list):
        return [item for item in map(_literal, value) if item is not _DROP]
    return value


def _merge_list(
    original: list[Any], patch: list[Any], meta: MergeList, at: _At, schema: Schema, deleting: bool
) -> list[Any]:
    """Port of Go's mergeSlice for a field tagged ``patchStrategy:"merge"``."""
    if not original and not patch:
        return original
    kind = _item_kind(original, patch, at)
    key: str | None = None
    if kind != "object":
        if deleting:
            return [item for item in original if _index(patch, item, None) < 0]
        merged = _dedupe(original + patch)
    else:
        key = meta.merge_key
        if key is None:
            raise PatchError(f"{at}: a list of objects cannot be merged without a merge key")
        original, patch = _apply_item_directives(original, patch, key, at)
        merged = _merge_items(original, patch, key, at, schema)
    return _in_order(merged, patch, original, key, at)


def _apply_item_directives(
    original: list[Any], patch: list[Any], key: str, at: _At
) -> tuple[list[Any], list[Any]]:
    """Handle items carrying ``$patch``; return the updated original and the plain patch items."""
    plain: list[Any] = []
    replace = False
    for index, item in enumerate(patch):
        if _PATCH not in item:
            plain.append(item)
            continue
        directive = item[_PATCH]
        if directive == "delete":
            if key not in item:
                raise PatchError(f"{at.item(index)}: {_PATCH}: delete needs the merge key {key!r}")
            original = [entry for entry in original if not _has_key_value(entry, key, item[key])]
        elif directive == "replace":
            replace = True  # keep going: the other directive items must still be valid
        elif directive == "merge":
            raise PatchError(f"{at.item(index)}: {_PATCH}: merge is not supported in lists")
        else:
            raise PatchError(
                f"{at.item(index)}: unknown {_PATCH} value {directive!r} in a list; expected delete or replace"
            )
    return (plain, []) if replace else (original, plain)


def _merge_items(original: list[Any], patch: list[Any], key: str, at: _At, schema: Schema) -> list[Any]:
    merged = list(original)
    for index, item in enumerate(patch):
        if key not in item:
            raise PatchError(f"{at.item(index)}: the item has no {key!r}, the key {at} merges on")
        position = _index(merged, item, key)
        if position < 0:
            merged.append(item)
        else:
            merged[position] = _merge_map(merged[position], item, at.item(index), schema)
    return merged


def _apply_element_orders(original: dict[str, Any], patch: dict[str, Any], at: _At, schema: Schema) -> None:
    """Port of Go's mergePatchIntoOriginal: merge each list named by ``$setElementOrder/<field>``
    now, then order it: the directive's order first, then server-only items by their live order."""
    for directive in [key for key in patch if key.startswith(_SET_ORDER)]:
        order = patch.pop(directive)
        field = _directive_field(directive, _SET_ORDER, at)
        here = at.field(field)
        if not isinstance(order, list):
            raise PatchError(f"{at}: {directive} must be a list")
        current = _list_or_absent(original, field, here)
        incoming = _list_or_absent(patch, field, here)
        meta = schema.get(here.schema)
        kind = _item_kind(current or [], incoming or [], here)
        key = meta.merge_key if meta is not None and kind == "object" else None
        if kind == "object":
            if key is None:
                raise PatchError(f"{at}: {directive} applies only to lists merged on a key")
            _require_keyed(order, key, here.field(directive))
        _check_order(incoming or [], order, key, here, directive)
        live = current or []
        if current is not None and incoming is not None:
            merged = incoming if meta is None else _merge_list(current, incoming, meta, here, schema, False)
            if key is not None:
                live = _live_order_after_merge(current, incoming, key)
        elif current is not None:
            merged = current
        elif incoming is not None:
            merged = _literal(incoming)
        else:
            continue
        # Go fails to order a list that is empty on both sides; there is nothing to order, so we don't.
        original[field] = merged if kind is None else _in_order(merged, order, live, key, here)
        patch.pop(field, None)


def _live_order_after_merge(current: list[Any], patch: list[Any], key: str) -> list[Any]:
    """The live list that Go orders a ``$setElementOrder`` result by, after it merged the patch.

    Go's merge changes the live list's backing array in place and the ordering then reads the
    live list through its old slice header: deleting an item shifts the later ones left, and
    each item the patch adds fills the next freed slot. So an added item can take a live
    position, and the server slots the live-only items in around it accordingly. Items added
    beyond the old length land outside that view (in place or in a new array, whatever the
    capacity), so this answer does not depend on the capacity Go allocated.
    """
    backing = list(current)
    length = len(backing)
    for item in patch:
        if item.get(_PATCH) == "delete":
            while (found := _index(backing[:length], item, key)) >= 0:
                backing[found : length - 1] = backing[found + 1 : length]
                length -= 1
    if any(item.get(_PATCH) == "replace" for item in patch):
        return backing  # the list is replaced, but its deletions still happened in place
    for item in patch:
        if _PATCH not in item and _index(backing[:length], item, key) < 0:
            if length < len(backing):
                backing[length] = item
            length += 1
    return backing


def _list_or_absent(parent: dict[str, Any], field: str, at: _At) -> list[Any] | None:
    if field not in parent:
        return None
    value = parent[field]
    if not isinstance(value, list):
        raise PatchError(f"{at}: expected a list to go with {_SET_ORDER}/{field}")
    return value


def _require_keyed(items: list[Any], key: str, at: _At) -> None:
    for index, item in enumerate(items):
        if not isinstance(item, dict) or key not in item:
            raise PatchError(f"{at.item(index)}: must be an object with the merge key {key!r}")


def _check_order(patch: list[Any], order: list[Any], key: str | None, at: _At, directive: str) -> None:
    """Port of validatePatchWithSetOrderList: patch items must appear in the directive, in its order."""
    if not order or not patch:
        return
    if key is not None:
        _require_keyed([item for item in patch if _PATCH not in item], key, at)
    items = [item for item in patch if key is None or item.get(_PATCH) != "delete"]
    item_at = order_at = 0
    while item_at < len(items) and order_at < len(order):
        item = items[item_at]
        if isinstance(item, dict) and _PATCH in item:
            item_at += 1
            continue
        if _index([order[order_at]], item, key) == 0:
            item_at += 1
        order_at += 1
    if item_at < len(items):
        raise PatchError(f"{at}: the items are not all listed in {directive}, or not in its order")


def _in_order(merged: list[Any], patch: list[Any], server: list[Any], key: str | None, at: _At) -> list[Any]:
    """Port of normalizeElementOrder: patch items in patch order, server-only items in live order,
    then the server-only items are slotted in among the patch items by live order."""
    in_patch: list[Any] = []
    server_only: list[Any] = []
    for item in merged:
        if key is not None and not (isinstance(item, dict) and key in item):
            raise PatchError(f"{at}: an item has no {key!r}, the key this list merges on")
        (in_patch if _index(patch, item, key) >= 0 else server_only).append(item)
    return _interleave(_sorted_by(server_only, server, key), _sorted_by(in_patch, patch, key), server, key)


def _sorted_by(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    def position(item: Any) -> int:
        found = _index(order, item, key)
        return found if found >= 0 else len(order)

    return sorted(items, key=position)


def _interleave(server_only: list[Any], in_patch: list[Any], server: list[Any], key: str | None) -> list[Any]:
    """Port of mergeSortedSlice: take a server-only item first only when both items are live and
    it comes first there; an item new in the patch goes before the server-only items after it."""
    result: list[Any] = []
    left = right = 0
    while left < len(server_only) or right < len(in_patch):
        if right >= len(in_patch):
            result.append(server_only[left])
            left += 1
        elif left >= len(server_only):
            result.append(in_patch[right])
            right += 1
        else:
            left_pos = _index(server, server_only[left], key)
            right_pos = _index(server, in_patch[right], key)
            if 0 <= left_pos < right_pos:
                result.append(server_only[left])
                left += 1
            else:
                result.append(in_patch[right])
                right += 1
    return result


def _index(items: list[Any], probe: Any, key: str | None) -> int:
    """Position of the first item equal to ``probe`` (by merge key when there is one), or -1."""
    for position, item in enumerate(items):
        if key is None:
            if _same(item, probe):
                return position
        elif isinstance(probe, dict) and key in probe and _has_key_value(item, key, probe[key]):
            return position
    return -1


def _has_key_value(item: Any, key: str, value: Any) -> bool:
    return isinstance(item, dict) and key in item and _same(item[key], value)


def _same(left: Any, right: Any) -> bool:
    """JSON equality: 8080 equals 8080.0 (Go sees float64 for both), but True does not equal 1."""
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    return type(left) is type(right) and bool(left == right)


def _dedupe(items: list[Any]) -> list[Any]:
    unique: list[Any] = []
    for item in items:
        if _index(unique, item, None) < 0:
            unique.append(item)
    return unique


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "list"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else "string"


def _item_kind(original: list[Any], patch: list[Any], at: _At) -> str | None:
    """The one kind of all items of both lists (None when both are empty); Go merges no other lists."""
    kinds = {_kind(item) for item in original + patch}
    if "list" in kinds:
        raise PatchError(f"{at}: lists of lists cannot be merged")
    if "null" in kinds:
        raise PatchError(f"{at}: a merge list cannot hold null items")
    if len(kinds) > 1:
        raise PatchError(f"{at}: the items are not all of one type ({', '.join(sorted(kinds))})")
    return kinds.pop() if kinds else None


def _decoded(value: Any) -> Any:
    """What survives decoding into a typed object: no directive keys, no null fields."""
    if isinstance(value, dict):
        return {
            key: _decoded(item) for key, item in value.items() if item is not None and not key.startswith("$")
        }
    if isinstance(value, list):
        return [_decoded(item) for item in value]
    return value
