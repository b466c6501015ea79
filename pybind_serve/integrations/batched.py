"""`BatchedModel`: a bound model called like a function from blocking code (a Flask handler, a notebook cell),
while the server batches the calls that threads make at the same time.

Each call is one `ModelClient.infer_batch` to the `Serve` (KServe v2 REST with binary tensors, over a pool of
keep-alive loopback connections); the calling thread blocks until the answer of its batch comes back. Errors
are those of `pybind_serve.errors`, whatever went wrong: the server's answer, a timeout, a server that is gone.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from types import TracebackType

import numpy as np
from numpy.typing import ArrayLike

from ..client import ModelClient
from ..errors import ConfigurationError, UnavailableError
from ..serve import Serve

__all__ = ["BatchedModel"]

Parameter = bool | int | float | str


class BatchedModel:
    """Model ``name`` of ``server`` (a `Serve`, or the ``http://host:port`` of one), as a thread-safe function.

    ``model(x=array)`` sends one request and returns its outputs by name, as numpy arrays; with batching on,
    arrays carry the batch dimension first (``x[None]`` for one sample). Inputs are cast to the model's
    declared datatypes where the cast is safe or same-kind (a JSON list of floats for an FP32 input works);
    the declared datatypes are read once, at the first call. A call raises the `InferenceError` the server
    answers (`InvalidInputError`, `ModelExecutionError` when the function raised, `UnavailableError`, ...),
    `InferenceTimeoutError` after ``timeout_s`` without an answer, and `ServerUnreachableError` (an
    `UnavailableError`) when the server cannot be reached. Nothing is sent until the first call, so it can be
    made before ``serve.run()``.

    >>> import numpy as np
    >>> from pybind_serve import Serve, Tensor, batch
    >>> @batch
    ... def double(x):
    ...     return {"y": x * 2}
    >>> serve = Serve(http_port=0, grpc_port=None, metrics_port=None)
    >>> serve.bind("double", double, inputs=[Tensor("x", np.float32, (2,))], outputs=[Tensor("y", np.float32, (2,))])
    >>> with serve, BatchedModel(serve, "double") as model:
    ...     _ = serve.run()
    ...     model(x=[[1, 2]])["y"]
    array([[2., 4.]], dtype=float32)
    """

    def __init__(self, server: Serve | str, name: str, *, version: int | None = None, timeout_s: float = 60.0) -> None:
        problems = []
        if not isinstance(server, (Serve, str)):
            problems.append(f"server must be a Serve or an http://host:port URL, got {type(server).__name__}")
        if not isinstance(name, str) or not name or "/" in name:
            problems.append(f"name must be a non-empty model name without '/', got {name!r}")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
            problems.append(f"version must be None (the server's choice) or an int >= 1, got {version!r}")
        if not isinstance(timeout_s, (int, float)) or isinstance(timeout_s, bool) or timeout_s <= 0:
            problems.append(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        if problems:
            raise ConfigurationError.collect(f"BatchedModel({name!r})", problems)
        self.name, self.version, self.timeout_s = name, version, float(timeout_s)
        self._server = server
        self._client: ModelClient | None = None  # made at the first call: a Serve knows its port once it runs
        self._lock = threading.Lock()
        self._closed = False

    def __call__(self, **inputs: ArrayLike) -> dict[str, np.ndarray]:
        """Run the model on ``inputs`` (name = array) and return its outputs by name; see `infer`."""
        return self.infer(inputs)

    def infer(
        self,
        inputs: Mapping[str, ArrayLike],
        *,
        parameters: Mapping[str, Parameter] | None = None,
        outputs: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run the model on ``inputs`` and return its outputs by name (all of them, or only ``outputs``).

        ``parameters`` are the request's parameters: ``priority``, ``timeout`` (µs) and custom ones the
        function reads from ``Request.parameters``.
        """
        return self._model_client().infer_batch(inputs, parameters=parameters, outputs=outputs)

    def close(self) -> None:
        """Close the idle connections; later calls raise `UnavailableError`. Idempotent."""
        with self._lock:
            self._closed = True
            client = self._client
        if client is not None:
            client.close()

    def __enter__(self) -> BatchedModel:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self._server if isinstance(self._server, str) else repr(self._server)
        label = f"model {self.name!r}" + ("" if self.version is None else f" v{self.version}")
        return f"<BatchedModel {label} of {where}>"

    def _model_client(self) -> ModelClient:
        with self._lock:
            if self._closed:
                raise UnavailableError(f"model {self.name!r}: this BatchedModel was closed")
            if self._client is None:
                url = self._server if isinstance(self._server, str) else self._server.http_url
                self._client = ModelClient(url, self.name, version=self.version, timeout_s=self.timeout_s)
            return self._client
