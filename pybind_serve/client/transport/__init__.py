"""The I/O of the clients: each transport sends `exchange` requests and returns their replies, nothing more.

=============  =================================================  ================================================
 wire           blocking (`Transport`)                             asyncio (`AsyncTransport`)
=============  =================================================  ================================================
 HTTP           `http_sync`: the standard library's http.client,   `http_async`: aiohttp
                in a pool of keep-alive connections (`pool`)
 gRPC           `grpc_sync`: grpcio                                `grpc_async`: grpc.aio
=============  =================================================  ================================================

A transport raises `ServerUnreachableError` when it cannot connect or the connection breaks before the answer,
and `InferenceTimeoutError` when ``timeout_s`` passes first; every answer the server gives, errors included, is
returned for the codec to read. Each module is imported only when a client of its kind is made, so an HTTP
client never imports grpc, nor a blocking one aiohttp.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import Protocol

from ...errors import ConfigurationError
from ..exchange import GrpcReply, GrpcRequest, Reply, Request
from ..url import Endpoint

__all__ = [
    "AsyncStreamTransport",
    "AsyncTransport",
    "StreamTransport",
    "Transport",
    "open_async",
    "open_async_stream",
    "open_stream",
    "open_sync",
]


class Transport(Protocol):
    def send(self, request: Request) -> Reply: ...

    def close(self) -> None: ...


class StreamTransport(Transport, Protocol):
    def stream(self, request: GrpcRequest) -> Generator[GrpcReply, None, None]:
        """One reply per response on the stream, then one with the status if the call failed."""
        ...


class AsyncTransport(Protocol):
    async def send(self, request: Request) -> Reply: ...

    async def close(self) -> None: ...


class AsyncStreamTransport(AsyncTransport, Protocol):
    def stream(self, request: GrpcRequest) -> AsyncGenerator[GrpcReply, None]: ...


def open_sync(endpoint: Endpoint) -> Transport:
    """A blocking transport to ``endpoint``; it connects at its first request."""
    if endpoint.scheme == "grpc":
        from .grpc_sync import GrpcTransport

        return GrpcTransport(endpoint)
    from .http_sync import HttpTransport

    return HttpTransport(endpoint)


def open_async(endpoint: Endpoint) -> AsyncTransport:
    """An asyncio transport to ``endpoint``; it connects at its first request, on the loop that makes it."""
    if endpoint.scheme == "grpc":
        from .grpc_async import AsyncGrpcTransport

        return AsyncGrpcTransport(endpoint)
    from .http_async import AsyncHttpTransport

    return AsyncHttpTransport(endpoint)


def open_stream(endpoint: Endpoint) -> StreamTransport:
    """A blocking transport that also streams (ModelStreamInfer): gRPC only."""
    from .grpc_sync import GrpcTransport

    return GrpcTransport(_grpc_only(endpoint))


def open_async_stream(endpoint: Endpoint) -> AsyncStreamTransport:
    """An asyncio transport that also streams (ModelStreamInfer): gRPC only."""
    from .grpc_async import AsyncGrpcTransport

    return AsyncGrpcTransport(_grpc_only(endpoint))


def _grpc_only(endpoint: Endpoint) -> Endpoint:
    if endpoint.scheme != "grpc":
        raise ConfigurationError(
            f"streaming from a decoupled model needs gRPC (ModelStreamInfer): use grpc://{endpoint.address}, "
            f"not {endpoint}"
        )
    return endpoint
