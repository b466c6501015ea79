"""Clients for models served over KServe v2 / Triton's protocol, by pybind_serve or any other server (Triton).

=============================  =============================================================================
 `ModelClient`                  blocking, thread-safe: ``client.infer_sample(x=...)`` returns the outputs
 `AsyncModelClient`             asyncio: ``await client.infer_sample(x=...)``
 `FuturesModelClient`           a thread pool: ``client.infer_sample(x=...)`` returns a `concurrent.futures.Future`
 `DecoupledModelClient`         blocking, gRPC streaming: ``for outputs in client.infer_sample(x=...)``
 `AsyncDecoupledModelClient`    asyncio, gRPC streaming: ``async for outputs in client.infer_sample(x=...)``
=============================  =============================================================================

All take one URL form (``http://host:8000``, ``grpc://host:8001``, or a bare ``host:port`` for HTTP) and the
model's name, and raise the classes of `pybind_serve.errors`, so ``except`` works the same on both sides.

How it is built: every client runs the plans of one sans-I/O core (`core`: what to send, in which order, and
what the replies mean; `http_codec` and `grpc_codec` for the two wires) on a transport (`transport`), which only
moves bytes. Importing this package imports neither aiohttp nor grpc: a client imports its transport's library
when it is made.
"""

from __future__ import annotations

from .aio import AsyncDecoupledModelClient, AsyncModelClient
from .futures import FuturesModelClient
from .model import RemoteModelConfig
from .sync import DecoupledModelClient, ModelClient
from .url import ClientTls

__all__ = [
    "AsyncDecoupledModelClient",
    "AsyncModelClient",
    "ClientTls",
    "DecoupledModelClient",
    "FuturesModelClient",
    "ModelClient",
    "RemoteModelConfig",
]
