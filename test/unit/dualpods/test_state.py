"""The controller's soft state: what is remembered per server and per sleeper, and forgotten."""

from __future__ import annotations

from dpctl.dualpods.state import Memory, RunnerState, instance

from .fakes import runner


def test_a_server_is_forgotten_once_with_the_names_it_was_last_seen_with() -> None:
    memory = Memory()
    memory.server("uid-a")
    memory.note_names("uid-a", requester="req-a", node="node-1")
    assert memory.name_of("uid-a") == "req-a"
    assert memory.forget_server("uid-a") == {"requester": "req-a", "node": "node-1"}
    assert memory.forget_server("uid-a") is None
    assert memory.name_of("uid-a") is None


def test_a_sleeper_is_verified_asleep_only_for_the_container_instance_found_asleep() -> None:
    memory = Memory()
    sleeper = runner(bound_to=None)
    assert not memory.verified_asleep(sleeper)
    memory.runners["uid-r"] = RunnerState(asleep_instance=instance(sleeper))
    assert memory.verified_asleep(sleeper)
    assert not memory.verified_asleep(runner(bound_to=None, restarts=1))
    memory.forget_runner("uid-r")
    assert not memory.verified_asleep(sleeper)
