"""The front's registry of loaded model versions: spec, scheduler and the workers serving each."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import ConfigurationError, ModelNotFoundError, ModelNotReadyError, UnavailableError
from ..scheduler import Scheduler
from ..spec import ModelSpec
from .job import Job
from .response_cache import ResponseCache

__all__ = ["NO_REPOSITORY", "ModelEntry", "Models"]

# Both fronts' answer to the repository extension's load / unload (Triton's model control mode).
NO_REPOSITORY = "pybind_serve has no model repository: models are loaded and unloaded with Serve.bind() / unbind()"


@dataclass(eq=False)
class ModelEntry:
    """One loaded model version, ready while at least one worker can take its batches.

    When the last such worker goes (it died, is restarting, or is stuck past ``execution_timeout_s``), the
    requests still queued fail at once with `ModelNotReadyError` saying why, rather than wait for a worker
    that may never come; new requests are refused the same way until a worker is back.
    """

    spec: ModelSpec
    scheduler: Scheduler[Job]
    workers: set[str] = field(default_factory=set)
    on_change: Callable[[], None] = field(default=lambda: None, repr=False)  # readiness may have flipped
    reason: str = "no worker has started yet"  # why it is not ready (kept while it is)
    start_failed: asyncio.Event = field(default_factory=asyncio.Event)  # a worker could not build its function
    workers_changed: asyncio.Event = field(default_factory=asyncio.Event)  # set (and replaced) on each change
    cache: ResponseCache | None = None  # the front's response cache, when the model's responses are cached

    @property
    def is_ready(self) -> bool:
        return bool(self.workers)

    def add_worker(self, identity: str) -> None:
        self.workers.add(identity)
        self._changed()

    def _changed(self) -> None:
        self.workers_changed.set()
        self.workers_changed = asyncio.Event()
        self.on_change()

    async def wait_started(self) -> None:
        """Until every instance of the model serves, or one could not start (`start_failed`)."""
        while len(self.workers) < self.spec.instance_count and not self.start_failed.is_set():
            await self.workers_changed.wait()

    def remove_worker(self, identity: str, why: str) -> None:
        """A worker can no longer take batches (``why`` says what happened to it)."""
        if identity not in self.workers:
            return
        self.workers.discard(identity)
        if not self.workers:
            self.reason = why
            self.scheduler.fail_queued(self.not_ready())
        self._changed()

    def worker_failed(self, error: str) -> None:
        """A worker could not start (building its function raised ``error``)."""
        if not self.workers:
            self.reason = f"its worker could not start: {error}"
        self.start_failed.set()
        self._changed()

    def not_ready(self) -> ModelNotReadyError:
        return ModelNotReadyError(f"{self.spec.label} is not ready: {self.reason}")


class Models:
    """Model versions by name; resolves the version a request asks for (none = the latest).

    ``on_change`` is called whenever a model or a worker comes or goes (whether all are ready may flip).
    ``cache``: the front's response cache (None: off), used by the versions bound with ``response_cache``.
    """

    def __init__(self, on_change: Callable[[], None] = lambda: None, cache: ResponseCache | None = None) -> None:
        self._by_name: dict[str, dict[int, ModelEntry]] = {}
        self._on_change = on_change
        self.cache = cache

    def load(self, spec: ModelSpec) -> ModelEntry:
        """Register a model version, replacing (and closing the queue of) one of the same name and version.

        `ConfigurationError` for a model with ``response_cache`` when this front has no cache (``Serve.bind``
        refuses that first; this also covers models bound from another process)."""
        if spec.config.response_cache and self.cache is None:
            raise ConfigurationError(
                f"{spec.label} has response_cache=True, but this server has no response cache (response_cache_bytes=0)"
            )
        old = self._by_name.get(spec.name, {}).get(spec.version)
        if old is not None:
            old.scheduler.close(UnavailableError(f"{spec.label} was re-bound while the request waited; retry it"))
        cache = self.cache if spec.config.response_cache else None
        if self.cache is not None:
            self.cache.drop_model((spec.name, spec.version))  # the responses of the function it replaces
        entry = ModelEntry(spec, Scheduler[Job](spec.label, spec.config), on_change=self._on_change, cache=cache)
        self._by_name.setdefault(spec.name, {})[spec.version] = entry
        self._on_change()
        return entry

    def unload(self, name: str, version: int) -> ModelEntry | None:
        versions = self._by_name.get(name, {})
        entry = versions.pop(version, None)
        if not versions:
            self._by_name.pop(name, None)
        if self.cache is not None:
            self.cache.drop_model((name, version))
        if entry is not None:
            entry.scheduler.close(UnavailableError(f"{entry.spec.label} was unloaded"))
            self._on_change()
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
            raise entry.not_ready()
        return entry

    def entries(self) -> list[ModelEntry]:
        return [entry for versions in self._by_name.values() for entry in versions.values()]

    def all_ready(self) -> bool:
        """Whether every loaded model version has a worker."""
        return all(entry.is_ready for entry in self.entries())

    def matching(self, name: str, version: str) -> list[ModelEntry]:
        """Every loaded version when ``name`` is empty, else those of ``name`` ("" version: all of them)."""
        if not name:
            return self.entries()
        if version:
            return [self.find(name, version)]
        self.find(name)  # ModelNotFoundError for an unknown name
        return list(self._by_name[name].values())

    def index(self, only_ready: bool) -> list[tuple[str, int, str, str]]:
        """The repository index rows (name, version, state, reason) of `documents.repository_index`."""
        return [
            (e.spec.name, e.spec.version, "READY" if e.is_ready else "UNAVAILABLE", "" if e.is_ready else e.reason)
            for e in self.entries()
            if e.is_ready or not only_ready
        ]

    def close(self, error: Exception) -> None:
        for entry in self.entries():
            entry.scheduler.close(error)
