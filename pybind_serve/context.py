"""Where a bound function runs: `worker_context()` tells it its model, instance and device (PyTriton's
``triton_context``), and a model bound as a class is built with it, once in each worker.

>>> worker_context() is None  # outside a worker
True
"""

from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError

__all__ = ["WorkerContext", "build", "worker_context"]


@dataclass(frozen=True)
class WorkerContext:
    """The worker a function runs in.

    - ``model`` / ``version``: the bound model.
    - ``instance``: the worker's index among the model's instances (0, 1, ...).
    - ``device``: ``"cuda:0"`` for a worker placed on a GPU (the only GPU it sees), else ``"cpu"``.
    - ``host_device``: that device as the binding process names it (``"cuda:3"``).
    - ``outputs``: the names of the model's outputs, in the order they were declared.
    """

    model: str
    version: int
    instance: int
    device: str = "cpu"
    host_device: str = "cpu"
    outputs: tuple[str, ...] = ()


_local = threading.local()


def worker_context() -> WorkerContext | None:
    """The `WorkerContext` of the worker calling this (in the bound function, or in a model class's
    ``__init__``); None elsewhere."""
    return getattr(_local, "context", None)


def enter(context: WorkerContext) -> None:
    """Make ``context`` the calling thread's (a worker does this before it builds or calls anything)."""
    _local.context = context


def build(fn: Any, context: WorkerContext) -> Any:
    """The function a worker serves: ``fn`` itself, or, when ``fn`` is a class, an instance of it built here,
    with ``context`` if its constructor takes an argument (so its model is loaded in the worker, on its device).

    >>> class Doubler:
    ...     def __init__(self, context):
    ...         self.device = context.device
    ...     def __call__(self, requests):
    ...         return [{"y": r["x"] * 2} for r in requests]
    >>> build(Doubler, WorkerContext("d", 1, 0)).device
    'cpu'
    """
    if not inspect.isclass(fn):
        return fn
    try:
        takes_context = bool(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # no signature to read (some extension types): try without
        takes_context = False
    cls: Any = fn
    instance = cls(context) if takes_context else cls()
    if not callable(instance):
        raise ConfigurationError(f"{fn.__name__} instances must be callable (define __call__) to be served")
    return instance
