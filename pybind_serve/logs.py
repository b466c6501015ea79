"""pybind_serve's own log output: the levels ``Serve(log_level=...)`` takes, and where the lines go.

The levels are uvicorn's (the HTTP front logs through it): ``critical``, ``error``, ``warning``, ``info``,
``debug`` and ``trace`` (debug and more). pybind_serve logs through the ``pybind_serve`` logger and its
children; a process of the server writes them to stderr unless the application set up logging itself (a
handler on the root logger or on ``pybind_serve``), in which case they go to its handlers.

>>> level_problems("info"), level_problems("bogus")  # doctest: +NORMALIZE_WHITESPACE
([], ["log_level must be one of 'critical', 'error', 'warning', 'info', 'debug', 'trace', got 'bogus'"])
>>> python_level("TRACE") < python_level("debug") < python_level("warning")
True
"""

from __future__ import annotations

import logging
import sys

__all__ = ["LEVELS", "configure", "level_problems", "python_level"]

TRACE = 5  # uvicorn's level below DEBUG
LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}
LOGGER = "pybind_serve"
_HANDLER_NAME = "pybind_serve-stderr"
_level_set: int | None = None  # the level `configure` gave the logger last


def level_problems(level: object) -> list[str]:
    """Why ``level`` is not a log level ``Serve`` takes (none: it is one, in any case)."""
    if isinstance(level, str) and level.lower() in LEVELS:
        return []
    valid = ", ".join(repr(name) for name in LEVELS)
    return [f"log_level must be one of {valid}, got {level!r}"]


def python_level(level: str) -> int:
    """The `logging` level of one of `LEVELS` (any case)."""
    return LEVELS[level.lower()]


def configure(level: str, prefix: str) -> None:
    """Log pybind_serve's lines at ``level`` and above, to stderr as ``[prefix] LEVEL message`` unless the
    application has handlers of its own for them. A level the application set on the ``pybind_serve`` logger
    itself is left as it is; calling it again changes the level it set."""
    global _level_set
    logger = logging.getLogger(LOGGER)
    if logger.level in (logging.NOTSET, _level_set):
        logger.setLevel(_level_set := python_level(level))
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter(f"[{prefix}] %(levelname)s %(message)s"))
    logger.addHandler(handler)
