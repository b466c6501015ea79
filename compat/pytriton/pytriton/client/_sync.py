"""PyTriton's blocking clients, `ModelClient` and `DecoupledModelClient`, on `pybind_serve.client`'s."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

import pybind_serve.client as serve_client

from ..model_config.triton_model_config import TritonModelConfig
from ._base import (
    STREAM_TIME_LIMIT_S,
    BaseModelClient,
    check_batching,
    check_inputs,
    check_model_kind,
    check_parameters,
    header_strings,
)
from ._model_config import triton_model_config
from ._translate import pytriton_errors
from .exceptions import PyTritonClientInferenceServerError, PyTritonClientValueError
from .utils import create_client_from_url, wait_for_server_ready

__all__ = ["DecoupledModelClient", "ModelClient"]

Outputs = dict[str, np.ndarray]
Client = TypeVar("Client", bound="ModelClient")


class ModelClient(BaseModelClient):
    """PyTriton's blocking client of a model (``pytriton.client.ModelClient``), thread-safe.

    ``url`` is ``http://host:port``, ``grpc://host:port`` or a bare ``host[:port]`` (HTTP). The first call
    waits up to ``init_timeout_s`` for the model (at once with ``lazy_init=False``), then each request takes at
    most ``inference_timeout_s``. Errors are `pytriton.client.exceptions` classes: `PyTritonClientTimeoutError`
    (not ready, or no answer in time), `PyTritonClientInferenceServerError` (the server's error answer),
    `PyTritonClientValueError` (arguments), `PyTritonClientClosedError`.

    >>> import numpy as np
    >>> from pybind_serve import Serve, Tensor, batch
    >>> serve = Serve(http_port=0, grpc_port=None, metrics_port=None)
    >>> serve.bind("double", batch(lambda x: {"y": x * 2}), inputs=[Tensor("x", np.float32, (2,))],
    ...            outputs=[Tensor("y", np.float32, (2,))])
    >>> with serve.run(), ModelClient(serve.http_url, "double", init_timeout_s=10) as client:
    ...     client.infer_sample(np.array([1, 2], np.float32))["y"], client.model_config.max_batch_size > 0
    (array([2., 4.], dtype=float32), True)
    """

    def __init__(
        self,
        url: str,
        model_name: str,
        model_version: str | None = None,
        *,
        lazy_init: bool = True,
        init_timeout_s: float | None = None,
        inference_timeout_s: float | None = None,
        model_config: TritonModelConfig | None = None,
        ensure_model_is_ready: bool = True,
        access_token: str | None = None,
    ) -> None:
        self._tritonclient: Any = None
        super().__init__(
            url,
            model_name,
            model_version,
            lazy_init=lazy_init,
            init_timeout_s=init_timeout_s,
            inference_timeout_s=inference_timeout_s,
            model_config=model_config,
            ensure_model_is_ready=ensure_model_is_ready,
            access_token=access_token,
        )
        if not lazy_init:
            try:
                self._init_model()
            except BaseException:
                self.close()  # its connections: the caller never gets the client
                raise

    def _open(self) -> Any:
        return serve_client.ModelClient(self._url, self._model_name, **self._client_arguments())

    def __enter__(self: Client) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections; later calls raise `PyTritonClientClosedError`. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with pytriton_errors():
            self._client.close()
        if self._tritonclient is not None:
            self._tritonclient.close()

    def wait_for_model(self, timeout_s: float) -> None:
        """Return once the server and the model are ready; `PyTritonClientTimeoutError` if not within
        ``timeout_s``."""
        self._check_open()
        with pytriton_errors(waiting=True):
            self._client.wait_for_model(timeout_s)

    def wait_for_server(self, timeout_s: float) -> None:
        """Return once the server is ready; `PyTritonClientTimeoutError` if not within ``timeout_s``."""
        self._check_open()
        wait_for_server_ready(self._general_client, timeout_s=timeout_s)

    @property
    def model_config(self) -> TritonModelConfig:
        """The model's config, read from the server once (waiting up to ``init_timeout_s`` for the model)."""
        if self._model_config is None:
            self._init_model()
        assert self._model_config is not None
        return self._model_config

    @property
    def is_batching_supported(self) -> bool:
        """Whether the model batches (``max_batch_size`` > 0)."""
        return self.model_config.max_batch_size > 0

    def load_model(self, config: str | None = None, files: dict[str, bytes] | None = None) -> None:
        """Ask the server to load the model (Triton's model repository extension). pybind_serve binds models
        with ``Triton.bind`` and answers this with an error (`PyTritonClientInferenceServerError`); a ``config``
        or ``files`` to load from cannot be sent (`PyTritonClientValueError`)."""
        self._check_open()
        if config is not None or files is not None:
            raise PyTritonClientValueError("load_model(config=..., files=...) is not supported: bind the model instead")
        with pytriton_errors():
            self._client.load_model()

    def unload_model(self) -> None:
        """Ask the server to unload the model; as `load_model`."""
        self._check_open()
        with pytriton_errors():
            self._client.unload_model()

    def infer_sample(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        **named_inputs: Any,
    ) -> Outputs:
        """Run the model on one sample: inputs positionally (in the model's input order) or by name, without
        the batch axis, which is added (and taken off the outputs) when the model batches. ``parameters`` are
        the request's parameters, ``headers`` extra HTTP headers (gRPC metadata)."""
        return self._infer(inputs, named_inputs, parameters, headers, sample=True)

    def infer_batch(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        **named_inputs: Any,
    ) -> Outputs:
        """Run the model on a batch (inputs and outputs with the batch axis first); a model that does not batch
        raises `PyTritonClientModelDoesntSupportBatchingError`."""
        return self._infer(inputs, named_inputs, parameters, headers, sample=False)

    @property
    def _general_client(self) -> Any:
        """A ``tritonclient`` client of the server, made on first use (PyTriton's clients expose theirs)."""
        self._check_open()
        if self._tritonclient is None:
            timeout_s = None if self._triton_url.scheme == "grpc" else self._inference_timeout_s
            self._tritonclient = create_client_from_url(self._url, network_timeout_s=timeout_s)
        return self._tritonclient

    def _infer(
        self,
        inputs: tuple[Any, ...],
        named_inputs: Mapping[str, Any],
        parameters: Mapping[str, Any] | None,
        headers: Mapping[str, Any] | None,
        *,
        sample: bool,
    ) -> Outputs:
        config = self._prepare(inputs, named_inputs, parameters, headers, sample=sample)
        check_model_kind(config, decoupled_client=False)
        call = self._client.infer_sample if sample else self._client.infer_batch
        with pytriton_errors():
            # named inputs go as one mapping: an input may be called "outputs" or "priority"
            result: Outputs = call(*(inputs or (named_inputs,)), parameters=parameters, headers=header_strings(headers))
        return result

    def _prepare(
        self,
        inputs: tuple[Any, ...],
        named_inputs: Mapping[str, Any],
        parameters: Mapping[str, Any] | None,
        headers: Mapping[str, Any] | None,
        *,
        sample: bool,
    ) -> TritonModelConfig:
        """Check a call's arguments, wait for the model (first call) and check that it takes the call."""
        check_inputs(inputs, named_inputs)
        check_parameters(parameters, "parameters")
        check_parameters(headers, "headers")
        self._check_open()
        if not self._model_ready:
            self._init_model()
        config = self.model_config
        if not sample:
            check_batching(config)
        return config

    def _init_model(self) -> None:
        """Wait up to ``init_timeout_s`` for the model, then read its config (unless given). Calls that come
        together each wait, in parallel: none waits behind another's wait, which may fail."""
        self.wait_for_model(self._init_timeout_s)
        self._model_ready = True
        if self._model_config is None:
            with pytriton_errors(waiting=True):
                self._model_config = triton_model_config(self._client.model_config)


class DecoupledModelClient(ModelClient):
    """PyTriton's blocking client of a decoupled model (``pytriton.client.DecoupledModelClient``), over gRPC
    streaming: ``infer_sample`` and ``infer_batch`` return an iterator of the responses' outputs.

    One stream at a time: a call made before the last call's iterator was read to its end (or closed) raises
    `PyTritonClientInferenceServerError`. The request is sent when iteration starts; errors of the stream
    (`PyTritonClientInferenceServerError`) are raised by the iterator. An ``http://`` URL raises
    `PyTritonClientValueError`.
    """

    def __init__(
        self,
        url: str,
        model_name: str,
        model_version: str | None = None,
        *,
        lazy_init: bool = True,
        init_timeout_s: float | None = None,
        inference_timeout_s: float | None = None,
        model_config: TritonModelConfig | None = None,
        ensure_model_is_ready: bool = True,
        access_token: str | None = None,
    ) -> None:
        self._stream_lock = threading.Lock()
        super().__init__(
            url,
            model_name,
            model_version,
            lazy_init=lazy_init,
            init_timeout_s=init_timeout_s,
            inference_timeout_s=inference_timeout_s,
            model_config=model_config,
            ensure_model_is_ready=ensure_model_is_ready,
            access_token=access_token,
        )

    def _open(self) -> Any:
        if self._triton_url.scheme != "grpc":
            raise PyTritonClientValueError(f"DecoupledModelClient needs a grpc:// URL, got {self._url}")
        return serve_client.DecoupledModelClient(self._url, self._model_name, **self._client_arguments())

    def infer_sample(  # type: ignore[override]
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        **named_inputs: Any,
    ) -> Iterator[Outputs]:
        """The outputs of each response to one sample (as `ModelClient.infer_sample`)."""
        return self._stream(inputs, named_inputs, parameters, headers, sample=True)

    def infer_batch(  # type: ignore[override]
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        **named_inputs: Any,
    ) -> Iterator[Outputs]:
        """The outputs of each response to one batch (as `ModelClient.infer_batch`)."""
        return self._stream(inputs, named_inputs, parameters, headers, sample=False)

    def _stream(
        self,
        inputs: tuple[Any, ...],
        named_inputs: Mapping[str, Any],
        parameters: Mapping[str, Any] | None,
        headers: Mapping[str, Any] | None,
        *,
        sample: bool,
    ) -> Iterator[Outputs]:
        if not self._stream_lock.acquire(blocking=False):
            raise PyTritonClientInferenceServerError(
                "A stream of this client is still open: read it to its end (or close it) before the next call"
            )
        try:
            config = self._prepare(inputs, named_inputs, parameters, headers, sample=sample)
            check_model_kind(config, decoupled_client=True)
            call = self._client.infer_sample if sample else self._client.infer_batch
            responses = call(
                *(inputs or (named_inputs,)),
                parameters=parameters,
                headers=header_strings(headers),
                timeout_s=STREAM_TIME_LIMIT_S,
            )
        except BaseException:
            self._stream_lock.release()
            raise
        return self._relay(responses)

    def _relay(self, responses: Iterator[Outputs]) -> Iterator[Outputs]:
        try:
            with pytriton_errors():
                yield from responses
        finally:
            self._stream_lock.release()
