"""GPU allocation like the NVIDIA device plugin: exclusive, lowest index first, released on termination."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpsim.kubelet.devices import (
    GpuAllocator,
    InsufficientGpusError,
    pod_gpu_request,
    split_devices,
)

UUIDS = ("GPU-a", "GPU-b", "GPU-c", "GPU-d")


def allocator() -> GpuAllocator:
    gpus = GpuAllocator()
    gpus.add_node("node-1", UUIDS)
    gpus.add_node("node-2", ("GPU-x", "GPU-y"))
    return gpus


def test_lowest_free_indices_first_and_idempotent_per_pod() -> None:
    gpus = allocator()
    assert gpus.allocate("p1", "node-1", 1) == ("GPU-a",)
    assert gpus.allocate("p2", "node-1", 2) == ("GPU-b", "GPU-c")
    assert gpus.allocate("p1", "node-1", 1) == ("GPU-a",)
    gpus.release("p1")
    assert gpus.allocate("p3", "node-1", 2) == ("GPU-a", "GPU-d")


def test_insufficient_devices_reads_like_the_device_manager() -> None:
    gpus = allocator()
    gpus.allocate("p1", "node-1", 3)
    with pytest.raises(InsufficientGpusError, match="Requested: 2, Available: 1"):
        gpus.allocate("p2", "node-1", 2)
    assert gpus.held_by("p2") == ()


def test_zero_gpus_take_nothing() -> None:
    gpus = allocator()
    assert gpus.allocate("p1", "node-1", 0) == ()
    assert gpus.free("node-1") == list(UUIDS)


def test_restore_refuses_devices_held_by_another_pod_or_unknown() -> None:
    gpus = allocator()
    assert gpus.restore("old", "node-1", ["GPU-c"])
    assert not gpus.restore("other", "node-1", ["GPU-c"])
    assert not gpus.restore("other", "node-1", ["GPU-zz"])
    assert gpus.allocate("new", "node-1", 3) == ("GPU-a", "GPU-b", "GPU-d")


def test_release_node_frees_only_that_node() -> None:
    gpus = allocator()
    gpus.allocate("p1", "node-1", 2)
    gpus.allocate("p2", "node-2", 1)
    gpus.release_node("node-1")
    assert gpus.free("node-1") == list(UUIDS)
    assert gpus.held_by("p2") == ("GPU-x",)


def test_pod_request_and_split_among_containers() -> None:
    spec = {
        "initContainers": [{"name": "i", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
        "containers": [
            {"name": "a", "resources": {"limits": {"nvidia.com/gpu": 2}}},
            {"name": "b", "resources": {"requests": {"nvidia.com/gpu": "1"}}},
            {"name": "c"},
        ],
    }
    assert pod_gpu_request(spec) == 3
    assert split_devices(spec, ("G0", "G1", "G2")) == {"i": ("G0",), "a": ("G0", "G1"), "b": ("G2",), "c": ()}
    assert pod_gpu_request({"initContainers": [{"resources": {"limits": {"nvidia.com/gpu": "4"}}}]}) == 4


ops = st.lists(
    st.tuples(st.sampled_from(["alloc", "release"]), st.integers(0, 7), st.integers(0, 4)), max_size=60
)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_no_gpu_is_ever_held_by_two_pods(steps: list[tuple[str, int, int]]) -> None:
    gpus = allocator()
    for op, pod, count in steps:
        uid = f"p{pod}"
        if op == "alloc":
            held = gpus.held_by(uid)
            if held:
                continue
            free_before = len(gpus.free("node-1"))
            try:
                got = gpus.allocate(uid, "node-1", count)
            except InsufficientGpusError:
                assert free_before < count
                continue
            assert len(got) == count
        else:
            gpus.release(uid)
        holders = [gpus.holder_of(u) for u in UUIDS]
        owned = [u for p in range(8) for u in gpus.held_by(f"p{p}")]
        assert len(owned) == len(set(owned))
        for u in owned:
            assert gpus.holder_of(u) is not None
        assert sum(h is not None for h in holders) == len(owned)
