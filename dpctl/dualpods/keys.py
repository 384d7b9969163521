"""Work-queue keys of the dual-pods controller.

One inference server is identified by its requester's UID, never by a name: a ReplicaSet can
recreate a requester with the same name, and the old one's runner must not be mistaken for the
new one's. Unbound runners and launchers get their own key for housekeeping (a sleeper whose
server restarted comes back awake and must be put back to sleep; a launcher's stopped instances
go), and so does an InferenceServerConfig that changed (its obsolete sleeping instances go).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerKey:
    """An inference server: the requester's UID (its name only for logs)."""

    uid: str


@dataclass(frozen=True, slots=True)
class RunnerKey:
    """An unbound runner or launcher, by UID."""

    uid: str


@dataclass(frozen=True, slots=True)
class IscKey:
    """An InferenceServerConfig whose spec changed or that was deleted, by name."""

    name: str


Key = ServerKey | RunnerKey | IscKey
