"""The instance table, the revision counter and the bounded event buffer; pure (no I/O).

One revision counter per launcher process, +1 per CREATED, STOPPED or DELETED event, starting
at 0 (a restarted launcher starts again, and its watchers must re-list). Every event is kept in a
buffer of the last :data:`~dpctl.launcher.api.EVENT_BUFFER_SIZE`; a watch may resume after any
revision the buffer still covers, and an older one is :class:`RevisionGone` (HTTP 410).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dpctl.launcher.api import EVENT_BUFFER_SIZE, EventType, Status, VllmConfig, state_object


class InstanceExists(Exception):
    def __init__(self, instance_id: str) -> None:
        super().__init__(f"Instance with ID {instance_id} already exists")


class InstanceNotFound(Exception):
    def __init__(self, instance_id: str) -> None:
        super().__init__(f"Instance {instance_id} not found")


class RevisionGone(Exception):
    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(
            f"Requested revision {requested} is no longer available. Oldest available: {oldest}."
        )
        self.oldest = oldest


@dataclass(frozen=True)
class Event:
    type: EventType
    object: dict[str, Any]

    @property
    def revision(self) -> int:
        revision: int = self.object["revision"]
        return revision

    def line(self) -> bytes:
        """One NDJSON line of the watch stream."""
        return (
            json.dumps({"type": self.type.value, "object": self.object}, separators=(",", ":")).encode()
            + b"\n"
        )


@dataclass
class Instance:
    instance_id: str
    config: VllmConfig  # as it was started: env_vars holds the injected CUDA_VISIBLE_DEVICES
    revision: int  # of this instance's latest event
    exit_code: int | None = None  # once its process ended

    @property
    def status(self) -> Status:
        return Status.RUNNING if self.exit_code is None else Status.STOPPED

    def state(self) -> dict[str, Any]:
        return state_object(self.status, self.instance_id, self.revision, self.config)


class EventBuffer:
    """The last ``capacity`` events, oldest first."""

    def __init__(self, capacity: int = EVENT_BUFFER_SIZE) -> None:
        self._events: deque[Event] = deque(maxlen=capacity)
        self.revision = 0  # of the latest event; 0 before the first

    @property
    def oldest(self) -> int:
        """The buffer holds every event with a revision above this one."""
        return self.revision - len(self._events)

    def append(self, event: Event) -> None:
        self._events.append(event)
        self.revision = event.revision

    def after(self, since: int) -> list[Event]:
        """The events with revision > ``since``; RevisionGone when some of them fell out."""
        if since < self.oldest:
            raise RevisionGone(since, self.oldest)
        return [e for e in self._events if e.revision > since]


class InstanceTable:
    """Instances by id (insertion order, as the list endpoint shows them) and their events."""

    def __init__(self, buffer_capacity: int = EVENT_BUFFER_SIZE) -> None:
        self._instances: dict[str, Instance] = {}
        self.events = EventBuffer(buffer_capacity)

    @property
    def revision(self) -> int:
        return self.events.revision

    def __contains__(self, instance_id: str) -> bool:
        return instance_id in self._instances

    def __iter__(self) -> Iterator[Instance]:
        return iter(list(self._instances.values()))

    def __len__(self) -> int:
        return len(self._instances)

    def get(self, instance_id: str) -> Instance:
        try:
            return self._instances[instance_id]
        except KeyError:
            raise InstanceNotFound(instance_id) from None

    def check_free(self, instance_id: str) -> None:
        """InstanceExists if the id is taken, running or stopped: only a DELETE frees it."""
        if instance_id in self._instances:
            raise InstanceExists(instance_id)

    def created(self, instance_id: str, config: VllmConfig) -> Event:
        self.check_free(instance_id)
        instance = Instance(instance_id, config, self._next_revision())
        self._instances[instance_id] = instance
        return self._publish(EventType.CREATED, instance.state())

    def stopped(self, instance_id: str, exit_code: int) -> Event | None:
        """The process of a listed instance ended (None when it was already deleted)."""
        instance = self._instances.get(instance_id)
        if instance is None or instance.exit_code is not None:
            return None
        instance.exit_code = exit_code
        instance.revision = self._next_revision()
        return self._publish(EventType.STOPPED, {**instance.state(), "exit_code": exit_code})

    def deleted(self, instance_id: str, exit_code: int) -> Event:
        """The instance was stopped on request and leaves the table; its id is free again."""
        instance = self.get(instance_id)
        del self._instances[instance_id]
        if instance.exit_code is None:
            instance.exit_code = exit_code
        instance.revision = self._next_revision()
        return self._publish(EventType.DELETED, instance.state())

    def _next_revision(self) -> int:
        return self.events.revision + 1

    def _publish(self, type_: EventType, obj: dict[str, Any]) -> Event:
        event = Event(type_, obj)
        self.events.append(event)
        return event
