"""PyTriton's clients (``pytriton.client``) on `pybind_serve.client`: see `pytriton.client.client`.

>>> from pytriton.client import ModelClient
>>> client = ModelClient("grpc://localhost", "add_sub", init_timeout_s=5)  # nothing is sent before the first call
>>> client.close()
"""

from __future__ import annotations

from .client import (
    AsyncioDecoupledModelClient,
    AsyncioModelClient,
    DecoupledModelClient,
    FuturesModelClient,
    ModelClient,
)

__all__ = [
    "AsyncioDecoupledModelClient",
    "AsyncioModelClient",
    "DecoupledModelClient",
    "FuturesModelClient",
    "ModelClient",
]
