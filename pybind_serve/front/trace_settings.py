"""Triton's trace settings, for the whole server and per model, and the sampling they decide (sans I/O).

The trace extension (``GET``/``POST /v2[/models/<m>]/trace/setting``, gRPC ``TraceSetting``) reads and changes
them with Triton's names and semantics: ``trace_level`` (a list: ``["OFF"]``, or ``"TIMESTAMPS"`` and/or
``"TENSORS"``), ``trace_rate`` (one request in every N is traced), ``trace_count`` (how many more are traced; -1:
no limit; it counts down), ``log_frequency`` (accepted and kept, as Triton's OpenTelemetry mode does: spans are
exported as they end), all answered as strings. Only what a request names changes; ``null`` clears a model's own
value (it follows the server's again) or restores the server's value to the one it started with. A model with
settings of its own starts from the server's current ones. ``trace_file`` and ``trace_mode`` cannot be changed
at runtime (400, as Triton), and an unknown name is refused rather than ignored.

>>> settings = TraceSettings(("TIMESTAMPS",), rate=2, count=-1)
>>> [settings.sampler("m").sample() for _ in range(4)]
[False, True, False, True]
>>> settings.update("m", settings.parse({"trace_count": "1", "trace_rate": 1}))
>>> [settings.sampler("m").sample() for _ in range(2)], settings.document("m")["trace_count"]
([True, False], '0')
>>> settings.document(None)["trace_level"], settings.document(None)["trace_rate"]
(['TIMESTAMPS'], '2')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInputError
from ..tracing import parse_levels

__all__ = ["FIELDS", "Sampler", "TraceSettings"]

FIELDS = ("trace_level", "trace_rate", "trace_count", "log_frequency")  # what a request may change
_FIXED = {
    "trace_file": "trace file location can not be updated through network protocol",
    "trace_mode": "trace mode can not be updated through network protocol",
}
_CLEAR = object()  # a field a request sets to null


@dataclass(slots=True)
class Sampler:
    """One set of settings in force (the server's, or a model's own): which requests it traces."""

    levels: tuple[str, ...]  # empty: off
    rate: int
    count: int  # how many more it traces (-1: no limit)
    log_frequency: int = 0
    seen: int = 0

    @property
    def live(self) -> bool:
        """Whether it may trace another request."""
        return bool(self.levels) and self.count != 0

    def sample(self) -> bool:
        """Whether to trace the request that just came (one in every ``rate``, while ``count`` lasts)."""
        if not self.levels or self.count == 0:
            return False
        self.seen += 1
        if self.seen % self.rate:
            return False
        if self.count > 0:
            self.count -= 1
        return True

    def values(self) -> dict[str, Any]:
        return {"trace_level": self.levels, "trace_rate": self.rate, "trace_count": self.count,
                "log_frequency": self.log_frequency}  # fmt: skip

    def set(self, field: str, value: Any) -> None:
        if field == "trace_level":
            self.levels = value
        elif field == "trace_rate":
            self.rate, self.seen = value, 0
        elif field == "trace_count":
            self.count = value
        else:
            self.log_frequency = value


class TraceSettings:
    """The server's trace settings and each model's own; ``describe`` is added to every answer (the trace mode and
    where spans go, in Triton's names)."""

    def __init__(
        self, levels: tuple[str, ...], rate: int, count: int, describe: Mapping[str, str] | None = None
    ) -> None:
        self._initial = Sampler(levels, rate, count)
        self._server = Sampler(levels, rate, count)
        self._models: dict[str, Sampler] = {}
        self._own: dict[str, set[str]] = {}  # the fields each model set itself
        self._describe = dict(describe or {})
        self.on = self._server.live

    def sampler(self, model: str) -> Sampler:
        """The settings in force for ``model``."""
        return self._models.get(model) or self._server

    def refresh(self) -> None:
        """Recompute `on` (after a sampler's count ran out)."""
        self.on = self._server.live or any(s.live for s in self._models.values())

    def document(self, model: str | None) -> dict[str, Any]:
        """The settings for ``model`` (None: the server's) as the trace extension answers them."""
        sampler = self._server if model is None else self.sampler(model)
        return {
            "trace_level": list(sampler.levels) or ["OFF"],
            "trace_rate": str(sampler.rate),
            "trace_count": str(sampler.count),
            "log_frequency": str(sampler.log_frequency),
            **self._describe,
        }

    def parse(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """The changes a request asks for, checked (`InvalidInputError` naming the first wrong one): each field's
        new value, or `_CLEAR` for null. Values may be strings (as Triton takes them) or numbers."""
        parsed: dict[str, Any] = {}
        for field, value in changes.items():
            if field in _FIXED:
                if value is not None:
                    raise InvalidInputError(_FIXED[field])
                continue
            if field not in FIELDS:
                known = ", ".join(FIELDS)
                raise InvalidInputError(f"unknown trace setting {field!r}; the settings are {known}")
            parsed[field] = _CLEAR if value is None else _parse(field, value)
        return parsed

    def would_trace(self, model: str | None, parsed: Mapping[str, Any]) -> bool:
        """Whether tracing would be on anywhere after `update` with ``parsed``."""
        levels = parsed.get("trace_level")
        if levels is None:
            return self.on
        if levels is _CLEAR:
            levels = self._initial.levels if model is None else self._server.levels
        return bool(levels) or self.on

    def update(self, model: str | None, parsed: Mapping[str, Any]) -> None:
        """Apply `parse`'s changes to the server's settings (``model`` None) or to a model's own."""
        if model is None:
            for field, value in parsed.items():
                value = self._initial.values()[field] if value is _CLEAR else value
                self._server.set(field, value)
                for name, sampler in self._models.items():
                    if field not in self._own[name]:
                        sampler.set(field, value)
        else:
            own = self._own.setdefault(model, set())
            server = self._server
            sampler = self._models.get(model) or Sampler(server.levels, server.rate, server.count, server.log_frequency)
            self._models[model] = sampler
            for field, value in parsed.items():
                if value is _CLEAR:
                    own.discard(field)
                    sampler.set(field, self._server.values()[field])
                else:
                    own.add(field)
                    sampler.set(field, value)
            if not own:  # nothing of its own left: it follows the server's settings, counters and all
                del self._models[model], self._own[model]
        self.refresh()

    def overrides(self) -> dict[str | None, dict[str, Any]]:
        """What `update` calls would rebuild these settings elsewhere (a front started again): the server's
        values, then each model's own, in the extension's form."""
        server = self.document(None)
        found: dict[str | None, dict[str, Any]] = {None: {f: server[f] for f in FIELDS}}
        for model, own in self._own.items():
            document = self.document(model)
            found[model] = {f: document[f] for f in own}
        return found


def _parse(field: str, value: Any) -> Any:
    if field == "trace_level":
        try:
            return parse_levels(value)
        except ValueError as exc:
            raise InvalidInputError(f"trace_level: {exc}") from None
    lowest = {"trace_rate": 1, "trace_count": -1, "log_frequency": 0}[field]
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        number = int(value)
    if number is None or number < lowest or number > 0x7FFFFFFF:
        raise InvalidInputError(f"Unable to parse '{field}': expected an integer >= {lowest} (a string), got {value!r}")
    return number
