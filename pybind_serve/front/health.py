"""The standard gRPC health service, ``grpc.health.v1.Health``, over the front's readiness.

Load balancers and Kubernetes' gRPC probes call it. The server ("") and ``inference.GRPCInferenceService``
are SERVING exactly when ``/v2/health/ready`` answers 200 (the server is open and every model has a worker),
else NOT_SERVING. ``Watch`` sends the status, then every change of it, and ends when the server stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from ..protocol.proto import health_pb2, health_pb2_grpc

__all__ = ["HealthServicer", "Readiness"]

SERVICES = ("", "inference.GRPCInferenceService")
_Status = health_pb2.HealthCheckResponse.ServingStatus


class Readiness:
    """Whether the server is ready, and a way to wait until that may have changed.

    The front calls `changed` whenever readiness may flip: it opened or started ``stopping``, a worker came or
    went, a model was loaded or unloaded.
    """

    def __init__(self, is_ready: Callable[[], bool], stopping: asyncio.Event) -> None:
        self._is_ready = is_ready
        self._changed = asyncio.Event()
        self.stopping = stopping

    def __call__(self) -> bool:
        return not self.stopping.is_set() and self._is_ready()

    def changed(self) -> None:
        """Set the event `next_change` handed out, and hand out a new one."""
        self._changed.set()
        self._changed = asyncio.Event()

    def next_change(self) -> asyncio.Event:
        """An event set by the next `changed`: take it before reading the state, so that a change made while
        the state is being sent is not missed."""
        return self._changed


class HealthServicer(health_pb2_grpc.HealthServicer):
    """``Check`` and ``Watch`` of the two services this server has."""

    def __init__(self, readiness: Readiness) -> None:
        self._readiness = readiness

    def _status(self, service: str) -> Any:
        if service not in SERVICES:
            return _Status.SERVICE_UNKNOWN
        return _Status.SERVING if self._readiness() else _Status.NOT_SERVING

    async def Check(self, request: Any, context: Any) -> Any:
        if request.service not in SERVICES:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}; known: {SERVICES}")
        return health_pb2.HealthCheckResponse(status=self._status(request.service))

    async def Watch(self, request: Any, context: Any) -> AsyncIterator[Any]:
        sent = None
        while True:
            change = self._readiness.next_change()
            status = self._status(request.service)
            if status != sent:
                yield health_pb2.HealthCheckResponse(status=status)
                sent = status
                continue  # readiness may have changed while the answer was out (the server may be stopping)
            if self._readiness.stopping.is_set():
                return  # the server is stopping: end the call rather than hold up its graceful stop
            await change.wait()
