"""`BatchedModel`: a bound model called like a function from blocking code (a Flask handler, a notebook cell),
while the server batches the calls that threads make at the same time.

Each call is one KServe v2 REST request with binary tensors to the `Serve` (loopback HTTP through a pool of
keep-alive connections); the calling thread blocks until the answer of its batch comes back. Errors are
those of `pybind_serve.errors`, whatever went wrong: the server's answer, a timeout, a server that is gone.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from urllib.parse import quote, urlsplit

import numpy as np
from numpy.typing import ArrayLike

from ..errors import ConfigurationError, InferenceTimeoutError, UnavailableError
from ..serve import Serve
from .codec import HEADER_LENGTH, conform_inputs, decode_metadata, decode_response, encode_request
from .pool import ConnectionPool, Reply

__all__ = ["BatchedModel"]

Parameter = bool | int | float | str


class BatchedModel:
    """Model ``name`` of ``server`` (a `Serve`, or the ``http://host:port`` of one), as a thread-safe function.

    ``model(x=array)`` sends one request and returns its outputs by name, as numpy arrays; with batching on,
    arrays carry the batch dimension first (``x[None]`` for one sample). Inputs are cast to the model's
    declared datatypes where the cast is safe or same-kind (a JSON list of floats for an FP32 input works);
    the declared datatypes are read once, at the first call. A call raises the `InferenceError` the server
    answers (`InvalidInputError`, `ModelExecutionError` when the function raised, `UnavailableError`, ...),
    `InferenceTimeoutError` after ``timeout_s`` without an answer, and `UnavailableError` when the server
    cannot be reached. Nothing is sent until the first call, so it can be made before ``serve.run()``.

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

    def __init__(
        self,
        server: Serve | str,
        name: str,
        *,
        version: int | None = None,
        timeout_s: float = 60.0,
        max_idle_connections: int = 64,
    ) -> None:
        problems = []
        if not isinstance(server, (Serve, str)):
            problems.append(f"server must be a Serve or an http://host:port URL, got {type(server).__name__}")
        if not isinstance(name, str) or not name or "/" in name:
            problems.append(f"name must be a non-empty model name without '/', got {name!r}")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
            problems.append(f"version must be None (the server's choice) or an int >= 1, got {version!r}")
        if not isinstance(timeout_s, (int, float)) or timeout_s <= 0:
            problems.append(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        if problems:
            raise ConfigurationError.collect(f"BatchedModel({name!r})", problems)
        self.name, self.version, self.timeout_s = name, version, float(timeout_s)
        self._server, self._max_idle = server, max_idle_connections
        self._path = f"/v2/models/{quote(name, safe='')}" + ("" if version is None else f"/versions/{version}")
        self._pool: ConnectionPool | None = None
        self._datatypes: dict[str, str] | None = None
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
        arrays = conform_inputs(inputs, self._input_datatypes())
        body, header_length = encode_request(arrays, parameters, outputs)
        headers = {HEADER_LENGTH: str(header_length), "Content-Type": "application/octet-stream"}
        reply = self._request("POST", f"{self._path}/infer", body, headers)
        length = reply.headers.get(HEADER_LENGTH)
        return decode_response(reply.status, reply.body, None if length is None else int(length))

    def close(self) -> None:
        """Close the idle connections; later calls raise `UnavailableError`. Idempotent."""
        with self._lock:
            self._closed = True
            pool = self._pool
        if pool is not None:
            pool.close()

    def __enter__(self) -> BatchedModel:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self._server if isinstance(self._server, str) else repr(self._server)
        return f"<BatchedModel {self._label} of {where}>"

    @property
    def _label(self) -> str:
        return f"model {self.name!r}" + ("" if self.version is None else f" v{self.version}")

    def _input_datatypes(self) -> dict[str, str]:
        # Read once; two threads racing here both ask, and get the same answer.
        if self._datatypes is None:
            reply = self._request("GET", self._path)
            self._datatypes = decode_metadata(reply.status, reply.body)
        return self._datatypes

    def _connection_pool(self) -> ConnectionPool:
        with self._lock:
            if self._closed:
                raise UnavailableError(f"{self._label}: this BatchedModel was closed")
            if self._pool is None:
                url = self._server if isinstance(self._server, str) else self._server.http_url
                host, port = _address(url)
                self._pool = ConnectionPool(host, port, self.timeout_s, self._max_idle)
            return self._pool

    def _request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Reply:
        pool = self._connection_pool()
        try:
            return pool.request(method, path, body, headers)
        except TimeoutError:
            raise InferenceTimeoutError(
                f"{self._label}: no answer from {pool.host}:{pool.port} within timeout_s={self.timeout_s:g}"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise UnavailableError(
                f"{self._label}: cannot reach the server at {pool.host}:{pool.port} ({type(exc).__name__}: {exc}); "
                "is it running?"
            ) from None


def _address(url: str) -> tuple[str, int]:
    """``(host, port)`` of an ``http://host:port`` URL.

    >>> _address("http://[::1]:8000")
    ('::1', 8000)
    """
    parts = urlsplit(url if "//" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigurationError(f"the server URL must look like http://host:port, got {url!r}")
    return parts.hostname, parts.port or 80
