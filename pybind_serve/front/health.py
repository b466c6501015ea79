"""The standard gRPC health service, ``grpc.health.v1.Health``, over the front's readiness.

Load balancers and Kubernetes' gRPC probes call it. The server ("") and ``inference.GRPCInferenceService``
are SERVING exactly when ``/v2/health/ready`` answers 200 (the server is open and every model has a worker),
else NOT_SERVING. ``Watch`` sends the status, then every change of it, and ends when the server stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from ..protocol.proto import health_pb2, health_pb2_grpc
from .readiness import Readiness

__all__ = ["HealthServicer"]

SERVICES = ("", "inference.GRPCInferenceService")
_Status = health_pb2.HealthCheckResponse.ServingStatus


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
