"""The asyncio gRPC transport, on grpc.aio: as `grpc_sync`, on the event loop of the first call."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import grpc
import grpc.aio

from ...errors import UnavailableError
from ..exchange import GrpcReply, GrpcRequest, Request
from ..grpc_codec import SERVICE
from ..url import Endpoint
from .grpc_sync import CHANNEL_OPTIONS, failed

__all__ = ["AsyncGrpcTransport"]


class AsyncGrpcTransport:
    """Calls to one gRPC server from one event loop."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._where = endpoint.address
        self._tls = endpoint.tls
        self._channel: grpc.aio.Channel | None = None  # made on the loop of the first call, which it belongs to
        self._methods: dict[str, Any] = {}  # the callable of each method, made once
        self._closed = False

    async def send(self, request: Request) -> GrpcReply:
        if not isinstance(request, GrpcRequest):
            raise TypeError(f"a gRPC transport sends GrpcRequest, got {type(request).__name__}")
        channel = self._open(request)
        call = self._methods.get(request.method)
        if call is None:
            call = channel.unary_unary(f"/{SERVICE}/{request.method}", response_deserializer=bytearray)
            self._methods[request.method] = call
        try:
            body = await call(request.body, timeout=request.timeout_s, metadata=request.metadata or None)
        except grpc.aio.AioRpcError as exc:
            return failed(request, exc.code(), exc.details(), self._where)
        return GrpcReply("OK", "", body)

    async def stream(self, request: GrpcRequest) -> AsyncGenerator[GrpcReply, None]:
        channel = self._open(request)
        method = channel.stream_stream(f"/{SERVICE}/{request.method}", response_deserializer=bytearray)
        call = method(iter([request.body]), timeout=request.timeout_s, metadata=request.metadata or None)
        try:
            async for body in call:
                yield GrpcReply("OK", "", body)
        except grpc.aio.AioRpcError as exc:
            yield failed(request, exc.code(), exc.details(), self._where)
        finally:
            call.cancel()

    async def close(self) -> None:
        self._closed = True
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()

    def _open(self, request: GrpcRequest) -> grpc.aio.Channel:
        if self._closed:
            raise UnavailableError(f"{request.what}: this client was closed")
        if self._channel is None:
            if self._tls is not None:
                credentials = self._tls.grpc_credentials()
                self._channel = grpc.aio.secure_channel(self._where, credentials, options=CHANNEL_OPTIONS)
            else:
                self._channel = grpc.aio.insecure_channel(self._where, options=CHANNEL_OPTIONS)
        return self._channel
