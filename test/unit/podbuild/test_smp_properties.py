"""Strategic merge patch: agreement with a real API server, and properties that hold for any input.

`smp_reference.json` holds (original, patch) pairs that a real kube-apiserver answered; it is
made by ``hack/gen-smp-reference.py``, whose docstring gives the method. Each case records the
server's defaulted original (``server_original``, what the server stored and then patched) and
either the server's merged result or its refusal. The generator kept only the cases where the
server's answer is exactly the Go merge (its defaulting and validation changed nothing), so the
replay here is exact and offline: ``smp(server_original, patch)``, encoded the way the server
encodes it (`as_stored`), must equal ``server_result``; or SMP must refuse the patch.

The properties use Pod-shaped values with merge lists at two levels (containers and
initContainers by name; env, ports and volumeMounts inside them; volumes), atomic lists, string
maps and a primitive merge list (finalizers), with directives sprinkled in at every level.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpctl.podbuild.smp import PatchError, strategic_merge_patch

HERE = Path(__file__).parent
REFERENCE_FILE = HERE / "smp_reference.json"
REFERENCE: dict[str, Any] = json.loads(REFERENCE_FILE.read_text("utf-8"))
CASES: list[dict[str, Any]] = REFERENCE["cases"]

# Fields of string maps: the server omits them when empty (struct fields such as emptyDir stay).
MAP_FIELDS = frozenset({"labels", "annotations", "nodeSelector", "limits", "requests", "matchLabels"})


def as_stored(value: Any) -> Any:
    """A decoded object as the server encodes it: no nulls, ``$`` keys, empty lists or empty string maps.

    Our SMP already drops nulls and ``$`` keys, as the server's decoding does; the empty values
    are what its typed encoding adds on top (``omitempty``). Same as the generator's copy.
    """
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if item is None or key.startswith("$"):
                continue
            stored = as_stored(item)
            if stored == [] or (stored == {} and key in MAP_FIELDS):
                continue
            out[key] = stored
        return out
    if isinstance(value, list):
        return [as_stored(item) for item in value]
    return value


# --- the reference set ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_agrees_with_the_api_server(case: dict[str, Any]) -> None:
    if "server_error" in case:
        with pytest.raises(PatchError):
            strategic_merge_patch(case["server_original"], case["patch"])
    else:
        merged = strategic_merge_patch(case["server_original"], case["patch"])
        assert as_stored(merged) == case["server_result"]


def _features(value: Any, field: str = "") -> Iterator[str]:
    """What a patch exercises: directives, nulls, and the fields it patches with a list."""
    if isinstance(value, dict):
        for key, item in value.items():
            if item is None:
                yield "null"
            if key == "$patch":
                yield f"$patch: {item} in a {'list item' if field == '[]' else 'map'}"
            elif key.startswith("$"):
                yield key.partition("/")[0]
            if isinstance(item, list):
                yield f"list {key}"
            yield from _features(item, key)
    elif isinstance(value, list):
        for item in value:
            yield from _features(item, "[]")


def test_the_reference_set_is_sound_and_covers_the_directives() -> None:
    assert REFERENCE_FILE.stat().st_size < 2 * 1024 * 1024
    assert REFERENCE["server"].startswith("v1.")
    names = [case["name"] for case in CASES]
    assert len(names) == len(set(names)) >= 200
    for case in CASES:
        assert set(case) - {"server_result", "server_error"} == {
            "name",
            "original",
            "patch",
            "server_original",
        }
        assert ("server_result" in case) != ("server_error" in case)
        if "server_result" in case:  # the normalisation is a no-op on the server's side
            assert as_stored(case["server_result"]) == case["server_result"]
    refused = sum("server_error" in case for case in CASES)
    assert 20 <= refused <= len(CASES) // 3

    counts: dict[str, int] = {}
    for case in CASES:
        for feature in set(_features(case["patch"])):
            counts[feature] = counts.get(feature, 0) + 1
    wanted = [
        "null",
        "$patch: delete in a map",
        "$patch: replace in a map",
        "$patch: delete in a list item",
        "$patch: replace in a list item",
        "$retainKeys",
        "$setElementOrder",
        "$deleteFromPrimitiveList",
        *(f"list {field}" for field in ("containers", "initContainers", "env", "ports", "volumes")),
        *(f"list {field}" for field in ("volumeMounts", "finalizers", "tolerations", "command", "args")),
    ]
    assert {feature: counts.get(feature, 0) for feature in wanted if counts.get(feature, 0) < 5} == {}


# --- strategies ----------------------------------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "c"])
VALUES = st.sampled_from(["1", "2", "3"])
WORDS = st.lists(st.sampled_from(["sh", "-c", "serve", "-v"]), max_size=3)


def keyed(
    key: str, keys: st.SearchStrategy[Any], fields: st.SearchStrategy[dict[str, Any]], size: int = 3
) -> Any:
    """A merge list: items with distinct values of ``key`` and some other fields."""
    items = st.lists(st.tuples(keys, fields), unique_by=lambda pair: pair[0], max_size=size)
    return items.map(lambda pairs: [{**rest, key: value} for value, rest in pairs])


ENV = keyed("name", NAMES, st.fixed_dictionaries({}, optional={"value": VALUES}))
PORTS = keyed(
    "containerPort",
    st.sampled_from([80, 443, 8080]),
    st.fixed_dictionaries({}, optional={"protocol": st.sampled_from(["TCP", "UDP"]), "name": NAMES}),
)
MOUNTS = keyed("mountPath", st.sampled_from(["/a", "/b", "/c"]), st.fixed_dictionaries({"name": NAMES}))
CONTAINER_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "image": VALUES,
        "command": WORDS,
        "env": ENV,
        "ports": PORTS,
        "volumeMounts": MOUNTS,
        "resources": st.fixed_dictionaries(
            {}, optional={"limits": st.dictionaries(NAMES, VALUES, max_size=2)}
        ),
    },
)
CONTAINERS = keyed("name", st.sampled_from(["main", "side", "proxy"]), CONTAINER_FIELDS, size=2)
VOLUMES = keyed(
    "name",
    NAMES,
    st.one_of(
        st.just({"emptyDir": {}}),
        st.fixed_dictionaries({"hostPath": st.fixed_dictionaries({"path": st.sampled_from(["/x", "/y"])})}),
        st.fixed_dictionaries({"configMap": st.fixed_dictionaries({"name": VALUES})}),
    ),
)
TOLERATIONS = st.lists(st.fixed_dictionaries({"key": NAMES, "operator": st.just("Exists")}), max_size=2)

POD_SPEC = st.fixed_dictionaries(
    {"containers": CONTAINERS},
    optional={
        "initContainers": CONTAINERS,
        "volumes": VOLUMES,
        "tolerations": TOLERATIONS,
        "nodeSelector": st.dictionaries(NAMES, VALUES, max_size=2),
        "hostname": VALUES,
    },
)
METADATA = st.fixed_dictionaries(
    {},
    optional={
        "labels": st.dictionaries(NAMES, VALUES, max_size=3),
        "finalizers": st.lists(NAMES, unique=True, max_size=3),
    },
)
# Objects as the server hands them over: no nulls, no directives, merge keys unique.
PODS = st.fixed_dictionaries({"spec": POD_SPEC}, optional={"metadata": METADATA})
# Merge-only patches: the same shapes (so keyed items merge, atomic lists replace), plus nulls.
MERGE_PATCHES = st.fixed_dictionaries(
    {},
    optional={
        "metadata": st.fixed_dictionaries(
            {},
            optional={
                "labels": st.dictionaries(NAMES, st.none() | VALUES, max_size=3),
                "finalizers": st.lists(NAMES, unique=True, max_size=2),
            },
        ),
        "spec": st.fixed_dictionaries(
            {},
            optional={
                "containers": CONTAINERS,
                "initContainers": CONTAINERS,
                "volumes": VOLUMES,
                "tolerations": st.none() | TOLERATIONS,
                "nodeSelector": st.none() | st.dictionaries(NAMES, st.none() | VALUES, max_size=2),
                "hostname": st.none() | VALUES,
            },
        ),
    },
)


@st.composite
def sprinkled(draw: st.DrawFn, value: Any) -> Any:
    """``value`` with directives, nulls and malformed directives added at random places."""
    if isinstance(value, list):
        items = [draw(sprinkled(item)) for item in value]
        if items and isinstance(items[0], dict) and draw(st.booleans()):
            marker = dict(items[draw(st.integers(0, len(items) - 1))])
            marker["$patch"] = draw(st.sampled_from(["delete", "delete", "replace", "merge", "bogus"]))
            if draw(st.integers(0, 5)) == 0:
                marker.pop(next(iter(marker)))  # sometimes without its merge key
            items.insert(draw(st.integers(0, len(items))), marker)
        return items
    if not isinstance(value, dict):
        return value
    out = {key: draw(sprinkled(item)) for key, item in value.items()}
    fields = [key for key in out if not key.startswith("$")] or ["name"]
    choice = draw(st.sampled_from(["none", "none", "none", "patch", "retain", "order", "delete", "null"]))
    if choice == "patch":
        out["$patch"] = draw(st.sampled_from(["replace", "delete", "bogus"]))
    elif choice == "retain":
        out["$retainKeys"] = draw(st.lists(st.sampled_from([*fields, "name"]), max_size=3) | st.just("bad"))
    elif choice == "order":
        order = st.lists(st.fixed_dictionaries({"name": NAMES}), max_size=3) | st.lists(NAMES, max_size=3)
        out[f"$setElementOrder/{draw(st.sampled_from(fields))}"] = draw(order | st.just({"a": 1}))
    elif choice == "delete":
        deletions = st.lists(NAMES, max_size=2) | st.just([{"name": "a"}]) | st.just("bad")
        out[f"$deleteFromPrimitiveList/{draw(st.sampled_from(fields))}"] = draw(deletions)
    elif choice == "null":
        out[draw(st.sampled_from(fields))] = None
    return out


@st.composite
def directive_patches(draw: st.DrawFn) -> dict[str, Any]:
    patch: dict[str, Any] = draw(sprinkled(draw(MERGE_PATCHES)))
    return patch


def _walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, f"{path}[{index}]")


def reordered(value: Any, rng: random.Random) -> Any:
    """``value`` with the keys of every object in another order (list items keep theirs)."""
    if isinstance(value, dict):
        keys = list(value)
        rng.shuffle(keys)
        return {key: reordered(value[key], rng) for key in keys}
    if isinstance(value, list):
        return [reordered(item, rng) for item in value]
    return value


def _outcome(original: Any, patch: Any) -> Any:
    try:
        return strategic_merge_patch(original, patch)
    except PatchError:
        return PatchError


# --- properties ----------------------------------------------------------------------------------


@given(PODS, directive_patches())
@settings(max_examples=100)
def test_any_patch_is_applied_or_refused_cleanly(original: dict[str, Any], patch: dict[str, Any]) -> None:
    """Three properties: inputs are never mutated; the only failure is PatchError; and a result
    holds no directive key and no null field."""
    before = copy.deepcopy((original, patch))
    try:
        result = strategic_merge_patch(original, patch)
    except PatchError as error:
        assert str(error)
        result = {}
    assert (original, patch) == before
    for path, value in _walk(result):
        assert not path.rpartition(".")[2].startswith("$"), path
        if isinstance(value, dict):
            assert None not in value.values(), path


@given(PODS)
@settings(max_examples=30)
def test_an_empty_patch_is_the_identity(original: dict[str, Any]) -> None:
    assert strategic_merge_patch(original, {}) == original
    assert strategic_merge_patch(original, _maps_only(original)) == original


def _maps_only(value: dict[str, Any]) -> dict[str, Any]:
    """A patch that names every map of ``value`` and changes nothing in it."""
    return {key: _maps_only(item) for key, item in value.items() if isinstance(item, dict)}


scalars = st.none() | st.booleans() | st.integers(-2, 2) | st.sampled_from(["x", "$patch"])
json_objects = st.recursive(
    st.dictionaries(st.sampled_from(["a", "b", "$x", "$patch"]), scalars, max_size=3),
    lambda inner: st.dictionaries(
        st.sampled_from(["a", "b", "c", "$y"]), inner | st.lists(inner, max_size=2), max_size=3
    ),
    max_leaves=10,
)


def _decoded(value: Any) -> Any:
    """What the module documents the server's decoding to drop: null fields and ``$`` keys."""
    if isinstance(value, dict):
        return {k: _decoded(v) for k, v in value.items() if v is not None and not k.startswith("$")}
    if isinstance(value, list):
        return [_decoded(item) for item in value]
    return value


@given(json_objects)
@settings(max_examples=60)
def test_an_empty_patch_drops_only_what_decoding_drops(original: dict[str, Any]) -> None:
    assert strategic_merge_patch(original, {}) == _decoded(original)


@given(PODS, MERGE_PATCHES)
@settings(max_examples=60)
def test_merge_only_patches_are_idempotent(original: dict[str, Any], patch: dict[str, Any]) -> None:
    once = strategic_merge_patch(original, patch)
    assert strategic_merge_patch(once, patch) == once


@given(st.randoms(use_true_random=False), PODS, directive_patches())
@settings(max_examples=60)
def test_the_order_of_keys_in_objects_does_not_matter(
    rng: random.Random, original: dict[str, Any], patch: dict[str, Any]
) -> None:
    expected = _outcome(original, patch)
    assert _outcome(reordered(original, rng), reordered(patch, rng)) == expected


@st.composite
def pods_and_a_present_key(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A pod, a patch nulling one field that is there, and the pod without that field."""
    pod: dict[str, Any] = draw(PODS)
    expected = copy.deepcopy(pod)
    places: list[tuple[dict[str, Any], dict[str, Any], str]] = []  # (patch parent, expected parent, key)
    for key in pod["spec"]:
        places.append(({"spec": {}}, expected["spec"], key))
    for key in pod.get("metadata", {}).get("labels", {}):
        places.append(({"metadata": {"labels": {}}}, expected["metadata"]["labels"], key))
    for index, container in enumerate(pod["spec"]["containers"]):
        for key in container:
            if key != "name":
                places.append(({"container": container["name"]}, expected["spec"]["containers"][index], key))
    if not places:
        places.append(({"spec": {}}, expected["spec"], "containers"))
    where, parent, key = draw(st.sampled_from(places))
    del parent[key]
    if "container" in where:
        patch: dict[str, Any] = {"spec": {"containers": [{"name": where["container"], key: None}]}}
    elif "metadata" in where:
        patch = {"metadata": {"labels": {key: None}}}
    else:
        patch = {"spec": {key: None}}
    return pod, patch, expected


@given(pods_and_a_present_key())
@settings(max_examples=50)
def test_null_deletes_the_key_and_nothing_else(
    case: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],
) -> None:
    original, patch, expected = case
    assert strategic_merge_patch(original, patch) == expected


@given(PODS, st.sampled_from(["hostname", "subdomain", "nodeName"]))
@settings(max_examples=20)
def test_null_for_an_absent_key_changes_nothing(original: dict[str, Any], field: str) -> None:
    original["spec"].pop(field, None)
    assert strategic_merge_patch(original, {"spec": {field: None}}) == original


@given(PODS, st.data())
@settings(max_examples=30)
def test_patch_delete_removes_exactly_the_keyed_items(original: dict[str, Any], data: st.DataObject) -> None:
    names = [container["name"] for container in original["spec"]["containers"]]
    doomed = data.draw(st.lists(st.sampled_from([*names, "absent"]), unique=True, max_size=3))
    patch = {"spec": {"containers": [{"name": name, "$patch": "delete"} for name in doomed]}}
    result = strategic_merge_patch(original, patch)
    kept = [c for c in original["spec"]["containers"] if c["name"] not in doomed]
    assert result == {**original, "spec": {**original["spec"], "containers": kept}}


@given(PODS, MERGE_PATCHES)
@settings(max_examples=40)
def test_merge_keys_stay_unique(original: dict[str, Any], patch: dict[str, Any]) -> None:
    result = strategic_merge_patch(original, patch)
    for field in ("containers", "initContainers", "volumes"):
        names = [item["name"] for item in result["spec"].get(field, [])]
        assert len(names) == len(set(names)), field
        for container in result["spec"].get(field, []) if field != "volumes" else []:
            for inner, key in (("env", "name"), ("ports", "containerPort"), ("volumeMounts", "mountPath")):
                values = [item[key] for item in container.get(inner, [])]
                assert len(values) == len(set(values)), (field, inner)
    finalizers = result.get("metadata", {}).get("finalizers", [])
    assert len(finalizers) == len(set(finalizers))


# --- regressions the reference set found (each answer checked against kube-apiserver v1.36.3) ----


def _pod(**container: Any) -> dict[str, Any]:
    return {"spec": {"containers": [{"name": "main", "image": "busybox:1.36", **container}]}}


def test_a_deletion_list_deletes_from_an_atomic_list_too() -> None:
    """Go applies ``$deleteFromPrimitiveList`` whatever the field's strategy; we used to replace
    ``command`` with the deletion list."""
    patch = {"spec": {"containers": [{"name": "main", "$deleteFromPrimitiveList/command": ["a", "c"]}]}}
    assert strategic_merge_patch(_pod(command=["a", "b", "c"]), patch) == _pod(command=["b"])


def test_a_deletion_list_for_an_atomic_list_of_objects_is_refused() -> None:
    """The server answers "cannot merge lists without merge key"; we used to replace the list."""
    original = {**_pod(), "spec": {**_pod()["spec"], "tolerations": [{"key": "x", "operator": "Exists"}]}}
    with pytest.raises(PatchError, match="without a merge key"):
        strategic_merge_patch(original, {"spec": {"$deleteFromPrimitiveList/tolerations": [{"key": "x"}]}})


@pytest.mark.parametrize(
    ("live", "order", "items", "expected"),
    [
        pytest.param("BA", "C", ["-A", "C"], "BC", id="the-added-item-takes-the-deleted-slot"),
        pytest.param(
            "ABD", "CE", ["-A", "C", "E"], "BDCE", id="only-the-first-added-items-fit-the-old-length"
        ),
        pytest.param("AB", "CAB", ["C"], "CAB", id="no-deletion-no-change"),
    ],
)
def test_set_element_order_sees_the_live_list_as_go_merged_it_in_place(
    live: str, order: str, items: list[str], expected: str
) -> None:
    """Go orders a ``$setElementOrder`` result by the live list *after* merging into it in place
    (a deletion shifts items left, an addition fills the slot freed), so an added item can come
    after live-only ones. We used to order by the live list as it was."""
    patch = [
        {"name": i[1], "$patch": "delete"} if i.startswith("-") else {"name": i, "value": "p"} for i in items
    ]
    container = {"name": "main", "$setElementOrder/env": [{"name": n} for n in order], "env": patch}
    merged = strategic_merge_patch(
        _pod(env=[{"name": n, "value": "l"} for n in live]), {"spec": {"containers": [container]}}
    )
    assert "".join(item["name"] for item in merged["spec"]["containers"][0]["env"]) == expected
