"""Triton's log settings (the logging extension: ``GET``/``POST /v2/logging``, gRPC ``LogSettings``), mapped onto
the front process's Python logging.

``log_info``, ``log_warning`` and ``log_error`` (booleans) say whether the front logs INFO, WARNING and ERROR
(and CRITICAL) lines; ``log_verbose_level`` (an integer >= 0) turns on DEBUG lines at 1 and uvicorn's TRACE lines
at 2 and more; ``log_format`` is ``"default"`` (the front's own line format) or ``"ISO8601"`` (Triton's: UTC time,
level, pid, file and line). They apply to pybind_serve's loggers and uvicorn's in the front processes (the HTTP
access log, a switch of its own, is left as it is); the processes that run the bound functions keep the logging
their application set up. They start from ``Serve(log_level=...)``. ``log_file`` is reported (``""``: standard
error) and, as with Triton, cannot be changed through the network.

>>> settings = LogSettings("warning")
>>> settings.document()["log_info"], settings.document()["log_verbose_level"]
(False, 0)
>>> settings.parse({"log_info": "true"})
Traceback (most recent call last):
...
pybind_serve.errors.InvalidInputError: expect boolean for 'log_info', got 'true'
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidInputError

__all__ = ["LogSettings"]

_TRACE = 5  # uvicorn's level below DEBUG
_LEVELS = {"critical": logging.CRITICAL, "error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO,
           "debug": logging.DEBUG, "trace": _TRACE}  # fmt: skip
_LEVELLED = ("pybind_serve", "uvicorn.error")  # the loggers whose level the settings set
_HANDLING = ("pybind_serve", "uvicorn")  # the loggers whose handlers write the front's lines
_FLAGS = ("log_info", "log_warning", "log_error")
FORMATS = ("default", "ISO8601")


class _Iso8601(logging.Formatter):
    """Triton's ISO8601 log format: ``2024-05-20T20:03:26Z WARNING 3415 dispatcher.py:240] message``."""

    converter = time.gmtime  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(process)d %(filename)s:%(lineno)d] %(message)s",
                         "%Y-%m-%dT%H:%M:%SZ")  # fmt: skip


class LogSettings:
    """The front's log settings, as the logging extension reads and changes them."""

    def __init__(self, level: str = "warning") -> None:
        threshold = _LEVELS.get(str(level).lower(), logging.WARNING)
        self._values: dict[str, Any] = {
            "log_file": "",
            "log_info": threshold <= logging.INFO,
            "log_warning": threshold <= logging.WARNING,
            "log_error": threshold <= logging.ERROR,
            "log_verbose_level": 2 if threshold < logging.DEBUG else int(threshold == logging.DEBUG),
            "log_format": "default",
        }
        self._filter = _Flags(self._values)
        self._default_formats: dict[logging.Handler, logging.Formatter | None] = {}

    def document(self) -> dict[str, Any]:
        return dict(self._values)

    def parse(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """The changes a request asks for, checked (`InvalidInputError` naming the first wrong one); a null value
        changes nothing, as with Triton."""
        parsed: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in self._values:
                raise InvalidInputError(f"unknown log setting {name!r}; the settings are {', '.join(self._values)}")
            if value is None:
                continue
            if name == "log_file":
                raise InvalidInputError("log file location can not be updated through network protocol")
            if name in _FLAGS and not isinstance(value, bool):
                raise InvalidInputError(f"expect boolean for {name!r}, got {value!r}")
            if name == "log_verbose_level" and (type(value) is not int or value < 0):
                raise InvalidInputError(f"expect an integer >= 0 for 'log_verbose_level', got {value!r}")
            if name == "log_format" and value not in FORMATS:
                raise InvalidInputError(f"invalid argument for log_format, got: {value!r} ('default' or 'ISO8601')")
            parsed[name] = value
        return parsed

    def update(self, parsed: Mapping[str, Any]) -> None:
        """Apply `parse`'s changes to the front's logging."""
        if not parsed:
            return
        self._values.update(parsed)
        values = self._values
        verbose = values["log_verbose_level"]
        if verbose:
            threshold = _TRACE if verbose > 1 else logging.DEBUG
        else:
            enabled = [level for flag, level in zip(_FLAGS, (logging.INFO, logging.WARNING, logging.ERROR), strict=True)
                       if values[flag]]  # fmt: skip
            threshold = enabled[0] if enabled else logging.CRITICAL
        for name in _LEVELLED:
            logging.getLogger(name).setLevel(threshold)
        iso = values["log_format"] == "ISO8601"
        for handler in _handlers():
            if self._filter not in handler.filters:
                handler.addFilter(self._filter)
            if iso and handler not in self._default_formats:
                self._default_formats[handler] = handler.formatter
                handler.setFormatter(_Iso8601())
            elif not iso and handler in self._default_formats:
                handler.setFormatter(self._default_formats.pop(handler))


class _Flags(logging.Filter):
    """Lets a line through only if its level is on (the flags need not be a threshold: INFO on, WARNING off)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        super().__init__()
        self._values = values

    def filter(self, record: logging.LogRecord) -> bool:
        level, values = record.levelno, self._values
        if level >= logging.ERROR:
            return bool(values["log_error"])
        if level >= logging.WARNING:
            return bool(values["log_warning"])
        if level >= logging.INFO:
            return bool(values["log_info"])
        return values["log_verbose_level"] >= (1 if level >= logging.DEBUG else 2)


def _handlers() -> list[logging.Handler]:
    """The handlers that write the front's lines (the root logger's too, where a logger propagates to it)."""
    found: list[logging.Handler] = []
    for name in _HANDLING:
        logger: logging.Logger | None = logging.getLogger(name)
        while logger is not None:
            found += [h for h in logger.handlers if h not in found]
            logger = logger.parent if logger.propagate else None
    return found
