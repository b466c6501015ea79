"""The front's registry of loaded model versions: spec, scheduler and the workers serving each."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ..errors import ModelNotFoundError, ModelNotReadyError, UnavailableError
from ..protocol.messages import ModelSpec
from ..scheduler import Scheduler

__all__ = ["ModelEntry", "Models"]


@dataclass(eq=False)
class ModelEntry:
    """One loaded model version."""

    spec: ModelSpec
    scheduler: Scheduler
    workers: set[str] = field(default_factory=set)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def is_ready(self) -> bool:
        return bool(self.workers)

    def add_worker(self, identity: str) -> None:
        self.workers.add(identity)
        self.ready.set()

    def remove_worker(self, identity: str) -> None:
        self.workers.discard(identity)
        if not self.workers:
            self.ready.clear()


class Models:
    """Model versions by name; resolves the version a request asks for (none = the latest)."""

    def __init__(self) -> None:
        self._by_name: dict[str, dict[int, ModelEntry]] = {}

    def load(self, spec: ModelSpec) -> ModelEntry:
        """Register a model version, replacing (and closing the queue of) one of the same name and version."""
        old = self._by_name.get(spec.name, {}).get(spec.version)
        if old is not None:
            old.scheduler.close(UnavailableError(f"{spec.label} was re-bound while the request waited; retry it"))
        entry = ModelEntry(spec, Scheduler(spec.label, spec.config))
        self._by_name.setdefault(spec.name, {})[spec.version] = entry
        return entry

    def unload(self, name: str, version: int) -> ModelEntry | None:
        versions = self._by_name.get(name, {})
        entry = versions.pop(version, None)
        if not versions:
            self._by_name.pop(name, None)
        if entry is not None:
            entry.scheduler.close(UnavailableError(f"{entry.spec.label} was unloaded"))
        return entry

    def find(self, name: str, version: str | int | None = None) -> ModelEntry:
        """The entry for a request's model and version (`ModelNotFoundError` if there is none)."""
        versions = self._by_name.get(name)
        if not versions:
            raise ModelNotFoundError(f"unknown model {name!r}; loaded models: {sorted(self._by_name) or 'none'}")
        if version in (None, ""):
            return versions[max(versions)]
        try:
            return versions[int(version)]
        except (KeyError, ValueError):
            known = ", ".join(str(v) for v in sorted(versions))
            raise ModelNotFoundError(f"model {name!r} has no version {version!r}; versions: {known}") from None

    def ready(self, name: str, version: str | int | None = None) -> ModelEntry:
        """Like `find`, but `ModelNotReadyError` when no worker serves the version yet."""
        entry = self.find(name, version)
        if not entry.is_ready:
            raise ModelNotReadyError(f"{entry.spec.label} is not ready: no worker serves it (starting or restarting)")
        return entry

    def entries(self) -> list[ModelEntry]:
        return [entry for versions in self._by_name.values() for entry in versions.values()]

    def close(self, error: Exception) -> None:
        for entry in self.entries():
            entry.scheduler.close(error)
