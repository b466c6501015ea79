"""The settings clients read and change while the server runs: Triton's trace extension (`Tracer`'s settings) and
logging extension (`LogSettings`), for the REST and gRPC fronts alike.

With several front processes (``Serve(fronts=N)``) a change made through one front is made on every other before
the client hears back (`Peers`), and a front that was restarted takes the settings of a running one
(`snapshot`, `restore`), so that the server answers as one. Sampling (``trace_rate``, ``trace_count``) is each
front's own: with N fronts, one request in every ``trace_rate`` that each front serves is traced, and each traces
up to ``trace_count``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .log_settings import LogSettings
from .models import Models
from .peers import Peers
from .trace_spans import Tracer

__all__ = ["RuntimeSettings"]

log = logging.getLogger("pybind_serve.front")


class RuntimeSettings:
    """The trace and log settings of this front, kept the same on its ``peers`` (None: the only front)."""

    def __init__(self, tracer: Tracer, logs: LogSettings, models: Models, peers: Peers | None = None) -> None:
        self.tracer, self.logs = tracer, logs
        self._models, self._peers = models, peers

    async def trace(self, model: str | None, changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The trace settings of ``model`` (None or empty: the server's), after applying ``changes`` if given
        (`ModelNotFoundError` for a model not loaded, `InvalidInputError` for a wrong change)."""
        model = model or None
        if model is not None:
            self._models.find(model)
        if changes:
            self.tracer.update(model, changes)
            await self._share("trace", model, changes)
        return self.tracer.document(model)

    async def logging(self, changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The log settings, after applying ``changes`` if given (`InvalidInputError` for a wrong one)."""
        if changes:
            self.logs.update(self.logs.parse(changes))
            await self._share("log", None, changes)
        return self.logs.document()

    def apply(self, kind: str, model: str | None, changes: Mapping[str, Any]) -> None:
        """Another front's change (checked there already)."""
        if kind == "trace":
            self.tracer.update(model, changes)
        else:
            self.logs.update(self.logs.parse(changes))

    def snapshot(self) -> dict[str, Any]:
        """Every setting changed here, as `restore` takes them."""
        trace = [[model, changes] for model, changes in self.tracer.settings.overrides().items()]
        log_values = {k: v for k, v in self.logs.document().items() if k != "log_file"}
        return {"trace": trace, "log": log_values}

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Take a running front's settings (this front was started again after one died)."""
        for model, changes in snapshot["trace"]:
            self.tracer.update(model, changes)
        self.logs.update(self.logs.parse(snapshot["log"]))

    async def _share(self, kind: str, model: str | None, changes: Mapping[str, Any]) -> None:
        if self._peers is None:
            return
        replies = await self._peers.call("settings", kind=kind, model=model, changes=dict(changes))
        for reply in replies:
            if not reply.get("ok"):
                log.warning("another front could not apply the %s settings %s: %s", kind, dict(changes), reply["error"])
        if len(replies) < len(self._peers):
            log.warning(
                "%d of %d other fronts did not take the %s settings %s",
                len(self._peers) - len(replies),
                len(self._peers),
                kind,
                dict(changes),
            )
