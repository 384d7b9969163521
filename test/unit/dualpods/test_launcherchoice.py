"""Which launcher serves a requester: hot, then warm, then the cheapest reclaim, then wait or create."""

from __future__ import annotations

import pytest

from dpctl.dualpods.launcherchoice import (
    AwaitCandidates,
    Candidate,
    CreateLauncher,
    Hot,
    Instance,
    Reclaim,
    Warm,
    choose_launcher,
)

TARGET, PORT = "Itargeti", 8005


def inst(id: str, port: int = 9000, last_use: float = 0.0, stopped: bool = False) -> Instance:
    return Instance(id, port, stopped, last_use)


def ready(name: str, *instances: Instance) -> Candidate:
    return Candidate(name, tuple(instances))


STARTING = Candidate("starting", None)


def test_a_launcher_holding_the_instance_is_hot_even_after_a_warm_one() -> None:
    candidates = [ready("empty"), ready("holder", inst("other"), inst(TARGET, PORT))]
    assert choose_launcher(candidates, TARGET, PORT, 4) == Hot("holder")


def test_a_stopped_instance_of_the_same_id_is_not_hot_and_must_be_deleted() -> None:
    candidates = [ready("a", inst(TARGET, PORT, stopped=True))]
    assert choose_launcher(candidates, TARGET, PORT, 4) == Reclaim("a", (TARGET,))


def test_the_first_launcher_with_room_and_a_free_port_is_warm() -> None:
    candidates = [
        ready("port-taken", inst("x", PORT)),
        ready("full", inst("a"), inst("b")),
        ready("room-1", inst("a")),
        ready("room-2"),
    ]
    assert choose_launcher(candidates, TARGET, PORT, 2) == Warm("room-1")


def test_a_warm_launcher_beats_a_starting_one_and_any_reclaim() -> None:
    candidates = [STARTING, ready("full", inst("a")), ready("room")]
    assert choose_launcher(candidates, TARGET, PORT, 1) == Warm("room")


def test_reclaim_deletes_everything_on_the_port_then_the_least_recently_used() -> None:
    candidates = [
        ready("a", inst("new", last_use=30), inst("old", last_use=10), inst("p", PORT, last_use=50))
    ]
    assert choose_launcher(candidates, TARGET, PORT, 2) == Reclaim("a", ("p", "old"))  # down to 1, then room
    candidates = [ready("a", inst("new", last_use=30), inst("old", last_use=10), inst("mid", last_use=20))]
    assert choose_launcher(candidates, TARGET, PORT, 2) == Reclaim("a", ("old", "mid"))


def test_reclaim_picks_the_launcher_that_loses_fewest_sleepers() -> None:
    candidates = [
        ready("loses-2", inst("a", last_use=1), inst("b", last_use=2), inst("c", last_use=3)),
        ready("loses-1", inst("d", last_use=50), inst("e", last_use=60)),
    ]
    assert choose_launcher(candidates, TARGET, PORT, 2) == Reclaim("loses-1", ("d",))


@pytest.mark.parametrize(
    ("first_use", "second_use", "chosen"),
    [(5.0, 9.0, "first"), (9.0, 5.0, "second"), (7.0, 7.0, "first")],  # equal: victim "a" < "m"
)
def test_equal_reclaims_go_to_the_plan_whose_victim_was_used_longest_ago_then_by_id(
    first_use: float, second_use: float, chosen: str
) -> None:
    candidates = [
        ready("first", inst("a", last_use=first_use)),
        ready("second", inst("m", last_use=second_use)),
    ]
    choice = choose_launcher(candidates, TARGET, PORT, 1)
    assert isinstance(choice, Reclaim) and choice.launcher == chosen


def test_with_nothing_to_use_a_starting_launcher_is_awaited_not_duplicated() -> None:
    assert choose_launcher([STARTING], TARGET, PORT, 2) == AwaitCandidates()


def test_with_no_candidates_a_launcher_is_created() -> None:
    assert choose_launcher([], TARGET, PORT, 2) == CreateLauncher()
