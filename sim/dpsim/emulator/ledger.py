"""The GPU occupancy ledger: which emulated inference servers hold each simulated GPU, awake or
asleep, and the GPU memory they use there.

Contract invariant 1: never two awake inference servers on one GPU. A real GPU enforces a weaker
form of it by running out of memory; a simulated one allocates nothing, so every emulated vLLM reports
here when it starts (begins loading its model onto its GPUs), sleeps, wakes and exits. Starting or
waking on a GPU that another live server holds awake is recorded as a violation, for tests to
assert on; on request the newcomer is also refused, as CUDA would refuse it with out-of-memory.

Memory is accounted here and nowhere else (the simulated ``nvidia-smi`` and the stub read
``memory_used_mib``): a server holds its ``Footprint`` awake (``--gpu-memory-utilization`` of the
GPU: weights and KV cache) and a small residue asleep (sleep level 1 offloads the weights and drops
the KV cache; the CUDA context stays), and nothing once it exits. Memory a server gives up may stay
in use for ``release_delay_s`` more (a ``Release``): a server that has not let go of its memory
yet, as a slow sleep or a process still being torn down leaves it, so that a memory guard before
wake has something to see. A killed process's memory is freed at once, as the driver frees it.
The sum may exceed the GPU's size (after an allowed violation), where a real GPU would have
refused the allocation.

Two implementations share those semantics (``_plan_awake``, ``_releases``, ``_usage``):
``Ledger``, a sqlite file shared by every process of a local cluster
(``$DPCTL_SIM_STATE/gpu-ledger.sqlite``), and ``MemoryLedger`` for servers emulated inside one
process. A holder whose process is gone (killed before it could
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
    mib: int = 0  # GPU memory in use by the holder on this GPU


# What a sleeping vLLM keeps on each GPU at level 1: the CUDA context, NCCL and allocator buffers.
# Real servers show a few hundred MiB to about 1 GiB; well under upstream's per-sleeper budget of
# 4096 MiB, so that a guard can tell asleep from awake.
ASLEEP_RESIDUE_MIB = 512


@dataclass(frozen=True)
class Footprint:
    """GPU memory an emulated server uses on each of its GPUs, awake and asleep."""

    awake_mib: int = 0
    asleep_mib: int = 0

    @classmethod
    def of(cls, total_mib: int, gpu_memory_utilization: float) -> Footprint:
        """vLLM takes ``gpu_memory_utilization`` of each GPU (weights, then KV cache in the rest)."""
        awake = int(total_mib * gpu_memory_utilization)
        return cls(awake_mib=awake, asleep_mib=min(ASLEEP_RESIDUE_MIB, awake))


@dataclass(frozen=True)
class Release:
    """``mib`` given up on ``gpu`` that stays in use until ``until`` (wall-clock)."""

    gpu: str
    mib: int
    until: float


def _releases(holds: Iterable[Hold], keeps_mib: int, now: float, delay_s: float) -> list[Release]:
    """What ``holds`` (one holder's) leave in use for ``delay_s`` when it goes down to ``keeps_mib``."""
    if delay_s <= 0:
        return []
    return [Release(h.gpu, h.mib - keeps_mib, now + delay_s) for h in holds if h.mib > keeps_mib]


def _usage(live: Iterable[Hold], releases: Iterable[Release], now: float) -> dict[str, int]:
    """GPU UUID -> MiB in use: the live holds and the releases not over yet (GPUs with any)."""
    used: dict[str, int] = {}
    for hold in live:
        used[hold.gpu] = used.get(hold.gpu, 0) + hold.mib
    for release in releases:
        if release.until > now:
            used[release.gpu] = used.get(release.gpu, 0) + release.mib
    return used


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
    live: Iterable[Hold],
    holder: Holder,
    gpus: Collection[str],
    action: Action,
    refuse: bool,
    now: float,
    mib: int,
) -> tuple[list[Hold], list[Violation]]:
    """The holds to write and the violations to record when ``holder`` becomes awake on ``gpus``,
    using ``mib`` on each."""
    conflicts = [h for h in live if h.awake and h.gpu in gpus and h.holder != holder]
    refused = refuse and bool(conflicts)
    violations = [Violation(now, h.gpu, action, h.holder, holder, refused) for h in conflicts]
    awake = [] if refused else [Hold(gpu, holder, awake=True, since=now, mib=mib) for gpu in gpus]
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

    def start(
        self, holder: Holder, gpus: Collection[str], *, refuse_conflict: bool, mib: int = 0
    ) -> list[Violation]:
        """``holder`` begins loading a model onto ``gpus``, using ``mib`` on each; returns the
        violations this causes.

        With ``refuse_conflict`` a violation means the holder does not get the GPUs (it fails).
        """
        return self._awaken(holder, gpus, Action.START, refuse_conflict, mib)

    def wake(self, holder: Holder, *, refuse_conflict: bool, mib: int = 0) -> list[Violation]:
        """``holder`` wakes on the GPUs it holds asleep, using ``mib`` on each again; returns the
        violations this causes.

        With ``refuse_conflict`` a violation means the holder stays asleep (the wake fails).
        """
        return self._awaken(holder, None, Action.WAKE, refuse_conflict, mib)

    @abstractmethod
    def _awaken(
        self, holder: Holder, gpus: Collection[str] | None, action: Action, refuse: bool, mib: int
    ) -> list[Violation]:
        """Apply ``_plan_awake``; ``gpus`` None means those the holder already holds."""

    @abstractmethod
    def sleep(self, holder: Holder, *, mib: int = 0, release_delay_s: float = 0.0) -> None:
        """The holder keeps its GPUs, and ``mib`` on each, but no longer holds them awake; what it
        gave up stays in use for ``release_delay_s``."""

    @abstractmethod
    def exit(self, holder: Holder, *, release_delay_s: float = 0.0) -> None:
        """The holder lets go of everything; its memory stays in use for ``release_delay_s``."""

    @abstractmethod
    def memory_used_mib(self) -> dict[str, int]:
        """GPU UUID -> MiB in use now, for every GPU where any is (as ``_usage``)."""

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
        self._releases: list[Release] = []

    def _live(self) -> list[Hold]:
        return [h for h in self._holds.values() if pid_alive(h.holder.pid)]

    def _awaken(
        self, holder: Holder, gpus: Collection[str] | None, action: Action, refuse: bool, mib: int
    ) -> list[Violation]:
        with self._lock:
            live = self._live()
            if gpus is None:
                gpus = {h.gpu for h in live if h.holder == holder}
            awake, violations = _plan_awake(live, holder, gpus, action, refuse, time.time(), mib)
            self._holds.update({(h.gpu, h.holder): h for h in awake})
            self._violations.extend(violations)
            return violations

    def sleep(self, holder: Holder, *, mib: int = 0, release_delay_s: float = 0.0) -> None:
        now = time.time()
        with self._lock:
            mine = {k: h for k, h in self._holds.items() if h.holder == holder and h.awake}
            self._keep_releases(_releases(mine.values(), mib, now, release_delay_s), now)
            for key, hold in mine.items():
                self._holds[key] = replace(hold, awake=False, since=now, mib=mib)

    def exit(self, holder: Holder, *, release_delay_s: float = 0.0) -> None:
        now = time.time()
        with self._lock:
            mine = [h for h in self._holds.values() if h.holder == holder]
            self._keep_releases(_releases(mine, 0, now, release_delay_s), now)
            self._holds = {k: h for k, h in self._holds.items() if h.holder != holder}

    def _keep_releases(self, new: list[Release], now: float) -> None:
        # Pruned on every write, so the list holds only releases not over yet.
        self._releases = [r for r in self._releases if r.until > now] + new

    def memory_used_mib(self) -> dict[str, int]:
        with self._lock:
            return _usage(self._live(), self._releases, time.time())

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
            self._releases.clear()


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
    "CREATE TABLE IF NOT EXISTS releases (gpu TEXT NOT NULL, mib INTEGER NOT NULL, until REAL NOT NULL)",
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
            # One writer at a time: processes opening a new or old file at once must not both
            # find the column missing and both add it.
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                conn.execute(statement)
            # A ledger written before memory was accounted (a local cluster's state dir outlives
            # upgrades): its holds count as using none.
            columns = {row[1] for row in conn.execute("PRAGMA table_info(holds)")}
            if "mib" not in columns:
                conn.execute("ALTER TABLE holds ADD COLUMN mib INTEGER NOT NULL DEFAULT 0")
            conn.execute("COMMIT")
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
        rows = conn.execute("SELECT gpu, pod, pod_uid, pid, awake, since, mib FROM holds").fetchall()
        holds = [
            Hold(gpu, Holder(pod, uid, pid), bool(awake), at, mib)
            for gpu, pod, uid, pid, awake, at, mib in rows
        ]
        dead = {h.holder for h in holds if not pid_alive(h.holder.pid)}
        if prune:
            conn.executemany(
                "DELETE FROM holds WHERE pod = ? AND pod_uid = ? AND pid = ?", [_holder_key(h) for h in dead]
            )
        return [h for h in holds if h.holder not in dead]

    def _awaken(
        self, holder: Holder, gpus: Collection[str] | None, action: Action, refuse: bool, mib: int
    ) -> list[Violation]:
        with self._transaction(write=True) as conn:
            live = self._live(conn, prune=True)
            if gpus is None:
                gpus = {h.gpu for h in live if h.holder == holder}
            awake, violations = _plan_awake(live, holder, gpus, action, refuse, time.time(), mib)
            conn.executemany(
                "INSERT OR REPLACE INTO holds (gpu, pod, pod_uid, pid, awake, since, mib)"
                " VALUES (?, ?, ?, ?, 1, ?, ?)",
                [(h.gpu, *_holder_key(h.holder), h.since, h.mib) for h in awake],
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

    def sleep(self, holder: Holder, *, mib: int = 0, release_delay_s: float = 0.0) -> None:
        now = time.time()
        with self._transaction(write=True) as conn:
            mine = [h for h in self._live(conn, prune=False) if h.holder == holder and h.awake]
            self._keep_releases(conn, _releases(mine, mib, now, release_delay_s), now)
            conn.execute(
                "UPDATE holds SET awake = 0, since = ?, mib = ?"
                " WHERE awake = 1 AND pod = ? AND pod_uid = ? AND pid = ?",
                (now, mib, *_holder_key(holder)),
            )

    def exit(self, holder: Holder, *, release_delay_s: float = 0.0) -> None:
        now = time.time()
        with self._transaction(write=True) as conn:
            mine = [h for h in self._live(conn, prune=False) if h.holder == holder]
            self._keep_releases(conn, _releases(mine, 0, now, release_delay_s), now)
            conn.execute("DELETE FROM holds WHERE pod = ? AND pod_uid = ? AND pid = ?", _holder_key(holder))

    @staticmethod
    def _keep_releases(conn: sqlite3.Connection, new: list[Release], now: float) -> None:
        # Pruned on every write, so the table holds only releases not over yet.
        conn.execute("DELETE FROM releases WHERE until <= ?", (now,))
        conn.executemany(
            "INSERT INTO releases (gpu, mib, until) VALUES (?, ?, ?)", [(r.gpu, r.mib, r.until) for r in new]
        )

    def memory_used_mib(self) -> dict[str, int]:
        with self._transaction(write=False) as conn:
            live = self._live(conn, prune=False)
            rows = conn.execute("SELECT gpu, mib, until FROM releases").fetchall()
        return _usage(live, [Release(gpu, mib, until) for gpu, mib, until in rows], time.time())

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
            conn.execute("DELETE FROM releases")
