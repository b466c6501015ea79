"""The shim's error boundary: pybind_serve's client errors turned into the exceptions PyTriton raises in the
same case. Nothing else in `pytriton.client` catches `pybind_serve.errors.ServeError`.

=================================================================  ==============================================
 pybind_serve error                                                  PyTriton exception
=================================================================  ==============================================
 `InferenceTimeoutError` (no answer within the time limit, or the   `PyTritonClientTimeoutError`
 server's queue timeout), `ExecutionTimeoutError`,
 `ServerUnreachableError` (PyTriton's HTTP client says timeout too)
 `ModelNotReadyError`, `ModelNotFoundError` while waiting for the    `PyTritonClientTimeoutError`
 model (``waiting=True``: init, ``wait_for_model``, ``model_config``)
 `ConfigurationError` (an argument pybind_serve refuses)             `PyTritonClientValueError`
 any other `InferenceError` (the server's answer)                    `PyTritonClientInferenceServerError`
=================================================================  ==============================================

>>> from pybind_serve.errors import InferenceTimeoutError, ModelExecutionError
>>> type(translate(InferenceTimeoutError("no answer"))).__name__
'PyTritonClientTimeoutError'
>>> print(translate(ModelExecutionError("model 'm': division by zero")))
model 'm': division by zero
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from pybind_serve.errors import (
    ConfigurationError,
    ExecutionTimeoutError,
    InferenceError,
    InferenceTimeoutError,
    ModelNotFoundError,
    ModelNotReadyError,
    ServeError,
    ServerUnreachableError,
)

from .exceptions import (
    PyTritonClientError,
    PyTritonClientInferenceServerError,
    PyTritonClientTimeoutError,
    PyTritonClientValueError,
)

__all__ = ["pytriton_errors", "translate"]

_TIMEOUTS = (InferenceTimeoutError, ExecutionTimeoutError, ServerUnreachableError)
_NOT_READY = (ModelNotReadyError, ModelNotFoundError)


def translate(error: ServeError, *, waiting: bool = False) -> PyTritonClientError:
    """The PyTriton exception for ``error``; ``waiting``: raised while waiting for the model to be ready."""
    message = str(error)
    if isinstance(error, _TIMEOUTS) or (waiting and isinstance(error, _NOT_READY)):
        return PyTritonClientTimeoutError(message)
    if isinstance(error, ConfigurationError):
        return PyTritonClientValueError(message)
    if isinstance(error, InferenceError):
        return PyTritonClientInferenceServerError(message)
    return PyTritonClientError(message)


@contextlib.contextmanager
def pytriton_errors(*, waiting: bool = False) -> Iterator[None]:
    """Raise the PyTriton exception of any pybind_serve error raised inside (it is kept as ``__cause__``)."""
    try:
        yield
    except ServeError as error:
        raise translate(error, waiting=waiting) from error
