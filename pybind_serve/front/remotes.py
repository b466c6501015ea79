"""The `RemoteServe` processes attached to this front: which models each loaded, and what is done when one ends.

A `RemoteServe` (`pybind_serve.remote`: another process of this host, binding models into a running server)
``attach``es to every front, giving its pid and start time, its id (which also begins the identities of its
workers) and the owner name of its shared-memory segments. The front watches that process through a pidfd on its
event loop, so it learns the moment the process ends, however it ends (SIGKILL too), even when its model code
holds the GIL: then ``on_gone`` forgets its workers (their batches in flight fail with `WorkerDiedError`, queued
requests with `ModelNotReadyError`), unloads its models and removes its segments.

Each loaded model version belongs to whoever loaded it last: the owning `Serve` or a `RemoteServe` (a name bound
by both is served by the later binding, as in PyTriton). An ``unload`` from anyone else, and a remote's ending,
leave a model that another binding took over alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import StartupError
from ..linux import process_start_time

__all__ = ["Remote", "Remotes"]

log = logging.getLogger("pybind_serve.front")

ModelKey = tuple[str, int]
_ID = re.compile(r"^remote\d+x[0-9a-f]{6,32}$")  # `RemoteServe`'s id: what its workers' identities start with
_OWNER = re.compile(r"^(\d+)_[0-9a-f]{6,32}$")  # a segment owner name (`transport.shm.new_owner`)


@dataclass(eq=False)
class Remote:
    """One attached `RemoteServe` process."""

    id: str
    pid: int
    owner: str  # the owner name of its shared-memory segments
    pidfd: int
    models: set[ModelKey] = field(default_factory=set)

    @property
    def worker_prefix(self) -> bytes:
        """How the identities of its workers begin (`Supervisor`'s ``prefix``, then ``-``)."""
        return f"{self.id}-".encode()


class Remotes:
    """The attached remotes, and which of them owns each loaded model version (none: the owning `Serve`)."""

    def __init__(self, on_gone: Callable[[Remote], None]) -> None:
        self._on_gone = on_gone
        self._remotes: dict[str, Remote] = {}
        self._loaded_by: dict[ModelKey, str] = {}

    def attach(self, frame: dict[str, Any]) -> bool:
        """Attach (or confirm) the remote a frame describes; whether it was attached already. `StartupError` if
        the frame does not describe a live process of this host."""
        remote_id, pid, owner = frame.get("id"), frame.get("pid"), frame.get("owner")
        if not isinstance(remote_id, str) or not _ID.match(remote_id):
            raise StartupError(f"not a RemoteServe id: {remote_id!r}")
        if remote_id in self._remotes:
            return True
        match = _OWNER.match(owner) if isinstance(owner, str) else None
        if not isinstance(pid, int) or not isinstance(owner, str) or match is None or int(match.group(1)) != pid:
            raise StartupError(f"a RemoteServe attaches with its pid and segment owner, got {pid!r} and {owner!r}")
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            pidfd = -1
        # Opened first, checked then: the pidfd refers to the process that has this start time, or to none.
        if pidfd < 0 or process_start_time(pid) != frame.get("started"):
            if pidfd >= 0:
                os.close(pidfd)
            raise StartupError(
                f"no process {pid} that started at {frame.get('started')!r} runs here: RemoteServe must run on the "
                "server's host, in its PID namespace (not in another container)"
            )
        remote = Remote(remote_id, pid, owner, pidfd)
        self._remotes[remote_id] = remote
        asyncio.get_running_loop().add_reader(pidfd, self._ended, remote)
        log.info("RemoteServe %s (pid %d) attached", remote_id, pid)
        return False

    def detach(self, remote_id: str) -> Remote | None:
        """Stop watching a remote (it closed); the remote, with the models it still owns, or None."""
        remote = self._remotes.pop(remote_id, None)
        if remote is not None:
            self._unwatch(remote)
            remote.models = {key for key in remote.models if self._loaded_by.get(key) == remote.id}
            for key in remote.models:
                del self._loaded_by[key]
        return remote

    def check(self, remote_id: str) -> None:
        """`StartupError` unless ``remote_id`` is attached here."""
        if remote_id not in self._remotes:
            raise StartupError(f"RemoteServe {remote_id!r} is not attached to this front: it must attach first")

    def owner_of(self, key: ModelKey) -> str | None:
        """The id of the remote that loaded a model version last; None: the owning `Serve` did (or nobody)."""
        return self._loaded_by.get(key)

    def loaded(self, key: ModelKey, remote_id: str | None) -> None:
        """A model version was loaded by a remote (``remote_id``) or the owning `Serve` (None)."""
        if remote_id is None:
            self._loaded_by.pop(key, None)
        else:
            self._loaded_by[key] = remote_id
            self._remotes[remote_id].models.add(key)

    def unloaded(self, key: ModelKey) -> None:
        self._loaded_by.pop(key, None)

    def _ended(self, remote: Remote) -> None:
        if self._remotes.get(remote.id) is not remote:
            return
        self.detach(remote.id)
        log.warning("RemoteServe %s (pid %d) ended; its models are unloaded", remote.id, remote.pid)
        self._on_gone(remote)

    def _unwatch(self, remote: Remote) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed
            asyncio.get_running_loop().remove_reader(remote.pidfd)
        os.close(remote.pidfd)

    def close(self) -> None:
        for remote in self._remotes.values():
            self._unwatch(remote)
        self._remotes.clear()
