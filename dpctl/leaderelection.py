"""Leader election on a coordination.k8s.io Lease, with client-go's semantics.

A candidate takes the Lease when it is free or its holder stopped renewing for longer than the
lease duration; the leader renews every retry period and steps down (``lost`` is set) if it
cannot renew within the renew deadline, before any other candidate may take over. Writes are
optimistic (resourceVersion), so two candidates never both win. Timestamps are MicroTime,
formatted explicitly (``datetime.isoformat`` drops the fraction when it is zero, which the API
server rejects).

Two rules keep that promise when the network and clocks misbehave, as in client-go:
- expiry is judged by this process's monotonic clock, from when it last saw the Lease change,
  never by comparing the holder's ``renewTime`` with the local wall clock (skewed clocks would
  let a standby take a live leader's Lease);
- each renewal attempt is cut off at the renew deadline, so a hung API call cannot keep a
  leader acting after its Lease may have passed to another; any failure of an attempt
  (HTTP, connection, a body that is not JSON) counts as a failed attempt, never ends the loop.

Generic: knows Leases, not what the leader does.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from dataclasses import dataclass
from typing import Any

from dpctl import log
from dpctl.kube import LEASES, ApiError, Kube

_log = log.get("leaderelection")


def micro_time(t: dt.datetime | None = None) -> str:
    t = t or dt.datetime.now(dt.UTC)
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseSettings:
    name: str
    namespace: str
    identity: str
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0


class LeaderElector:
    def __init__(self, kube: Kube, settings: LeaseSettings) -> None:
        if settings.renew_deadline_s >= settings.lease_duration_s:
            raise ValueError("the renew deadline must be shorter than the lease duration")
        self.kube = kube
        self.s = settings
        self.leading = asyncio.Event()
        self.lost = asyncio.Event()
        self.observed_holder = ""
        # The Lease's spec as last read, and when (monotonic) it was first seen like that.
        self._observed_spec: dict[str, Any] | None = None
        self._observed_at = 0.0

    async def run(self) -> None:
        """Acquire, then renew until renewal fails past the deadline (sets ``lost``) or cancelled."""
        last_renew = await self._acquire()
        self.leading.set()
        _log.info("Became leader", lease=self.s.name, identity=self.s.identity)
        try:
            while True:
                await asyncio.sleep(self.s.retry_period_s)
                # Measured from the start of the last good attempt: its renewTime is no later.
                started = time.monotonic()
                left = self.s.renew_deadline_s - (started - last_renew)
                if left > 0 and await self._try_within(left):
                    last_renew = started
                    continue
                taken = self.observed_holder not in ("", self.s.identity)
                if taken or time.monotonic() - last_renew >= self.s.renew_deadline_s:
                    why = (
                        f"the lease is held by {self.observed_holder}" if taken else "could not renew in time"
                    )
                    _log.warning(f"Lost leadership: {why}", lease=self.s.name)
                    self.leading.clear()
                    self.lost.set()
                    return
        except asyncio.CancelledError:
            await self._release()
            raise

    async def _acquire(self) -> float:
        """Try until this candidate holds the lease; the monotonic start of the winning attempt."""
        while True:
            started = time.monotonic()
            if await self._try():
                return started
            await asyncio.sleep(self.s.retry_period_s * (1 + random.random() * 0.2))

    async def _try_within(self, seconds: float) -> bool:
        try:
            return await asyncio.wait_for(self._try(), seconds)
        except TimeoutError:
            _log.progress("Lease renewal timed out", lease=self.s.name, seconds=round(seconds, 3))
            return False

    async def _try(self) -> bool:
        """One acquire-or-renew attempt; True when this candidate holds the lease afterwards."""
        now = dt.datetime.now(dt.UTC)
        try:
            lease = await self.kube.get(LEASES, self.s.name, self.s.namespace)
        except ApiError as err:
            if not err.not_found:
                _log.progress("Lease read failed", error=str(err))
                return False
            return await self._write(None, now, acquire=True)
        except Exception as err:  # connection reset, timeout, a body that is not JSON: try again
            _log.progress("Lease read failed", error=repr(err))
            return False
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        self.observed_holder = holder
        if spec != self._observed_spec:
            self._observed_spec, self._observed_at = dict(spec), time.monotonic()
        if holder and holder != self.s.identity:
            try:
                duration = float(spec.get("leaseDurationSeconds") or self.s.lease_duration_s)
            except (TypeError, ValueError):
                duration = self.s.lease_duration_s
            if time.monotonic() - self._observed_at < duration:
                return False
        return await self._write(lease, now, acquire=holder != self.s.identity)

    async def _write(self, lease: dict[str, Any] | None, now: dt.datetime, acquire: bool) -> bool:
        spec: dict[str, Any] = dict((lease or {}).get("spec") or {})
        spec.update(
            holderIdentity=self.s.identity,
            leaseDurationSeconds=int(self.s.lease_duration_s),
            renewTime=micro_time(now),
        )
        if acquire:
            spec["acquireTime"] = micro_time(now)
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if lease else 0)
        try:
            if lease is None:
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.s.name, "namespace": self.s.namespace},
                    "spec": spec,
                }
                await self.kube.create(LEASES, body, self.s.namespace)
            else:
                await self.kube.update(LEASES, {**lease, "spec": spec}, self.s.namespace)
        except ApiError as err:
            if not (err.conflict or err.already_exists):
                _log.progress("Lease write failed", error=str(err))
            return False
        except Exception as err:  # any failure is a failed attempt
            _log.progress("Lease write failed", error=repr(err))
            return False
        return True

    async def _release(self) -> None:
        """Hand the lease over at once on a clean shutdown instead of making a standby wait."""
        if not self.leading.is_set():
            return
        try:
            lease = await self.kube.get(LEASES, self.s.name, self.s.namespace)
            if (lease.get("spec") or {}).get("holderIdentity") == self.s.identity:
                spec = {
                    **lease["spec"],
                    "holderIdentity": "",
                    "renewTime": micro_time(),
                    "leaseDurationSeconds": 1,
                }
                await self.kube.update(LEASES, {**lease, "spec": spec}, self.s.namespace)
        except Exception as err:  # best effort: the lease expires anyway
            _log.progress("Could not release the lease", error=repr(err))
