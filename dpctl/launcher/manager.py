"""The launcher's state and actions: the instance table, the children and the GPU map together.

What the HTTP handlers call. Checks and table changes happen without an ``await`` between them,
so two concurrent PUTs of one id cannot both pass the check (one 201, one 409). A DELETE that is
still stopping its child keeps the id taken; concurrent DELETEs of one id share one stop. A child
that exits on its own is STOPPED (with its exit code); one stopped by a DELETE is only DELETED,
as upstream reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Final

from dpctl.launcher.api import (
    CUDA_DEVICE_ORDER_ENV,
    CUDA_VISIBLE_DEVICES_ENV,
    EVENT_BUFFER_SIZE,
    PCI_BUS_ID_ORDER,
    EventType,
    VllmConfig,
)
from dpctl.launcher.children import ChildProcess, Program, start_child
from dpctl.launcher.gpus import GpuIndex, cuda_visible_devices
from dpctl.launcher.table import Event, InstanceNotFound, InstanceTable, RevisionGone

log = logging.getLogger(__name__)

DEFAULT_STOP_GRACE_S: Final = 10.0


class Manager:
    def __init__(
        self,
        program: Program,
        gpus: GpuIndex,
        log_dir: Path,
        stop_grace_s: float = DEFAULT_STOP_GRACE_S,
        env: Mapping[str, str] = os.environ,
        buffer_capacity: int = EVENT_BUFFER_SIZE,
    ) -> None:
        self.program = program
        self.gpus = gpus
        self.log_dir = log_dir
        self.stop_grace_s = stop_grace_s
        self.env = env
        self.table = InstanceTable(buffer_capacity)
        self._children: dict[str, ChildProcess] = {}
        self._stopping: dict[str, asyncio.Task[dict[str, Any]]] = {}
        self._changed = asyncio.Event()
        self.closed = False

    def log_path(self, instance_id: str) -> Path:
        return self.log_dir / f"launcher-{os.getpid()}-vllm-{instance_id}.log"

    async def create(self, config: VllmConfig, instance_id: str | None = None) -> dict[str, Any]:
        """Start an instance; InstanceExists, UnknownGpu, GpuLookupFailed or OSError."""
        instance_id = instance_id or str(uuid.uuid4())
        self.table.check_free(instance_id)
        config = config.model_copy(deep=True)
        child_env = dict(self.env)
        if config.gpu_uuids:
            indices = await self.gpus.indices(config.gpu_uuids)
            config.env_vars = {
                **(config.env_vars or {}),
                CUDA_VISIBLE_DEVICES_ENV: cuda_visible_devices(indices),
            }
        child_env.update(config.env_vars or {})
        if config.gpu_uuids:
            child_env[CUDA_DEVICE_ORDER_ENV] = PCI_BUS_ID_ORDER
        # Again: another request may have taken the id while the GPUs were looked up.
        self.table.check_free(instance_id)
        try:
            child = start_child(
                self.program,
                config.options.split(),
                child_env,
                self.log_path(instance_id),
                lambda code: self._exited(instance_id, code),
            )
        except OSError:
            with contextlib.suppress(FileNotFoundError):
                self.log_path(instance_id).unlink()
            raise
        self._children[instance_id] = child
        event = self.table.created(instance_id, config)
        log.info("Started vLLM instance %s (pid %d): %s", instance_id, child.pid, config.options)
        self._wake_watchers()
        return event.object

    def _exited(self, instance_id: str, code: int) -> None:
        if instance_id in self._stopping:
            return  # the DELETE reports it
        log.warning("vLLM instance %s exited on its own with code %d", instance_id, code)
        if self.table.stopped(instance_id, code) is not None:
            self._wake_watchers()

    async def delete(self, instance_id: str) -> dict[str, Any]:
        """Stop the instance and forget it; its state with status "stopped". InstanceNotFound."""
        task = self._stopping.get(instance_id)
        if task is None:
            self.table.get(instance_id)
            task = asyncio.create_task(self._stop(instance_id))
            self._stopping[instance_id] = task
        # Shielded: a client that hangs up must not leave a half-stopped instance.
        return await asyncio.shield(task)

    async def _stop(self, instance_id: str) -> dict[str, Any]:
        try:
            code = await self._children[instance_id].stop(self.stop_grace_s)
            with contextlib.suppress(FileNotFoundError):
                self.log_path(instance_id).unlink()
            del self._children[instance_id]
            event = self.table.deleted(instance_id, code)
        finally:
            del self._stopping[instance_id]
        log.info("Stopped and deleted vLLM instance %s (exit code %d)", instance_id, code)
        self._wake_watchers()
        return event.object

    async def delete_all(self) -> dict[str, Any]:
        ids = [i.instance_id for i in self.table]
        outcomes = await asyncio.gather(*(self.delete(i) for i in ids), return_exceptions=True)
        stopped: list[dict[str, Any]] = []
        for outcome in outcomes:
            if isinstance(outcome, InstanceNotFound):
                continue  # deleted meanwhile by another request
            if isinstance(outcome, BaseException):
                raise outcome
            stopped.append(outcome)
        return {"status": "all_stopped", "stopped_instances": stopped, "total_stopped": len(stopped)}

    def detail(self) -> dict[str, Any]:
        states = [i.state() for i in self.table]
        return {
            "revision": self.table.revision,
            "total_instances": len(states),
            "running_instances": sum(1 for s in states if s["status"] == "running"),
            "instances": states,
        }

    def ids(self) -> dict[str, Any]:
        ids = [i.instance_id for i in self.table]
        return {"revision": self.table.revision, "instance_ids": ids, "count": len(ids)}

    def watch_start(self, since: int | None) -> tuple[list[bytes], int]:
        """The lines to send first and the revision to follow from; RevisionGone for an old ``since``."""
        if since is None:
            return [Event(EventType.CREATED, i.state()).line() for i in self.table], self.table.revision
        self.table.events.after(since)
        return [], since

    async def follow(self, cursor: int) -> AsyncIterator[bytes]:
        """The events after ``cursor`` as they happen; ends when the reader fell out of the buffer
        (it must re-list) or the launcher shuts down."""
        while not self.closed:
            changed = self._changed
            try:
                events = self.table.events.after(cursor)
            except RevisionGone:
                return
            for event in events:
                yield event.line()
                cursor = event.revision
            if not events:
                await changed.wait()

    def _wake_watchers(self) -> None:
        # The event is in the table's buffer already; each watcher reads on from its cursor.
        self._changed.set()
        self._changed = asyncio.Event()

    def end_watches(self) -> None:
        self.closed = True
        self._changed.set()
