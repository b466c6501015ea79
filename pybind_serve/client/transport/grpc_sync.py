"""The blocking gRPC transport, on grpcio: one channel (one HTTP/2 connection, multiplexing every call).

Requests go out as the codec serialized them and responses come back as bytearrays (so the arrays decoded
over them are writable): no protobuf messages are built here, the codec reads and writes the wire.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import grpc

from ...errors import InferenceTimeoutError, UnavailableError
from ..exchange import GrpcReply, GrpcRequest, Request
from ..grpc_codec import SERVICE
from ..url import Endpoint
from .http_sync import unreachable

__all__ = ["CHANNEL_OPTIONS", "GrpcTransport", "failed"]

# Tensors can be large: no message size limit on this side (the server has its own).
CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
_CLIENT_DEADLINE = "Deadline Exceeded"  # grpc's details when the client's own deadline passed
# grpc's details when it could not connect, or the connection broke under the call (vs. a server's UNAVAILABLE).
_CANNOT_CONNECT = ("failed to connect", "connection refused", "dns resolution failed", "name resolution")
_BROKE = ("socket closed", "connection reset", "broken pipe", "end of tcp stream", "goaway", "connection aborted")


class GrpcTransport:
    """Calls to one gRPC server, from any number of threads."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._where = endpoint.address
        if endpoint.tls is not None:
            credentials = endpoint.tls.grpc_credentials()
            self._channel = grpc.secure_channel(endpoint.address, credentials, options=CHANNEL_OPTIONS)
        else:
            self._channel = grpc.insecure_channel(endpoint.address, options=CHANNEL_OPTIONS)
        self._methods: dict[str, Any] = {}  # the callable of each method, made once
        self._closed = False

    def send(self, request: Request) -> GrpcReply:
        if not isinstance(request, GrpcRequest):
            raise TypeError(f"a gRPC transport sends GrpcRequest, got {type(request).__name__}")
        self._check_open(request)
        call = self._methods.get(request.method)
        if call is None:
            call = self._channel.unary_unary(f"/{SERVICE}/{request.method}", response_deserializer=bytearray)
            self._methods[request.method] = call
        try:
            body = call(request.body, timeout=request.timeout_s, metadata=request.metadata or None)
        except grpc.RpcError as exc:
            return failed(request, exc.code(), exc.details(), self._where)
        return GrpcReply("OK", "", body)

    def stream(self, request: GrpcRequest) -> Generator[GrpcReply, None, None]:
        self._check_open(request)
        method = self._channel.stream_stream(f"/{SERVICE}/{request.method}", response_deserializer=bytearray)
        call = method(iter([request.body]), timeout=request.timeout_s, metadata=request.metadata or None)
        try:
            for body in call:
                yield GrpcReply("OK", "", body)
        except grpc.RpcError as exc:
            yield failed(request, exc.code(), exc.details(), self._where)
        finally:
            call.cancel()  # when the caller stops reading early; a no-op once the call is over

    def close(self) -> None:
        self._closed = True
        self._channel.close()

    def _check_open(self, request: GrpcRequest) -> None:
        if self._closed:
            raise UnavailableError(f"{request.what}: this client was closed")


def failed(request: GrpcRequest, code: grpc.StatusCode | None, details: str | None, where: str) -> GrpcReply:
    """The reply of a call that ended with a status other than OK, for the codec to raise as the server's
    error; raises itself when the status is the client's: its deadline, or a connection that failed."""
    name = code.name if code is not None else "UNKNOWN"
    details = details or ""
    if name == "DEADLINE_EXCEEDED" and details == _CLIENT_DEADLINE:
        raise InferenceTimeoutError(f"{request.what}: no answer from {where} within timeout_s={request.timeout_s:g}")
    if name == "UNAVAILABLE":
        lowered = details.lower()
        cause = ConnectionError(details)
        if any(marker in lowered for marker in _CANNOT_CONNECT):
            raise unreachable(request.what, where, cause, broke=False)
        if any(marker in lowered for marker in _BROKE):
            raise unreachable(request.what, where, cause, broke=True)
    return GrpcReply(name, details)
