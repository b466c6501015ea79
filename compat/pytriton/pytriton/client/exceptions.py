"""PyTriton's client exceptions (``pytriton.client.exceptions``).

The shim's clients raise these, never pybind_serve's own classes: `pytriton.client._translate` turns each
`pybind_serve.errors.ServeError` into the class PyTriton raises in the same case.

>>> error = PyTritonClientTimeoutError("no answer within 1 s")
>>> error.message, str(error), isinstance(error, PyTritonClientError)
('no answer within 1 s', 'no answer within 1 s', True)
"""

from __future__ import annotations

__all__ = [
    "PyTritonClientClosedError",
    "PyTritonClientError",
    "PyTritonClientInferenceServerError",
    "PyTritonClientInvalidUrlError",
    "PyTritonClientModelDoesntSupportBatchingError",
    "PyTritonClientModelUnavailableError",
    "PyTritonClientQueueFullError",
    "PyTritonClientTimeoutError",
    "PyTritonClientValueError",
]


class PyTritonClientError(Exception):
    """The root of the client's exceptions; ``message`` holds the text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self._message = message

    @property
    def message(self) -> str:
        """The error's text."""
        return self._message

    def __str__(self) -> str:
        return self._message


class PyTritonClientValueError(PyTritonClientError):
    """An argument of a client call is not valid (inputs both positional and named, a parameter's type, ...)."""


class PyTritonClientInvalidUrlError(PyTritonClientValueError):
    """The server's URL cannot be parsed, or its scheme is neither ``http`` nor ``grpc``."""


class PyTritonClientTimeoutError(PyTritonClientError):
    """The server or the model was not ready in time, or a request got no answer in time."""


class PyTritonClientModelUnavailableError(PyTritonClientError):
    """The model (name and version) is not available on the server."""


class PyTritonClientClosedError(PyTritonClientError):
    """The client was closed."""


class PyTritonClientModelDoesntSupportBatchingError(PyTritonClientError):
    """``infer_batch`` was called for a model that does not batch (``max_batch_size`` 0)."""


class PyTritonClientInferenceServerError(PyTritonClientError):
    """The server answered with an error: the inference function raised, the request was refused, ..."""


class PyTritonClientQueueFullError(PyTritonClientError):
    """`FuturesModelClient`'s queue of calls is full."""
