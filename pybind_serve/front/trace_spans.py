"""The front's tracer: whether a request is traced (Triton's trace settings, `trace_settings`), and its trace
(`trace_export`, which imports OpenTelemetry, only once tracing is first turned on).

Every request reads `Tracer.on`, a plain attribute: with tracing off that one branch is all it costs. While on,
the route passes `start` (with the caller's ``traceparent`` and ``tracestate``) down the request's path
(`inference`), which calls it once the model is known; `active` tells the dispatcher whether any request in
flight is traced, so that it looks for them only then.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError, StartupError
from ..spec import ModelSpec
from ..tracing import INSTALL_HINT, Tracing
from .trace_settings import TraceSettings

if TYPE_CHECKING:
    from .trace_export import Exporting, RequestTrace

__all__ = ["Tracer"]


class Tracer:
    """Traces requests as the trace settings say, into the exporter ``config`` (`Tracing.to_wire`; None: tracing
    off until a client turns it on, exporting to OpenTelemetry's default OTLP endpoint)."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config = Tracing.from_wire(config) if config else Tracing(level="OFF")
        self.settings = TraceSettings(self.config.levels, self.config.rate, self.config.count, _describe(self.config))
        self.on = False  # whether a request may be traced now (read on every request)
        self.active = 0  # traces started and not yet ended
        self._exporting: Exporting | None = None
        if self.settings.on:
            self._export()  # StartupError: the front does not start
        self.on = self.settings.on

    def document(self, model: str | None) -> dict[str, Any]:
        return self.settings.document(model)

    def update(self, model: str | None, changes: Mapping[str, Any]) -> None:
        """Change the settings of ``model`` (None: the server's), as the trace extension asks
        (`InvalidInputError` for a wrong one, or when tracing cannot be turned on here)."""
        parsed = self.settings.parse(changes)
        if self._exporting is None and self.settings.would_trace(model, parsed):
            try:
                self._export()
            except StartupError as exc:
                raise InvalidInputError(f"tracing cannot be turned on: {exc}") from None
        self.settings.update(model, parsed)
        self.on = self.settings.on

    def start(
        self,
        protocol: str,
        traceparent: str | bytes | None,
        tracestate: str | bytes | None,
        spec: ModelSpec,
        arrived: float,
    ) -> RequestTrace | None:
        """The trace of a request for ``spec`` that ``arrived`` (`time.monotonic`), or None if it is not sampled."""
        sampler = self.settings.sampler(spec.name)
        if not sampler.sample():
            return None
        if not sampler.live:  # that was the last one its count allowed
            self.settings.refresh()
            self.on = self.settings.on
        exporting = self._exporting
        if exporting is None:  # pragma: no cover - `on` is never true without it
            return None
        tensors = "TENSORS" in sampler.levels
        trace = exporting.begin(protocol, traceparent, tracestate, spec, arrived, tensors, self._ended)
        if trace is not None:
            self.active += 1
        return trace

    def _ended(self) -> None:
        self.active -= 1

    def _export(self) -> None:
        missing = self.config.missing_packages()
        if missing:
            names = " and ".join(missing)
            raise StartupError(f"{names} {'are' if len(missing) > 1 else 'is'} not installed: {INSTALL_HINT}")
        from .trace_export import Exporting  # OpenTelemetry is imported here, once

        self._exporting = Exporting(self.config)

    def close(self) -> None:
        """Export the spans not sent yet (bounded in time)."""
        if self._exporting is not None:
            self._exporting.close()


def _describe(config: Tracing) -> dict[str, str]:
    """Where the spans go, in the names of Triton's OpenTelemetry trace settings."""
    kind = config.resolved_exporter
    if kind == "file":
        return {"trace_mode": "opentelemetry", "trace_file": config.file or ""}
    if kind != "otlp":
        return {"trace_mode": "opentelemetry", "exporter": kind}
    grpc = config.otlp_protocol == "grpc"
    url = (
        config.endpoint
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or ("http://localhost:4317" if grpc else "http://localhost:4318")
    )
    return {"trace_mode": "opentelemetry", "url": url}
