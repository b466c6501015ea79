"""`Tracing`: OpenTelemetry traces of inference requests, the settings Triton's ``--trace-config`` takes.

With ``Serve(tracing=Tracing(...))`` a sampled request gets a span ``infer <model>`` (a child of the caller's span
when the request carries a W3C ``traceparent`` header or gRPC metadata key) with the children ``queue``,
``compute-input``, ``compute-infer`` and ``compute-output``; the front process exports them (`front/trace_spans.py`).
It needs the ``tracing`` extra (``pip install 'pybind_serve[tracing]'``: the OpenTelemetry SDK and its OTLP
exporter); pybind_serve imports none of it unless tracing is on. docs/tracing.md tells the whole story.

The exporter is OpenTelemetry's: ``"otlp"`` (OTLP to ``endpoint``, else to where the standard variables
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT`` say, else ``http://localhost:4318``; over
HTTP, or gRPC when ``OTEL_EXPORTER_OTLP_PROTOCOL=grpc``), ``"console"`` (the server's stdout), ``"file"`` (``file``:
one JSON span per line), or ``"package.module:factory"``, a function that returns any ``SpanExporter``.

>>> Tracing(file="spans.jsonl").resolved_exporter
'file'
>>> Tracing(level=("TIMESTAMPS", "TENSORS"), rate=10).to_wire()["level"]
['TIMESTAMPS', 'TENSORS']
>>> Tracing(level="OFF").problems(check_installed=False)
[]
>>> Tracing(rate=0, level="LOUD").problems(check_installed=False)  # doctest: +NORMALIZE_WHITESPACE
["level must be 'OFF', 'TIMESTAMPS', 'TENSORS' or several of the last two, got 'LOUD'",
 'rate must be an int >= 1 (one request in every rate is traced), got 0']
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["LEVELS", "Tracing", "parse_levels"]

LEVELS = ("OFF", "TIMESTAMPS", "TENSORS")  # Triton's trace levels
EXPORTERS = ("otlp", "console", "file")
INSTALL_HINT = "pip install 'pybind_serve[tracing]'"
_FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def parse_levels(value: object) -> tuple[str, ...]:
    """Triton's ``trace_level``: ``"OFF"`` alone, or any of ``"TIMESTAMPS"`` and ``"TENSORS"`` (a string or a list
    of them); the levels traced, in `LEVELS` order (empty: off). `ValueError` saying what is wrong.

    >>> parse_levels(["TENSORS", "TIMESTAMPS"]), parse_levels("OFF"), parse_levels("timestamps")
    (('TIMESTAMPS', 'TENSORS'), (), ('TIMESTAMPS',))
    """
    given: list[object] = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else []
    names = {v.upper() for v in given if isinstance(v, str)}
    if not given or not all(isinstance(v, str) for v in given) or not names <= set(LEVELS):
        raise ValueError(f"level must be 'OFF', 'TIMESTAMPS', 'TENSORS' or several of the last two, got {value!r}")
    if "OFF" in names and len(given) > 1:
        raise ValueError(f"level 'OFF' must be the only one, got {value!r}")
    return tuple(level for level in LEVELS[1:] if level in names)


@dataclass(frozen=True)
class Tracing:
    """How requests are traced: Triton's trace settings, and where OpenTelemetry sends the spans.

    ``level``: ``"TIMESTAMPS"`` traces the requests' timings; ``"TENSORS"`` adds each input's and output's
    datatype and shape to the request's span; ``"OFF"`` traces nothing until a client turns it on through the
    trace extension (``POST /v2/trace/setting``). ``rate``: one request in every ``rate`` is traced; ``count``: how
    many requests are traced before tracing stops by itself (-1: no limit). Each front process of
    ``Serve(fronts=N)`` samples its own requests. ``exporter``, ``endpoint``, ``file``: see the module's text;
    ``service_name``: the spans' ``service.name`` (else ``OTEL_SERVICE_NAME``, else ``pybind_serve``). Other
    ``OTEL_*`` variables (headers, timeouts, batching, resource attributes) work as OpenTelemetry defines them.
    """

    level: str | Sequence[str] = "TIMESTAMPS"
    rate: int = 1
    count: int = -1
    exporter: str | None = None  # None: "file" when ``file`` is given, else "otlp"
    endpoint: str | None = None
    file: str | None = None
    service_name: str | None = None

    @property
    def levels(self) -> tuple[str, ...]:
        """The levels traced (empty: off); `ValueError` for a wrong ``level``."""
        return parse_levels(self.level if isinstance(self.level, str) else list(self.level))

    @property
    def resolved_exporter(self) -> str:
        return self.exporter or ("file" if self.file is not None else "otlp")

    @property
    def otlp_protocol(self) -> str:
        """``http/protobuf`` (OTLP's default) or ``grpc``, as OpenTelemetry's variables choose."""
        return os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
        )

    def problems(self, check_installed: bool = True) -> list[str]:
        """What is wrong with these settings (nothing: an empty list); with ``check_installed``, also whether the
        packages its exporter needs are missing."""
        problems = []
        try:
            self.levels  # noqa: B018 - validates
        except ValueError as exc:
            problems.append(str(exc))
        if type(self.rate) is not int or self.rate < 1:
            problems.append(f"rate must be an int >= 1 (one request in every rate is traced), got {self.rate!r}")
        if type(self.count) is not int or self.count < -1:
            problems.append(f"count must be an int >= -1 (-1: no limit), got {self.count!r}")
        exporter = self.resolved_exporter
        if exporter not in EXPORTERS and not _FACTORY.fullmatch(exporter):
            problems.append(
                f"exporter must be 'otlp', 'console', 'file' or 'package.module:factory', got {self.exporter!r}"
            )
        if exporter == "file" and not self.file:
            problems.append("exporter 'file' needs file=<path of the JSON-lines file to write>")
        if exporter == "otlp" and self.otlp_protocol not in ("http/protobuf", "grpc"):
            problems.append(
                f"OTLP protocol {self.otlp_protocol!r} (OTEL_EXPORTER_OTLP_PROTOCOL) is not supported: "
                "use 'http/protobuf' or 'grpc'"
            )
        for name in ("endpoint", "file", "service_name"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                problems.append(f"{name} must be a non-empty str or None, got {value!r}")
        if check_installed and not problems:
            problems += [f"{missing} is not installed: {INSTALL_HINT}" for missing in self.missing_packages()]
        return problems

    def missing_packages(self) -> list[str]:
        """The modules this configuration needs that cannot be imported here."""
        needed = ["opentelemetry.sdk"]
        exporter = self.resolved_exporter
        if exporter == "otlp":
            kind = "grpc" if self.otlp_protocol == "grpc" else "http"
            needed.append(f"opentelemetry.exporter.otlp.proto.{kind}")
        elif exporter not in EXPORTERS:
            needed.append(exporter.partition(":")[0])
        return [name for name in needed if not _importable(name)]

    def to_wire(self) -> dict[str, Any]:
        return {
            "level": list(self.levels) or ["OFF"],
            "rate": self.rate,
            "count": self.count,
            "exporter": self.resolved_exporter,
            "endpoint": self.endpoint,
            "file": os.path.abspath(self.file) if self.file else None,  # relative to the owner's directory
            "service_name": self.service_name,
        }

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> Tracing:
        return cls(**{**wire, "level": tuple(wire["level"])})


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package is missing
        return False
