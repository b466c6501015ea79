"""PyTriton's exceptions (``pytriton.exceptions``), raised where PyTriton raises them."""

from __future__ import annotations

import pybind_serve.errors

__all__ = [
    "PyTritonBadParameterError",
    "PyTritonError",
    "PyTritonInvalidOperationError",
    "PyTritonModelConfigError",
    "PyTritonRuntimeError",
    "PyTritonUnrecoverableError",
    "PyTritonValidationError",
]


class PyTritonError(Exception):
    """The root of PyTriton's server-side exceptions; ``message`` holds the text.

    >>> PyTritonValidationError("bad").message
    'bad'
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self._message = message

    @property
    def message(self) -> str:
        """The error's text."""
        return self._message

    def __str__(self) -> str:
        return self._message


class PyTritonValidationError(PyTritonError):
    """A configuration or an argument is not valid."""


class PyTritonInvalidOperationError(PyTritonError):
    """The operation is not allowed in the object's current state."""


class PyTritonBadParameterError(PyTritonError):
    """A parameter is not valid."""


class PyTritonModelConfigError(PyTritonError):
    """The model configuration is not valid."""


class PyTritonUnrecoverableError(PyTritonError):
    """Raised by an inference function whose model cannot go on.

    On pybind_serve the requests of that call fail with this message (HTTP 500), like any other exception, and
    the server keeps serving; PyTriton stops its server instead.
    """


class PyTritonRuntimeError(PyTritonError):
    """Something failed while serving."""


def from_serve_error(exc: pybind_serve.errors.ServeError) -> PyTritonError:
    """The PyTriton exception for a pybind_serve error raised while configuring or starting a server."""
    if isinstance(exc, pybind_serve.errors.ConfigurationError):
        return PyTritonValidationError(str(exc))
    return PyTritonRuntimeError(str(exc))
