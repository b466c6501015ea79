"""The blocking clients: `ModelClient` (one answer per call) and `DecoupledModelClient` (a stream of answers,
for decoupled models over gRPC). Both run the plans of `core` on a blocking transport; nothing else here."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

from .core import ClientBase, InferOptions, with_token
from .exchange import DEFAULT_TIMEOUT_S, Call, Pause, Plan, Step, drive
from .grpc_codec import StreamResponse
from .model import RemoteModelConfig
from .transport import StreamTransport, Transport, open_stream, open_sync
from .url import ClientTls

__all__ = ["DecoupledModelClient", "ModelClient"]

T = TypeVar("T")
Outputs = dict[str, np.ndarray]
Client = TypeVar("Client", bound="_Blocking")


class _Blocking(ClientBase):
    """What the blocking clients share: the model's state, and running a plan on the transport."""

    _transport: Transport

    @property
    def model_config(self) -> RemoteModelConfig:
        """The model's config (Triton's model configuration extension), read from the server once."""
        return self._run(self._core.model_config())

    def wait_for_model(self, timeout_s: float) -> None:
        """Return once the model is ready; `ModelNotReadyError` (or `ServerUnreachableError`, when the server
        never answered) if it is not within ``timeout_s``."""
        self._run(self._core.wait_for_model(timeout_s))

    def is_model_ready(self, *, timeout_s: float | None = None) -> bool:
        """Whether the model is ready now (False as well when the server does not know it)."""
        return self._run(self._core.is_model_ready(timeout_s))

    def load_model(self) -> None:
        """Ask the server to load the model (the model repository extension); `UnsupportedError` from a server
        without one, as pybind_serve, whose models are bound by `Serve.bind`."""
        self._run(self._core.load_model())

    def unload_model(self) -> None:
        """Ask the server to unload the model; `UnsupportedError` as for `load_model`."""
        self._run(self._core.unload_model())

    def close(self) -> None:
        """Unregister the shared-memory regions (``shared_memory=True``) and close the connections; later calls
        raise `UnavailableError`. Idempotent."""
        self._run(self._core.release_regions())
        self._transport.close()

    def __enter__(self: Client) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._core!r}>"

    def _run(self, plan: Plan[T]) -> T:
        return drive(plan, self._perform)

    def _perform(self, step: Step) -> Any:
        if isinstance(step, Pause):
            time.sleep(step.seconds)
            return None
        return step.parse(self._transport.send(step.request))


class ModelClient(_Blocking):
    """A model of a KServe v2 server (pybind_serve, Triton, ...) called from blocking code; thread-safe.

    ``url`` is ``http://host:port``, ``grpc://host:port`` or a bare ``host:port`` (HTTP); ``https://`` and
    ``grpcs://`` over TLS (``tls=ClientTls(ca=..., cert=..., key=...)`` to trust a CA of your own, or to show a
    client certificate). ``access_token`` is sent as the ``triton-access-token`` header of a server with
    ``Serve(access_token=...)``. Nothing is sent before the first call, which reads the model's metadata once
    (its inputs' order and datatypes: inputs are cast to them where that is safe, e.g. a list of floats for
    FP32). Every call takes at most ``timeout_s`` (60 s by default; per call, ``timeout_s=``) and raises the
    `pybind_serve.errors` class of what went wrong: the server's answer (`InvalidInputError`,
    `ModelNotFoundError`, ...), `InferenceTimeoutError`, or `ServerUnreachableError`.

    >>> import numpy as np
    >>> from pybind_serve import Serve, Tensor, batch
    >>> serve = Serve(http_port=0, grpc_port=None, metrics_port=None)
    >>> serve.bind("double", batch(lambda x: {"y": x * 2}), inputs=[Tensor("x", np.float32, (2,))],
    ...            outputs=[Tensor("y", np.float32, (2,))])
    >>> with serve.run(), ModelClient(serve.http_url, "double") as client:
    ...     client.infer_sample(x=[1, 2])["y"], client.infer_batch(x=[[1, 2], [3, 4]])["y"].shape
    (array([2., 4.], dtype=float32), (2, 2))
    """

    def __init__(
        self,
        url: str,
        model: str,
        *,
        version: int | str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        headers: Mapping[str, str] | None = None,
        shared_memory: bool = False,
        access_token: str | None = None,
        tls: ClientTls | None = None,
    ) -> None:
        headers = with_token(headers, access_token)
        super().__init__(
            url, model, version=version, timeout_s=timeout_s, headers=headers, shared_memory=shared_memory, tls=tls
        )
        self._transport = open_sync(self._core.endpoint)

    def infer_sample(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        priority: int | None = None,
        timeout_s: float | None = None,
        outputs: Sequence[str] | None = None,
        **named_inputs: Any,
    ) -> Outputs:
        """Run the model on one sample: the batch axis is added to each input and taken off each output when
        the model batches. Inputs go by name, or positionally in the model's input order, or as one mapping
        (for an input whose name is one of the options). ``parameters`` are the request's parameters (the
        function reads them from ``Request.parameters``), ``priority`` its priority level (1 is the
        highest), ``outputs`` the outputs wanted (None: all)."""
        options = InferOptions(parameters, headers, priority, timeout_s, outputs)
        return self._run(self._core.infer(inputs, named_inputs, options, sample=True))

    def infer_batch(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        priority: int | None = None,
        timeout_s: float | None = None,
        outputs: Sequence[str] | None = None,
        **named_inputs: Any,
    ) -> Outputs:
        """Run the model on a batch: inputs and outputs carry the batch axis first; options as `infer_sample`."""
        options = InferOptions(parameters, headers, priority, timeout_s, outputs)
        return self._run(self._core.infer(inputs, named_inputs, options, sample=False))


class DecoupledModelClient(_Blocking):
    """A decoupled model (one that answers a request with any number of responses) over gRPC
    ``ModelStreamInfer``: each call returns an iterator of the responses' outputs, ended by the server's
    final response. The request is sent when iteration starts; ``timeout_s`` bounds the whole stream.

    It calls models that are not decoupled too (one response each). Otherwise as `ModelClient`; the URL must
    be ``grpc://host:port``. Errors inside a stream come without a status code (the protocol has none), so
    they are raised as `InferenceError` with the server's message.
    """

    _transport: StreamTransport

    def __init__(
        self,
        url: str,
        model: str,
        *,
        version: int | str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        headers: Mapping[str, str] | None = None,
        shared_memory: bool = False,
        access_token: str | None = None,
        tls: ClientTls | None = None,
    ) -> None:
        headers = with_token(headers, access_token)
        super().__init__(
            url, model, version=version, timeout_s=timeout_s, headers=headers, shared_memory=shared_memory, tls=tls
        )
        self._transport = open_stream(self._core.endpoint)

    def infer_sample(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        priority: int | None = None,
        timeout_s: float | None = None,
        outputs: Sequence[str] | None = None,
        **named_inputs: Any,
    ) -> Iterator[Outputs]:
        """The outputs of each response to one sample (as `ModelClient.infer_sample`)."""
        options = InferOptions(parameters, headers, priority, timeout_s, outputs)
        return self._responses(self._core.stream(inputs, named_inputs, options, sample=True))

    def infer_batch(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        priority: int | None = None,
        timeout_s: float | None = None,
        outputs: Sequence[str] | None = None,
        **named_inputs: Any,
    ) -> Iterator[Outputs]:
        """The outputs of each response to one batch (as `ModelClient.infer_batch`)."""
        options = InferOptions(parameters, headers, priority, timeout_s, outputs)
        return self._responses(self._core.stream(inputs, named_inputs, options, sample=False))

    def _responses(self, plan: Plan[Call[StreamResponse]]) -> Iterator[Outputs]:
        call = self._run(plan)
        # closing: leaving early ends the gRPC call now, not when the generator is collected
        with contextlib.closing(self._transport.stream(call.request)) as replies:  # type: ignore[arg-type]
            for reply in replies:
                response = call.parse(reply)
                if response.outputs:  # an empty final response only says that the stream is over
                    yield response.outputs
                if response.final:
                    return
