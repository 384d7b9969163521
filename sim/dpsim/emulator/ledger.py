"""The GPU occupancy ledger: which emulated inference servers hold each simulated GPU, awake or asleep.

Contract invariant 1: never two awake inference servers on one GPU. A real GPU enforces a weaker
form of it by running out of memory; a simulated one has no memory, so every emulated vLLM reports
here when it starts (begins loading its model onto its GPUs), sleeps, wakes and exits. Starting or
waking on a GPU that another live server holds awake is recorded as a violation, for tests to
assert on; on request the newcomer is also refused, as CUDA would refuse it with out-of-memory.

Two implementations share those semantics (``_plan_awake``): ``Ledger``, a sqlite file shared by
every process of a local cluster (``$DPCTL_SIM_STATE/gpu-ledger.sqlite``), and ``MemoryLedger``
for servers emulated inside one process. A holder whose process is gone (killed before it could
say so) is ignored, and the sqlite ledger deletes its rows.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from dpsim.simenv import POD_ENV, POD_UID_ENV


class Action(StrEnum):
    START = "start"
    WAKE = "wake"


@dataclass(frozen=True)
class Holder:
    """One emulated inference server: its pod (``namespace/name``; empty when run by hand) and process."""

    pod: str
    pod_uid: str
    pid: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Holder:
        return cls(pod=env.get(POD_ENV, ""), pod_uid=env.get(POD_UID_ENV, ""), pid=os.getpid())

    def __str__(self) -> str:
        return f"{self.pod or '(no pod)'} (uid {self.pod_uid or '-'}, pid {self.pid})"


@dataclass(frozen=True)
class Hold:
    gpu: str
    holder: Holder
    awake: bool
    since: float  # wall-clock time of the last change


@dataclass(frozen=True)
class Violation:
    """``intruder`` started or woke on ``gpu`` while ``holder`` was awake there."""

    at: float
    gpu: str
    action: Action
    holder: Holder
    intruder: Holder
    refused: bool  # the intruder failed with CUDA out-of-memory instead of running

    def __str__(self) -> str:
        outcome = "refused" if self.refused else "allowed"
        return f"{self.intruder} {self.action} on {self.gpu} held awake by {self.holder} ({outcome})"


def _plan_awake(
    live: Iterable[Hold], holder: Holder, gpus: Collection[str], action: Action, refuse: bool, now: float
) -> tuple[list[Hold], list[Violation]]:
    """The holds to write and the violations to record when ``holder`` becomes awake on ``gpus``."""
    conflicts = [h for h in live if h.awake and h.gpu in gpus and h.holder != holder]
    refused = refuse and bool(conflicts)
    violations = [Violation(now, h.gpu, action, h.holder, holder, refused) for h in conflicts]
    awake = [] if refused else [Hold(gpu, holder, awake=True, since=now) for gpu in gpus]
    return awake, violations


def pid_alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie awaiting its parent's wait()."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # Field 3 of /proc/<pid>/stat is the state; the command name before it may hold spaces.
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


class GpuLedger(ABC):
    """What an emulated server reports and what tests ask; one GPU is one UUID."""

    def start(self, holder: Holder, gpus: Collection[str], *, refuse_conflict: bool) -> list[Violation]:
        """``holder`` begins loading a model onto ``gpus``; returns the violations this causes.

        With ``refuse_conflict`` a violation means the holder does not get the GPUs (it fails).
        """
        return self._awaken(holder, gpus, Action.START, refuse_conflict)

    def wake(self, holder: Holder, *, refuse_conflict: bool) -> list[Violation]:
        """``holder`` wakes on the GPUs it holds asleep; returns the violations this causes.

        With ``refuse_conflict`` a violation means the holder stays asleep (the wake fails).
        """
        return self._awaken(holder, None, Action.WAKE, refuse_conflict)

    @abstractmethod
    def _awaken(
        self, holder: Holder, gpus: Collection[str] | None, action: Action, refuse: bool
    ) -> list[Violation]:
        """Apply ``_plan_awake``; ``gpus`` None means those the holder already holds."""

    @abstractmethod
    def sleep(self, holder: Holder) -> None:
        """The holder keeps its GPUs but no longer holds them awake."""

    @abstractmethod
    def exit(self, holder: Holder) -> None:
        """The holder lets go of everything."""

    @abstractmethod
    def holds(self) -> list[Hold]:
        """Every hold of a live holder."""

    @abstractmethod
    def violations(self) -> list[Violation]:
        """Every violation recorded since the last clear(), oldest first."""

    @abstractmethod
    def clear(self) -> None: ...

    def awake_holders(self) -> dict[str, Holder]:
        """GPU UUID -> the live holder that holds it awake; after an allowed violation, the earliest."""
        result: dict[str, Holder] = {}
        for hold in sorted(self.holds(), key=lambda h: h.since):
            if hold.awake:
                result.setdefault(hold.gpu, hold.holder)
        return result


class MemoryLedger(GpuLedger):
    """The ledger of servers emulated in one process (the hollow kubelet)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holds: dict[tuple[str, Holder], Hold] = {}
        self._violations: list[Violation] = []

    def _live(self) -> list[Hold]:
        return [h for h in self._holds.values() if pid_alive(h.holder.pid)]

    def _awaken(
        self, holder: Holder, gpus: Collection[str] | None, action: Action, refuse: bool
    ) -> list[Violation]:
        with self._lock:
            live = self._live()
            if gpus is None:
                gpus = {h.gpu for h in live if h.holder == holder}
            awake, violations = _plan_awake(live, holder, gpus, action, refuse, time.time())
            self._holds.update({(h.gpu, h.holder): h for h in awake})
            self._violations.extend(violations)
            return violations

    def sleep(self, holder: Holder) -> None:
        now = time.time()
        with self._lock:
            for key, hold in self._holds.items():
                if hold.holder == holder and hold.awake:
                    self._holds[key] = replace(hold, awake=False, since=now)

    def exit(self, holder: Holder) -> None:
        with self._lock:
            self._holds = {k: h for k, h in self._holds.items() if h.holder != holder}

    def holds(self) -> list[Hold]:
        with self._lock:
            return self._live()

    def violations(self) -> list[Violation]:
        with self._lock:
            return list(self._violations)

    def clear(self) -> None:
        with self._lock:
            self._holds.clear()
            self._violations.clear()


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS holds (
        gpu TEXT NOT NULL, pod TEXT NOT NULL, pod_uid TEXT NOT NULL, pid INTEGER NOT NULL,
        awake INTEGER NOT NULL, since REAL NOT NULL,
        PRIMARY KEY (gpu, pod, pod_uid, pid))""",
    """CREATE TABLE IF NOT EXISTS violations (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, gpu TEXT NOT NULL,
        action TEXT NOT NULL, refused INTEGER NOT NULL,
        holder_pod TEXT NOT NULL, holder_uid TEXT NOT NULL, holder_pid INTEGER NOT NULL,
        intruder_pod TEXT NOT NULL, intruder_uid TEXT NOT NULL, intruder_pid INTEGER NOT NULL)""",
)


def _holder_key(holder: Holder) -> tuple[str, str, int]:
    return holder.pod, holder.pod_uid, holder.pid


class Ledger(GpuLedger):
    """The ledger shared by the processes of a local cluster, in one sqlite file.

    Every call is one short transaction on a fresh connection, so a Ledger may be used from any
    thread; writers take the database lock up front (BEGIN IMMEDIATE) so that reading the holds
    and writing the outcome cannot interleave with another process doing the same.
    """

    def __init__(self, path: Path, *, busy_timeout_s: float = 10.0) -> None:
        self.path = path
        self._busy_timeout_s = busy_timeout_s
        path.parent.mkdir(parents=True, exist_ok=True)
        # Switching a new file to WAL needs an exclusive lock, and sqlite does not apply the busy
        # timeout to that switch: processes creating the ledger at once retry here, bounded.
        deadline = time.monotonic() + busy_timeout_s
        delay = 0.005
        while True:
            try:
                self._init_schema()
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)  # a blocking constructor, used before any event loop runs
                delay = min(delay * 2, 0.2)

    def _init_schema(self) -> None:
        conn = self._connect()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            for statement in _SCHEMA:
                conn.execute(statement)
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves.
        return sqlite3.connect(self.path, timeout=self._busy_timeout_s, isolation_level=None)

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    @staticmethod
    def _live(conn: sqlite3.Connection, *, prune: bool) -> list[Hold]:
        rows = conn.execute("SELECT gpu, pod, pod_uid, pid, awake, since FROM holds").fetchall()
        holds = [Hold(gpu, Holder(pod, uid, pid), bool(awake), at) for gpu, pod, uid, pid, awake, at in rows]
        dead = {h.holder for h in holds if not pid_alive(h.holder.pid)}
        if prune:
            conn.executemany(
                "DELETE FROM holds WHERE pod = ? AND pod_uid = ? AND pid = ?", [_holder_key(h) for h in dead]
            )
        return [h for h in holds if h.holder not in dead]

    def _awaken(
        self, holder: Holder, gpus: Collection[str] | None, action: Action, refuse: bool
    ) -> list[Violation]:
        with self._transaction(write=True) as conn:
            live = self._live(conn, prune=True)
            if gpus is None:
                gpus = {h.gpu for h in live if h.holder == holder}
            awake, violations = _plan_awake(live, holder, gpus, action, refuse, time.time())
            conn.executemany(
                "INSERT OR REPLACE INTO holds (gpu, pod, pod_uid, pid, awake, since)"
                " VALUES (?, ?, ?, ?, 1, ?)",
                [(h.gpu, *_holder_key(h.holder), h.since) for h in awake],
            )
            conn.executemany(
                "INSERT INTO violations (at, gpu, action, refused, holder_pod, holder_uid, holder_pid,"
                " intruder_pod, intruder_uid, intruder_pid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (v.at, v.gpu, v.action.value, v.refused, *_holder_key(v.holder), *_holder_key(v.intruder))
                    for v in violations
                ],
            )
            return violations

    def sleep(self, holder: Holder) -> None:
        with self._transaction(write=True) as conn:
            conn.execute(
                "UPDATE holds SET awake = 0, since = ?"
                " WHERE awake = 1 AND pod = ? AND pod_uid = ? AND pid = ?",
                (time.time(), *_holder_key(holder)),
            )

    def exit(self, holder: Holder) -> None:
        with self._transaction(write=True) as conn:
            conn.execute("DELETE FROM holds WHERE pod = ? AND pod_uid = ? AND pid = ?", _holder_key(holder))

    def holds(self) -> list[Hold]:
        with self._transaction(write=False) as conn:
            return self._live(conn, prune=False)

    def violations(self) -> list[Violation]:
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT at, gpu, action, refused, holder_pod, holder_uid, holder_pid,"
                " intruder_pod, intruder_uid, intruder_pid FROM violations ORDER BY id"
            ).fetchall()
        return [
            Violation(at, gpu, Action(action), Holder(hp, hu, hpid), Holder(ip, iu, ipid), bool(refused))
            for at, gpu, action, refused, hp, hu, hpid, ip, iu, ipid in rows
        ]

    def clear(self) -> None:
        with self._transaction(write=True) as conn:
            conn.execute("DELETE FROM holds")
            conn.execute("DELETE FROM violations")
