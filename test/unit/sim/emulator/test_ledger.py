"""The GPU occupancy ledger, both implementations: holds through start, sleep, wake and exit,
violations (allowed or refused), dead holders ignored, and the sqlite file shared safely."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from dpsim.emulator.ledger import Action, GpuLedger, Holder, Ledger, MemoryLedger, pid_alive
from helpers import wait_for

GPU_0 = "GPU-00000000-0000-0000-0000-000000000000"
GPU_1 = "GPU-11111111-1111-1111-1111-111111111111"
ME = os.getpid()
A = Holder("ns/a", "uid-a", ME)
B = Holder("ns/b", "uid-b", ME)


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture(params=["sqlite", "memory"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> GpuLedger:
    return Ledger(tmp_path / "gpu-ledger.sqlite") if request.param == "sqlite" else MemoryLedger()


def test_start_holds_awake(ledger: GpuLedger) -> None:
    assert ledger.start(A, [GPU_0, GPU_1], refuse_conflict=False) == []
    assert ledger.awake_holders() == {GPU_0: A, GPU_1: A}
    assert ledger.violations() == []


def test_double_awake_is_a_violation(ledger: GpuLedger) -> None:
    ledger.start(A, [GPU_0], refuse_conflict=False)
    [v] = ledger.start(B, [GPU_0, GPU_1], refuse_conflict=False)
    assert (v.gpu, v.action, v.holder, v.intruder, v.refused) == (GPU_0, Action.START, A, B, False)
    assert ledger.violations() == [v]
    # Allowed: both hold GPU 0 awake; the earlier one is reported as its holder.
    assert ledger.awake_holders() == {GPU_0: A, GPU_1: B}
    assert {(h.gpu, h.holder) for h in ledger.holds() if h.awake} == {(GPU_0, A), (GPU_0, B), (GPU_1, B)}


def test_refused_start_takes_nothing(ledger: GpuLedger) -> None:
    ledger.start(A, [GPU_0], refuse_conflict=False)
    [v] = ledger.start(B, [GPU_0, GPU_1], refuse_conflict=True)
    assert v.refused
    assert ledger.awake_holders() == {GPU_0: A}
    assert ledger.violations() == [v]


def test_sleep_releases_the_awake_hold_and_wake_takes_it_back(ledger: GpuLedger) -> None:
    ledger.start(A, [GPU_0], refuse_conflict=False)
    ledger.sleep(A)
    assert ledger.awake_holders() == {}
    assert [(h.gpu, h.holder, h.awake) for h in ledger.holds()] == [(GPU_0, A, False)]
    assert ledger.start(B, [GPU_0], refuse_conflict=False) == []
    ledger.sleep(B)
    assert ledger.wake(A, refuse_conflict=False) == []
    assert ledger.awake_holders() == {GPU_0: A}
    assert ledger.violations() == []


def test_waking_onto_an_awake_gpu(ledger: GpuLedger) -> None:
    ledger.start(A, [GPU_0], refuse_conflict=False)
    ledger.sleep(A)
    ledger.start(B, [GPU_0], refuse_conflict=False)
    [refused] = ledger.wake(A, refuse_conflict=True)
    assert (refused.action, refused.holder, refused.intruder, refused.refused) == (Action.WAKE, B, A, True)
    assert ledger.awake_holders() == {GPU_0: B}
    [allowed] = ledger.wake(A, refuse_conflict=False)
    assert not allowed.refused
    assert ledger.violations() == [refused, allowed]


def test_exit_releases_everything(ledger: GpuLedger) -> None:
    ledger.start(A, [GPU_0, GPU_1], refuse_conflict=False)
    ledger.start(B, [GPU_1], refuse_conflict=False)
    ledger.exit(A)
    assert ledger.awake_holders() == {GPU_1: B}
    assert all(h.holder == B for h in ledger.holds())


def test_dead_holder_is_ignored(ledger: GpuLedger) -> None:
    ghost = Holder("ns/ghost", "uid-ghost", dead_pid())
    ledger.start(ghost, [GPU_0], refuse_conflict=False)
    assert ledger.awake_holders() == {}
    assert ledger.start(A, [GPU_0], refuse_conflict=True) == []
    assert ledger.awake_holders() == {GPU_0: A}


def test_clear(ledger: GpuLedger) -> None:
    ledger.start(A, [GPU_0], refuse_conflict=False)
    ledger.start(B, [GPU_0], refuse_conflict=False)
    ledger.clear()
    assert (ledger.holds(), ledger.violations()) == ([], [])


def test_holder_from_env() -> None:
    env = {"DPCTL_SIM_POD": "ns/p", "DPCTL_SIM_POD_UID": "u"}
    assert Holder.from_env(env) == Holder("ns/p", "u", ME)
    assert str(Holder.from_env({})) == f"(no pod) (uid -, pid {ME})"


def test_pid_alive() -> None:
    assert pid_alive(ME)
    assert not pid_alive(dead_pid())
    assert not pid_alive(0)


def test_zombie_is_dead() -> None:
    proc = subprocess.Popen(["true"])
    try:
        # Not yet reaped: the pid exists, but the process is gone.
        wait_for(lambda: not pid_alive(proc.pid), 10, "the child to become a zombie")
    finally:
        proc.wait()


# --- the shared sqlite file -------------------------------------------------------------------


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "gpu-ledger.sqlite"


def test_sqlite_is_shared_between_instances_in_wal_mode(path: Path) -> None:
    Ledger(path).start(A, [GPU_0], refuse_conflict=False)
    other = Ledger(path)
    assert other.awake_holders() == {GPU_0: A}
    other.start(B, [GPU_0], refuse_conflict=False)
    assert len(Ledger(path).violations()) == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_sqlite_prunes_dead_holders(path: Path) -> None:
    ledger = Ledger(path)
    ledger.start(Holder("ns/ghost", "uid-ghost", dead_pid()), [GPU_0], refuse_conflict=False)
    ledger.start(A, [GPU_1], refuse_conflict=False)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT pod FROM holds ORDER BY pod").fetchall() == [("ns/a",)]


def run_at_once(n: int, work: Callable[[int], object]) -> None:
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            work(i)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors


def test_sqlite_concurrent_starts_admit_exactly_one(path: Path) -> None:
    Ledger(path)
    admitted: list[int] = []

    def start(i: int) -> None:
        # Each thread its own Ledger, as separate processes would have.
        if not Ledger(path).start(Holder(f"ns/p{i}", f"u{i}", ME), [GPU_0], refuse_conflict=True):
            admitted.append(i)

    run_at_once(8, start)
    assert len(admitted) == 1
    assert len(Ledger(path).violations()) == 7
    assert Ledger(path).awake_holders() == {GPU_0: Holder(f"ns/p{admitted[0]}", f"u{admitted[0]}", ME)}


def test_sqlite_concurrent_creation(path: Path) -> None:
    run_at_once(
        8, lambda i: Ledger(path).start(Holder("ns/p", f"u{i}", ME), [f"GPU-{i}"], refuse_conflict=False)
    )
    assert len(Ledger(path).awake_holders()) == 8


# --- GPU memory ---------------------------------------------------------------------------------

AWAKE_MIB = 41461
ASLEEP_MIB = 512


def test_memory_follows_start_sleep_wake_and_exit(ledger: GpuLedger) -> None:
    assert ledger.memory_used_mib() == {}
    ledger.start(A, [GPU_0, GPU_1], refuse_conflict=False, mib=AWAKE_MIB)
    assert ledger.memory_used_mib() == {GPU_0: AWAKE_MIB, GPU_1: AWAKE_MIB}
    ledger.sleep(A, mib=ASLEEP_MIB)
    assert ledger.memory_used_mib() == {GPU_0: ASLEEP_MIB, GPU_1: ASLEEP_MIB}
    ledger.wake(A, refuse_conflict=False, mib=AWAKE_MIB)
    assert ledger.memory_used_mib() == {GPU_0: AWAKE_MIB, GPU_1: AWAKE_MIB}
    ledger.exit(A)
    assert ledger.memory_used_mib() == {}


def test_memory_of_servers_on_one_gpu_adds_up(ledger: GpuLedger) -> None:
    ledger.start(A, [GPU_0], refuse_conflict=False, mib=AWAKE_MIB)
    ledger.sleep(A, mib=ASLEEP_MIB)
    ledger.start(B, [GPU_0], refuse_conflict=False, mib=AWAKE_MIB)
    assert ledger.memory_used_mib() == {GPU_0: AWAKE_MIB + ASLEEP_MIB}


def test_a_refused_start_takes_no_memory(ledger: GpuLedger) -> None:
    ledger.start(A, [GPU_0], refuse_conflict=False, mib=AWAKE_MIB)
    ledger.start(B, [GPU_0], refuse_conflict=True, mib=AWAKE_MIB)
    assert ledger.memory_used_mib() == {GPU_0: AWAKE_MIB}


def test_a_dead_holders_memory_is_free(ledger: GpuLedger) -> None:
    # The driver frees a killed process's memory, whatever the ledger last heard from it.
    ledger.start(Holder("ns/gone", "uid-gone", dead_pid()), [GPU_0], refuse_conflict=False, mib=AWAKE_MIB)
    assert ledger.memory_used_mib() == {}


@pytest.mark.parametrize("change", ["sleep", "exit"])
def test_memory_given_up_stays_in_use_for_the_release_delay(ledger: GpuLedger, change: str) -> None:
    ledger.start(A, [GPU_0], refuse_conflict=False, mib=AWAKE_MIB)
    if change == "sleep":
        ledger.sleep(A, mib=ASLEEP_MIB, release_delay_s=0.5)
    else:
        ledger.exit(A, release_delay_s=0.5)
    # Still all of it: the new residue and what has not been released yet.
    assert ledger.memory_used_mib() == {GPU_0: AWAKE_MIB}
    after = ASLEEP_MIB if change == "sleep" else None
    wait_for(lambda: ledger.memory_used_mib().get(GPU_0) == after, 10, "the delayed release")


def test_a_release_outlives_its_process(tmp_path: Path) -> None:
    # A server that exits with memory still held: the release is the GPU's, not the process's.
    ledger = Ledger(tmp_path / "gpu-ledger.sqlite")
    gone = Holder("ns/gone", "uid-gone", ME)
    ledger.start(gone, [GPU_0], refuse_conflict=False, mib=AWAKE_MIB)
    ledger.exit(gone, release_delay_s=60)
    assert Ledger(tmp_path / "gpu-ledger.sqlite").memory_used_mib() == {GPU_0: AWAKE_MIB}
    ledger.clear()
    assert ledger.memory_used_mib() == {}


def test_a_ledger_file_from_before_memory_accounting_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "gpu-ledger.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE holds (gpu TEXT NOT NULL, pod TEXT NOT NULL, pod_uid TEXT NOT NULL,"
        " pid INTEGER NOT NULL, awake INTEGER NOT NULL, since REAL NOT NULL,"
        " PRIMARY KEY (gpu, pod, pod_uid, pid))"
    )
    conn.execute("INSERT INTO holds VALUES (?, 'ns/old', 'uid-old', ?, 1, 0)", (GPU_0, ME))
    conn.commit()
    conn.close()
    ledger = Ledger(path)
    assert ledger.memory_used_mib() == {GPU_0: 0}
    ledger.start(A, [GPU_1], refuse_conflict=False, mib=AWAKE_MIB)
    assert ledger.memory_used_mib() == {GPU_0: 0, GPU_1: AWAKE_MIB}
