"""PyTriton's request and response types (``pytriton.proxy.types``): pybind_serve's `Request`."""

from __future__ import annotations

from typing import Any

import numpy as np

from pybind_serve import Request

__all__ = ["Request", "Requests", "Response", "Responses"]

Requests = list[Request]
Response = dict[str, np.ndarray]
Responses = list[Response]
Scope = dict[str, Any]
