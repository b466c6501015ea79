"""Whether the front serves, and whether it and a model are ready: one answer for HTTP, gRPC and the health
service alike.

A front is `ServerState.STARTING` until the owner opens it (the models bound before ``run()`` are loaded),
`SERVING` until it begins to stop, then `STOPPING`. It is ready while it serves and every model has a worker;
a model is ready while the front serves and the model has a worker.
"""

from __future__ import annotations

import asyncio
import enum

from .models import ModelEntry, Models

__all__ = ["Readiness", "ServerState"]


class ServerState(enum.Enum):
    STARTING = "starting"
    SERVING = "serving"
    STOPPING = "stopping"


class Readiness:
    """The front's state and readiness, and a way to wait until readiness may have changed.

    `changed` is called whenever readiness may flip: the front opened or began to stop, a worker came or went,
    a model was loaded or unloaded (``Models(on_change=readiness.changed)``).
    """

    def __init__(self, models: Models | None = None) -> None:
        self.models = models if models is not None else Models()
        self.state = ServerState.STARTING
        self.stopping = asyncio.Event()  # set once the state is STOPPING: what waiters (streams, Watch) await
        self._changed = asyncio.Event()

    @property
    def serving(self) -> bool:
        return self.state is ServerState.SERVING

    def __call__(self) -> bool:
        """What ``/v2/health/ready`` says: serving, and every model has a worker."""
        return self.serving and self.models.all_ready()

    def model_ready(self, entry: ModelEntry) -> bool:
        return self.serving and entry.is_ready

    def open(self) -> None:
        if self.state is ServerState.STARTING:
            self.state = ServerState.SERVING
            self.changed()

    def stop(self) -> None:
        self.state = ServerState.STOPPING
        self.stopping.set()
        self.changed()

    def changed(self) -> None:
        """Set the event `next_change` handed out, and hand out a new one."""
        self._changed.set()
        self._changed = asyncio.Event()

    def next_change(self) -> asyncio.Event:
        """An event set by the next `changed`: take it before reading the state, so that a change made while
        the state is being sent is not missed."""
        return self._changed
