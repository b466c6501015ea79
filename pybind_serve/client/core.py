"""The sans-I/O core that every client shares: what each operation sends, in which order, and what it makes of
the replies, as plans (`exchange`) that the sync, async, futures and streaming clients run on their transports.

It knows the model a client talks to, the client's defaults (``timeout_s``, headers), and caches the model's
metadata (read once, at the first call: input names, order and datatypes) and config (``infer_sample`` asks it
whether the model batches). The wire is the codec's business: `HttpCodec` or `GrpcCodec`, picked by the URL.

>>> core = ClientCore("grpc://localhost:8001", "add_sub", version=2)
>>> core.endpoint.address, core.model.label, type(core.codec).__name__
('localhost:8001', "model 'add_sub' v2", 'GrpcCodec')
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..errors import (
    ConfigurationError,
    InferenceError,
    InferenceTimeoutError,
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
    ServeError,
    ServerUnreachableError,
    UnsupportedError,
)
from .exchange import DEFAULT_TIMEOUT_S, Call, CallOptions, ModelRef, Pause, Plan
from .grpc_codec import GrpcCodec, StreamResponse
from .http_codec import HttpCodec
from .inputs import add_batch_axis, conform, gather
from .model import ModelMetadata, RemoteModelConfig
from .outputs import strip_batch_axis
from .shared_memory import Placement, RegionPool, output_sizes, serialized
from .url import ClientTls, Endpoint, parse_url

__all__ = ["ClientBase", "ClientCore", "Codec", "InferOptions"]

# Readiness polling: a remote model announces nothing, so wait_for_model asks, backing off up to this.
_FIRST_POLL_S, _MAX_POLL_S = 0.02, 0.5
_PROBE_MIN_S = 0.01


class Codec(Protocol):
    """One wire's requests and reply parsers (`HttpCodec`, `GrpcCodec`)."""

    def model_ready(self, model: ModelRef, options: CallOptions) -> Call[bool]: ...

    def model_metadata(self, model: ModelRef, options: CallOptions) -> Call[ModelMetadata]: ...

    def model_config(self, model: ModelRef, options: CallOptions) -> Call[RemoteModelConfig]: ...

    def infer(
        self,
        model: ModelRef,
        inputs: Mapping[str, np.ndarray],
        parameters: Mapping[str, Any],
        outputs: Sequence[str] | None,
        options: CallOptions,
        placement: Placement | None = None,
    ) -> Call[dict[str, np.ndarray]]: ...

    def register_region(self, name: str, key: str, byte_size: int, options: CallOptions) -> Call[None]: ...

    def unregister_region(self, name: str, options: CallOptions) -> Call[None]: ...

    def load_model(self, model: ModelRef, options: CallOptions) -> Call[None]: ...

    def unload_model(self, model: ModelRef, options: CallOptions) -> Call[None]: ...


@dataclass(frozen=True)
class InferOptions:
    """The options of one infer call; None: the client's default (no parameters, all outputs)."""

    parameters: Mapping[str, Any] | None = None
    headers: Mapping[str, str] | None = None
    priority: int | None = None
    timeout_s: float | None = None
    outputs: Sequence[str] | None = None


class ClientCore:
    """A client's model, defaults and caches, and the plan of each of its operations."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        version: int | str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        headers: Mapping[str, str] | None = None,
        shared_memory: bool = False,
        clock: Callable[[], float] = time.monotonic,
        tls: ClientTls | None = None,
    ) -> None:
        problems = _problems(model, version, timeout_s, headers)
        if problems:
            raise ConfigurationError.collect(f"client of model {model!r}", problems)
        self.endpoint: Endpoint = parse_url(url)
        if tls is not None:
            if self.endpoint.tls is None:
                raise ConfigurationError(f"TLS options for {url!r}: use https:// or grpcs://")
            self.endpoint = dataclasses.replace(self.endpoint, tls=tls)
        self.model = ModelRef(model, "" if version is None else str(version))
        self.timeout_s = float(timeout_s)
        self.headers: dict[str, str] = dict(headers or {})
        self.codec: Codec = GrpcCodec() if self.endpoint.scheme == "grpc" else HttpCodec()
        self._clock = clock
        self._metadata: ModelMetadata | None = None
        self._config: RemoteModelConfig | None = None
        self._batching: bool | None = None
        self._regions = RegionPool() if shared_memory else None

    def __repr__(self) -> str:
        return f"{self.model.label} at {self.endpoint}"

    def options(self, timeout_s: float | None = None, headers: Mapping[str, str] | None = None) -> CallOptions:
        """The options of one call: its own ``timeout_s`` and headers over the client's."""
        if timeout_s is not None and not _is_positive(timeout_s):
            raise ConfigurationError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        merged = {**self.headers, **headers} if headers else self.headers
        return CallOptions(self.timeout_s if timeout_s is None else float(timeout_s), merged)

    # -- plans -----------------------------------------------------------------------------------------------

    def infer(
        self, args: tuple[Any, ...], named: Mapping[str, Any], options: InferOptions, *, sample: bool
    ) -> Plan[dict[str, np.ndarray]]:
        """Run the model on a batch (``sample`` False) or on one sample: the batch axis added to the inputs and
        taken off the outputs when the model batches."""
        inputs, parameters, batched = yield from self._prepare(args, named, options, sample)
        call_options = self._call_options(options)
        if self._regions is None:
            outputs = yield self.codec.infer(self.model, inputs, parameters, options.outputs, call_options)
        else:
            outputs = yield from self._infer_shared(inputs, parameters, options.outputs, call_options)
        return strip_batch_axis(outputs, self.model.label) if batched else outputs

    def release_regions(self) -> Plan[None]:
        """Unregister the client's shared-memory regions from the server and unmap them (``close``)."""
        if self._regions is None:
            return
        for region in self._regions.registered():
            with contextlib.suppress(ServeError):  # the server is gone, and its mapping with it
                yield self.codec.unregister_region(region.name, self.options())
        self._regions.close()

    def stream(
        self, args: tuple[Any, ...], named: Mapping[str, Any], options: InferOptions, *, sample: bool
    ) -> Plan[Call[StreamResponse]]:
        """The ModelStreamInfer request of a call to a decoupled model, and the parser of its responses."""
        if not isinstance(self.codec, GrpcCodec):
            raise UnsupportedError(
                f"streaming needs gRPC (ModelStreamInfer): use a grpc://host:port URL, not {self.endpoint}"
            )
        inputs, parameters, batched = yield from self._prepare(args, named, options, sample)
        call = self.codec.stream_infer(self.model, inputs, parameters, options.outputs, self._call_options(options))
        if not batched:
            return call
        label = self.model.label

        def parse(reply: Any) -> StreamResponse:
            response = call.parse(reply)
            return StreamResponse(strip_batch_axis(response.outputs, label), response.final)

        return Call(call.request, parse)

    def metadata(self) -> Plan[ModelMetadata]:
        """The model's metadata, read at the first call only."""
        if self._metadata is None:
            self._metadata = yield self.codec.model_metadata(self.model, self.options())
        return self._metadata

    def model_config(self) -> Plan[RemoteModelConfig]:
        """The model's config, read at the first call only."""
        if self._config is None:
            self._config = yield self.codec.model_config(self.model, self.options())
        return self._config

    def is_model_ready(self, timeout_s: float | None = None) -> Plan[bool]:
        ready: bool = yield self.codec.model_ready(self.model, self.options(timeout_s))
        return ready

    def wait_for_model(self, timeout_s: float) -> Plan[None]:
        """Ask whether the model is ready until it is, or until ``timeout_s`` passed (`ModelNotReadyError`, or
        `ServerUnreachableError` when the server never answered)."""
        if not _is_positive(timeout_s):
            raise ConfigurationError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        deadline = self._clock() + timeout_s
        delay = _FIRST_POLL_S
        while True:
            probe_s = max(min(deadline - self._clock(), self.timeout_s), _PROBE_MIN_S)
            try:
                if (yield self.codec.model_ready(self.model, self.options(probe_s))):
                    return
                unreachable: ServerUnreachableError | None = None
            except ServerUnreachableError as exc:  # not up yet
                unreachable = exc
            except InferenceTimeoutError:  # up but slow to answer
                unreachable = None
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise self._not_ready(timeout_s, unreachable)
            yield Pause(min(delay, remaining))
            delay = min(delay * 2, _MAX_POLL_S)

    def load_model(self) -> Plan[None]:
        self._metadata = self._config = self._batching = None  # a (re)loaded model may have changed
        yield self.codec.load_model(self.model, self.options())

    def unload_model(self) -> Plan[None]:
        self._metadata = self._config = self._batching = None
        yield self.codec.unload_model(self.model, self.options())

    # -- steps -----------------------------------------------------------------------------------------------

    def _prepare(
        self, args: tuple[Any, ...], named: Mapping[str, Any], options: InferOptions, sample: bool
    ) -> Plan[tuple[dict[str, np.ndarray], dict[str, Any], bool]]:
        metadata = yield from self.metadata()
        inputs = conform(gather(args, named, metadata), metadata)
        batched = sample and (yield from self._is_batching(metadata))
        if batched:
            inputs = add_batch_axis(inputs)
        return inputs, _parameters(options), batched

    def _infer_shared(
        self,
        inputs: dict[str, np.ndarray],
        parameters: dict[str, Any],
        outputs: Sequence[str] | None,
        options: CallOptions,
    ) -> Plan[dict[str, np.ndarray]]:
        """An infer call through a shared-memory region: the inputs written there, and the outputs whose size
        the model's metadata fixes read from there (the others come back in the response)."""
        assert self._regions is not None
        metadata = yield from self.metadata()
        batching = yield from self._is_batching(metadata)
        rows = next(iter(inputs.values())).shape[0] if batching and inputs else None
        wanted = list(outputs) if outputs is not None else [tensor.name for tensor in metadata.outputs]
        sizes = output_sizes(metadata, wanted, rows)
        buffers = serialized(inputs)
        region, new = self._regions.take(Placement.size_of(buffers, sizes))
        try:
            if new:
                try:
                    yield self.codec.register_region(region.name, region.key, region.size, options)
                except InferenceError as exc:
                    raise type(exc)(
                        f"shared_memory=True: {self.endpoint} did not register a /dev/shm region of this host "
                        f"(the server must run on this host, with system shared memory on): {exc}"
                    ) from None
                region.registered = True
                region.unlink()  # both sides keep their mappings: nothing is left in /dev/shm if we die
            placement = Placement.of(region, buffers, sizes)
            result: dict[str, np.ndarray] = yield self.codec.infer(
                self.model, inputs, parameters, wanted, options, placement
            )
        finally:
            self._regions.give(region)
        return result

    def _is_batching(self, metadata: ModelMetadata) -> Plan[bool]:
        if self._batching is None:
            try:
                self._batching = (yield from self.model_config()).batching
            except (UnsupportedError, ModelNotFoundError):
                # A KServe v2 server without Triton's model config: the model batches when every input's
                # metadata shape starts with a variable dim.
                self._batching = bool(metadata.inputs) and all(t.shape[:1] == (-1,) for t in metadata.inputs)
        return self._batching

    def _call_options(self, options: InferOptions) -> CallOptions:
        return self.options(options.timeout_s, options.headers)

    def _not_ready(self, timeout_s: float, unreachable: ServerUnreachableError | None) -> Exception:
        if unreachable is not None:
            return ServerUnreachableError(f"{unreachable} (waited timeout_s={timeout_s:g} for {self.model.label})")
        return ModelNotReadyError(f"{self.model.label} at {self.endpoint} was not ready within timeout_s={timeout_s:g}")


def _parameters(options: InferOptions) -> dict[str, Any]:
    """The request's parameters as the wire carries them (bool, int, float, str), ``priority`` among them."""
    parameters = {}
    for key, value in (options.parameters or {}).items():
        plain = value.item() if isinstance(value, np.generic) else value  # np.int64(3) -> 3
        if not isinstance(key, str) or not isinstance(plain, (bool, int, float, str)):
            raise InvalidInputError(f"parameter {key!r} must be a bool, int, float or str, got {value!r}")
        parameters[key] = plain
    priority = options.priority
    if priority is not None:
        if not isinstance(priority, (int, np.integer)) or isinstance(priority, bool) or priority < 0:
            raise InvalidInputError(f"priority must be an int >= 0 (1 is the highest level), got {priority!r}")
        parameters["priority"] = int(priority)
    return parameters


def _is_positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and math.isfinite(value)


TOKEN_HEADER = "triton-access-token"  # the header of `Serve(access_token=...)`, as PyTriton's


def with_token(headers: Mapping[str, str] | None, access_token: str | None) -> Mapping[str, str] | None:
    """``headers`` plus the access-token header when a token is given (a client's ``access_token=``)."""
    if access_token is None:
        return headers
    return {**(headers or {}), TOKEN_HEADER: access_token}


def _problems(model: Any, version: Any, timeout_s: Any, headers: Any) -> list[str]:
    problems = []
    if not isinstance(model, str) or not model or "/" in model:
        problems.append(f"model must be a non-empty model name without '/', got {model!r}")
    if version is not None and not (
        (type(version) is int and version >= 1) or (isinstance(version, str) and version.isdigit())
    ):
        problems.append(f"version must be None (the server's choice) or an int >= 1, got {version!r}")
    if not _is_positive(timeout_s):
        problems.append(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    if headers is not None and not (
        isinstance(headers, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
    ):
        problems.append(f"headers must map str to str, got {headers!r}")
    return problems


class ClientBase:
    """What every client front-end (blocking, asyncio) holds: the `ClientCore` of one model, and its names."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        version: int | str | None,
        timeout_s: float,
        headers: Mapping[str, str] | None,
        shared_memory: bool,
        tls: ClientTls | None = None,
    ) -> None:
        self._core = ClientCore(
            url, model, version=version, timeout_s=timeout_s, headers=headers, shared_memory=shared_memory, tls=tls
        )

    @property
    def url(self) -> str:
        """The server's URL, normalized: ``http://host:port`` or ``grpc://host:port``."""
        return str(self._core.endpoint)

    @property
    def model_name(self) -> str:
        return self._core.model.name

    @property
    def model_version(self) -> str:
        """The version asked for; "" lets the server choose."""
        return self._core.model.version
