"""PyTriton's clients (``pytriton.client.client``), each on its `pybind_serve.client` counterpart:

==============================  ===============================================================================
 PyTriton                        pybind_serve
==============================  ===============================================================================
 `ModelClient`                   `pybind_serve.client.ModelClient`
 `DecoupledModelClient`          `pybind_serve.client.DecoupledModelClient` (gRPC streaming)
 `AsyncioModelClient`            `pybind_serve.client.AsyncModelClient`
 `AsyncioDecoupledModelClient`   `pybind_serve.client.AsyncDecoupledModelClient`
 `FuturesModelClient`            the shim's `ModelClient` on a thread pool
==============================  ===============================================================================

What the shim adds is PyTriton's surface only: its arguments and defaults (``init_timeout_s``,
``inference_timeout_s``, ``lazy_init``, ...), its checks of a call's arguments, its `TritonModelConfig`, and its
exceptions (`pytriton.client.exceptions`).
"""

from __future__ import annotations

from ._asyncio import AsyncioDecoupledModelClient, AsyncioModelClient
from ._base import DEFAULT_INFERENCE_TIMEOUT_S, BaseModelClient
from ._futures import FuturesModelClient
from ._sync import DecoupledModelClient, ModelClient

__all__ = [
    "DEFAULT_INFERENCE_TIMEOUT_S",
    "AsyncioDecoupledModelClient",
    "AsyncioModelClient",
    "BaseModelClient",
    "DecoupledModelClient",
    "FuturesModelClient",
    "ModelClient",
]
