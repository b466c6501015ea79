"""PyTriton's client warnings (``pytriton.client.warnings``)."""

from __future__ import annotations

__all__ = ["NotSupportedTimeoutWarning", "PyTritonWarning"]


class PyTritonWarning(UserWarning):
    """The root of PyTriton's warnings."""


class NotSupportedTimeoutWarning(PyTritonWarning):
    """A timeout was given to a client that cannot apply it (``tritonclient.grpc`` outside ``infer``)."""
