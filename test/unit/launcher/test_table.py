"""The instance table: one revision counter over CREATED/STOPPED/DELETED, states as the API
shows them, and the bounded event buffer behind watch ``since`` and 410."""

from __future__ import annotations

import json

import pytest

from dpctl.launcher.api import EventType, VllmConfig
from dpctl.launcher.table import EventBuffer, InstanceExists, InstanceNotFound, InstanceTable, RevisionGone


def config(**kw: object) -> VllmConfig:
    return VllmConfig.model_validate({"options": "m --port 8005", **kw})


def test_each_event_bumps_the_one_revision_counter_and_stamps_the_instance() -> None:
    table = InstanceTable()
    assert table.revision == 0
    assert table.created("a", config()).revision == 1
    assert table.created("b", config()).revision == 2
    stopped = table.stopped("a", 3)
    assert stopped is not None
    assert (stopped.type, stopped.revision, stopped.object["exit_code"]) == (EventType.STOPPED, 3, 3)
    assert table.get("a").state()["revision"] == 3
    deleted = table.deleted("b", -15)
    assert (deleted.type, deleted.revision, deleted.object["status"]) == (EventType.DELETED, 4, "stopped")
    assert table.revision == 4


def test_state_holds_status_id_revision_and_only_the_non_null_config_fields() -> None:
    table = InstanceTable()
    table.created("a", config(annotations={"isc-name": "s"}))
    assert table.get("a").state() == {
        "status": "running",
        "instance_id": "a",
        "revision": 1,
        "options": "m --port 8005",
        "annotations": {"isc-name": "s"},
    }


def test_exit_code_is_in_the_stopped_event_but_not_in_the_state() -> None:
    table = InstanceTable()
    table.created("a", config())
    table.stopped("a", 1)
    assert "exit_code" not in table.get("a").state()
    assert table.get("a").state()["status"] == "stopped"


def test_an_id_stays_taken_while_stopped_and_is_free_after_delete() -> None:
    table = InstanceTable()
    table.created("a", config())
    table.stopped("a", 0)
    with pytest.raises(InstanceExists, match="Instance with ID a already exists"):
        table.created("a", config())
    table.deleted("a", 0)
    assert "a" not in table
    assert table.created("a", config()).revision == 4


def test_an_exit_after_delete_and_a_second_exit_are_not_events() -> None:
    table = InstanceTable()
    table.created("a", config())
    table.stopped("a", 0)
    assert table.stopped("a", 0) is None
    table.deleted("a", 0)
    assert table.stopped("a", 0) is None
    assert table.revision == 3


def test_unknown_ids_are_not_found_with_upstreams_words() -> None:
    with pytest.raises(InstanceNotFound, match=r"^Instance x not found$"):
        InstanceTable().get("x")
    with pytest.raises(InstanceNotFound):
        InstanceTable().deleted("x", 0)


def test_the_list_keeps_creation_order() -> None:
    table = InstanceTable()
    for name in "cab":
        table.created(name, config())
    assert [i.instance_id for i in table] == ["c", "a", "b"]


def test_event_line_is_compact_ndjson() -> None:
    table = InstanceTable()
    line = table.created("a", config()).line()
    assert line.endswith(b"\n") and b"\n" not in line[:-1] and b", " not in line
    assert json.loads(line) == {"type": "CREATED", "object": table.get("a").state()}


def test_buffer_gives_the_events_after_since() -> None:
    table = InstanceTable()
    for name in "abc":
        table.created(name, config())
    assert [e.object["instance_id"] for e in table.events.after(1)] == ["b", "c"]
    assert table.events.after(3) == []
    assert table.events.after(10) == []


def test_since_older_than_the_buffer_is_gone_and_the_buffer_keeps_the_latest() -> None:
    table = InstanceTable(buffer_capacity=3)
    for name in "abcde":
        table.created(name, config())
    assert table.events.oldest == 2
    assert [e.revision for e in table.events.after(2)] == [3, 4, 5]
    with pytest.raises(
        RevisionGone, match=r"Requested revision 1 is no longer available\. Oldest available: 2\."
    ):
        table.events.after(1)


def test_an_empty_buffer_covers_revision_zero_only() -> None:
    buffer = EventBuffer()
    assert buffer.after(0) == []
    with pytest.raises(RevisionGone):
        buffer.after(-1)


def test_default_buffer_holds_1000_events() -> None:
    table = InstanceTable()
    for i in range(1001):
        table.created(str(i), config())
    assert table.events.oldest == 1
    assert len(table.events.after(1)) == 1000
