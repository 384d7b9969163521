"""Properties of the ``gpu-map`` parser: any ConfigMap parses, lookups fail only with GpuMapError,
and a well-formed map gives back exactly the indices it holds.

The map is admin input, so `parse` must survive anything a ConfigMap can carry (the API server
only promises string keys and string values, but the parser is given whatever the cache holds),
keep a bad entry as an error for its own Node, and leave the other Nodes working.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dpctl.dualpods.gpumap import GpuMap, GpuMapError, indices_for, parse

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
uuids = st.sampled_from(["GPU-a", "GPU-b", "GPU-c", ""]) | st.text(max_size=12)
# Entries: JSON text of near-miss maps, of any JSON value, broken JSON, deep JSON, or no text at all.
near_maps = st.dictionaries(uuids, st.integers(-2, 8) | json_values, max_size=4).map(json.dumps)
deep = st.integers(1, 3_000).flatmap(lambda n: st.sampled_from(["[" * n, "[" * n + "]" * n, '{"a":' * n]))
entries = st.one_of(
    near_maps,
    json_values.map(lambda value: json.dumps(value, allow_nan=True)),
    st.text(max_size=20),
    deep,
    json_values,
)
node_names = st.sampled_from(["node-1", "node-2", "node-3"]) | st.text(max_size=8)
configmaps = st.none() | st.fixed_dictionaries(
    {},
    optional={
        "data": st.dictionaries(node_names, entries, max_size=4) | json_values,
        "metadata": st.fixed_dictionaries({"name": st.just("gpu-map")}),
    },
)


@given(configmaps)
@settings(max_examples=100)
def test_parse_never_raises(configmap: dict[str, Any] | None) -> None:
    parsed = parse(configmap)
    if configmap is None:
        assert parsed is None
        return
    assert isinstance(parsed, GpuMap)
    for node, entry in parsed.nodes.items():
        assert isinstance(node, str)
        if entry.error:
            assert not entry.gpus
        for uuid, index in entry.gpus.items():
            assert uuid and isinstance(index, int) and not isinstance(index, bool) and index >= 0
            assert node in parsed.owners[uuid]
        assert len(set(entry.gpus.values())) == len(entry.gpus)
    assert parsed.gpu_count == sum(len(entry.gpus) for entry in parsed.nodes.values())


@given(configmaps, node_names, st.lists(uuids, max_size=4))
@settings(max_examples=100)
def test_lookups_fail_only_with_gpu_map_error(
    configmap: dict[str, Any] | None, node: str, requested: list[str]
) -> None:
    try:
        indices = indices_for(parse(configmap), node, requested)
    except GpuMapError as error:
        assert str(error)
        return
    assert len(indices) == len(requested) > 0
    assert all(isinstance(index, int) and index >= 0 for index in indices)


@st.composite
def well_formed(draw: st.DrawFn) -> dict[str, dict[str, int]]:
    """Nodes mapping distinct UUIDs (distinct across nodes too) to distinct indices."""
    nodes = draw(st.lists(st.integers(0, 99).map(lambda i: f"node-{i}"), unique=True, min_size=1, max_size=4))
    gpu_ids = st.integers(0, 2**32).map(lambda i: f"GPU-{i:08x}-0000-4000-8000-000000000000")
    all_uuids = draw(st.lists(gpu_ids, unique=True, min_size=len(nodes), max_size=16))
    gpu_map: dict[str, dict[str, int]] = {node: {} for node in nodes}
    for at, uuid in enumerate(all_uuids):
        gpu_map[nodes[at % len(nodes)]][uuid] = 0
    for node, gpus in gpu_map.items():
        indices = draw(st.permutations(range(len(gpus) + draw(st.integers(0, 3)))))
        gpu_map[node] = dict(zip(gpus, indices, strict=False))
    return gpu_map


@given(well_formed(), st.data())
@settings(max_examples=60)
def test_indices_round_trip(gpu_map: dict[str, dict[str, int]], data: st.DataObject) -> None:
    parsed = parse({"data": {node: json.dumps(gpus) for node, gpus in gpu_map.items()}})
    assert parsed is not None
    assert parsed.gpu_count == sum(len(gpus) for gpus in gpu_map.values())
    node = data.draw(st.sampled_from(sorted(gpu_map)))
    requested = data.draw(st.lists(st.sampled_from(sorted(gpu_map[node])), min_size=1, unique=True))
    assert indices_for(parsed, node, requested) == [gpu_map[node][uuid] for uuid in requested]
    for other, gpus in gpu_map.items():
        if other != node:
            with pytest.raises(GpuMapError, match=f"mapped to node {other!r}"):
                indices_for(parsed, node, [next(iter(gpus))])


@given(well_formed(), entries, st.data())
@settings(max_examples=50)
def test_a_bad_entry_spoils_only_its_own_node(
    gpu_map: dict[str, dict[str, int]], bad: Any, data: st.DataObject
) -> None:
    victim = data.draw(st.sampled_from(sorted(gpu_map)))
    configmap = {"data": {node: json.dumps(gpus) for node, gpus in gpu_map.items()}}
    configmap["data"][victim] = bad
    parsed = parse(configmap)
    assert parsed is not None
    assume(parsed.nodes[victim].error)
    with pytest.raises(GpuMapError):
        indices_for(parsed, victim, ["GPU-x"])
    for node, gpus in gpu_map.items():
        if node != victim:
            assert indices_for(parsed, node, list(gpus)) == list(gpus.values())


@given(well_formed(), st.data())
@settings(max_examples=30)
def test_a_uuid_on_two_nodes_is_refused_on_both(
    gpu_map: dict[str, dict[str, int]], data: st.DataObject
) -> None:
    assume(len(gpu_map) >= 2)
    first, second = data.draw(st.permutations(sorted(gpu_map)))[:2]
    shared = next(iter(gpu_map[first]))
    gpu_map[second] = {shared: max(gpu_map[second].values(), default=-1) + 1, **gpu_map[second]}
    parsed = parse({"data": {node: json.dumps(gpus) for node, gpus in gpu_map.items()}})
    for node, other in ((first, second), (second, first)):
        with pytest.raises(GpuMapError, match=f"mapped to node {other!r}"):
            indices_for(parsed, node, [shared])


def test_deeply_nested_json_is_an_error_for_its_node_not_a_crash() -> None:
    """Regression: json.loads raises RecursionError, not ValueError, past Python's recursion limit."""
    parsed = parse({"data": {"node-1": "[" * 100_000, "node-2": '{"GPU-a": 0}'}})
    assert parsed is not None
    assert "nests JSON arrays or objects too deeply" in parsed.nodes["node-1"].error
    assert indices_for(parsed, "node-2", ["GPU-a"]) == [0]
