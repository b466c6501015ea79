"""The KServe v2 gRPC front (grpc.aio): ``inference.GRPCInferenceService`` and ``grpc.health.v1.Health``.

It runs on the front process's event loop beside uvicorn: grpc.aio serves its calls on whichever asyncio loop
starts the server (uvloop's included), so an infer call takes the HTTP request's path (`inference.infer`: the
same registry, scheduler, dispatcher and metrics) without a thread hop. Every error answers with the gRPC
status code of its `errors` class and its message as the details.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import re
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar, cast

import grpc

from ..errors import (
    InferenceError,
    InvalidInputError,
    ModelNotFoundError,
    PortInUseError,
    ServeError,
    StartupError,
    UnsupportedError,
    client_message,
)
from ..metrics import Metrics
from ..protocol import grpc_codec, shared_memory
from ..protocol.grpc_layouts import RequestParser
from ..protocol.messages import InferRequest
from ..protocol.proto import grpc_service_pb2 as pb
from ..protocol.proto import grpc_service_pb2_grpc as pb_grpc
from ..protocol.proto import health_pb2_grpc
from ..security import Guard, Restriction, Tls, forwarded_headers
from ..spec import ModelSpec
from . import inference, statistics
from .access import grpc_group, grpc_refusal
from .call_log import CallLog
from .health import HealthServicer
from .models import NO_REPOSITORY, Models
from .readiness import Readiness
from .regions import NO_CUDA, Regions, enabled
from .runtime_settings import RuntimeSettings

__all__ = ["EXTENSIONS", "GrpcOptions", "InferenceServicer", "start_server", "status_code"]

log = logging.getLogger("pybind_serve.front")

# Binary tensor data is the REST extension for what gRPC's raw contents always do, so it is not listed here.
EXTENSIONS = ["logging", "model_configuration", "parameters", "schedule_policy", "statistics", "trace"]
SHARED_MEMORY_EXTENSION = "system_shared_memory"

_INFER_METHODS = ("ModelInfer", "ModelStreamInfer")
_HANDLER_KINDS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}

Method = TypeVar("Method", bound=Callable[..., Awaitable[Any]])
Decoded = grpc_codec.Received | InvalidInputError  # what the infer calls' deserializer hands over
Answer = bytes | pb.ModelStreamInferResponse  # what ModelStreamInfer sends


# grpc core rejects calls that arrive faster than the application takes them: between 1,000 and 3,000 waiting
# (its defaults) at random, above 3,000 all of them, and the client sees CANCELLED. grpc.aio takes one call at a
# time, so a burst of a few thousand concurrent calls lost 3-8 % of them that way. A waiting call holds little
# (its headers; its message stays within HTTP/2 flow control), so let many more wait: our own queues, with their
# limits and timeouts, decide what is refused, and say why.
MAX_WAITING_CALLS = 1 << 16


@dataclass(frozen=True)
class GrpcOptions:
    host: str
    port: int  # 0: any free port
    max_message_bytes: int  # for requests and responses alike
    server_version: str
    max_metadata_bytes: int = 64 << 10
    reuse_port: bool = False  # several front processes share the port
    restrictions: tuple[Restriction, ...] = ()  # endpoint groups that need a metadata key and value
    forward: str | None = None  # metadata keys matching this pattern become request parameters
    tls: Tls | None = None  # serve over TLS (grpcs)
    access_log: bool = False  # a log line per call (`call_log`)


def status_code(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status of an error: its `errors` class's ``grpc_code``, INTERNAL for anything else."""
    return grpc.StatusCode[exc.grpc_code if isinstance(exc, ServeError) else "INTERNAL"]


async def start_server(
    models: Models,
    metrics: Metrics,
    readiness: Readiness,
    options: GrpcOptions,
    regions: Regions | None = None,
    settings: RuntimeSettings | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Start serving on ``options.host:port``; the server and the port it listens on. ``regions``: the
    registered system shared-memory regions (None: the extension is off); ``settings``: the trace and log
    settings (None: those extensions are off, and nothing is traced).

    Raises `PortInUseError` when the port is taken, `StartupError` when it cannot be bound for another reason.
    """
    limit = options.max_message_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            # grpc's default would let a second server share the port unnoticed: only our own fronts share it
            ("grpc.so_reuseport", int(options.reuse_port)),
            ("grpc.server.max_pending_requests", MAX_WAITING_CALLS),
            ("grpc.server.max_pending_requests_hard_limit", MAX_WAITING_CALLS),
            ("grpc.max_metadata_size", options.max_metadata_bytes),
        ],
        interceptors=[CallLog()] if options.access_log else None,
    )
    guard = Guard(options.restrictions)
    forward = re.compile(options.forward, re.IGNORECASE) if options.forward else None
    servicer = InferenceServicer(models, metrics, readiness, options.server_version, regions, forward, settings)
    _add_inference_servicer(servicer, server, guard)
    health = HealthServicer(readiness)
    # The "health" group covers grpc.health.v1 too: its methods are guarded as the inference service's are.
    health.Check = _guarded(health.Check, grpc_group("Check"), guard, streaming=False)  # type: ignore[method-assign]
    health.Watch = _guarded(health.Watch, grpc_group("Watch"), guard, streaming=True)  # type: ignore[method-assign]
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    try:
        port = _bind(server, options.host, options.port, options.tls)
    except StartupError:
        await server.stop(None)
        raise
    await server.start()
    return server, port


def _add_inference_servicer(servicer: InferenceServicer, server: grpc.aio.Server, guard: Guard) -> None:
    """What the generated ``add_GRPCInferenceServiceServicer_to_server`` does, except that infer requests are
    decoded by `grpc_codec.decode_infer_request` (tensor bytes left in the received buffer) and that answers
    may come serialized already (`grpc_codec.encode_infer_response` copies each output once, into them)."""
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    handlers = {}
    for method in service.methods:
        kind = _HANDLER_KINDS[(method.client_streaming, method.server_streaming)]
        decode = servicer.decode_infer_request if method.name in _INFER_METHODS else _message_class(method).FromString
        behaviour = _guarded(getattr(servicer, method.name), grpc_group(method.name), guard, method.server_streaming)
        handlers[method.name] = kind(behaviour, decode, _serialize)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)


def _message_class(method: Any) -> Any:
    return getattr(pb, method.input_type.name)


def _serialize(answer: Any) -> bytes:
    return answer if isinstance(answer, bytes) else answer.SerializeToString()


def _bind(server: grpc.aio.Server, host: str, port: int, tls: Tls | None = None) -> int:
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if tls is not None:
            return int(server.add_secure_port(address, _credentials(tls)))
        return int(server.add_insecure_port(address))
    except RuntimeError as exc:
        if port and _in_use(host, port):
            raise PortInUseError.of("grpc", host, port) from None
        raise StartupError(f"cannot listen on {address} for grpc: {exc}") from None


def _credentials(tls: Tls) -> grpc.ServerCredentials:
    with open(tls.certfile, "rb") as cert, open(tls.keyfile, "rb") as key:
        pair = (key.read(), cert.read())
    client_ca = None
    if tls.client_ca is not None:
        with open(tls.client_ca, "rb") as ca:
            client_ca = ca.read()
    return grpc.ssl_server_credentials([pair], root_certificates=client_ca, require_client_auth=client_ca is not None)


def _in_use(host: str, port: int) -> bool:
    """Whether ``port`` is taken: grpc only says that binding failed, so ask the kernel with a plain bind."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def metadata_reader(context: Any) -> Callable[[str], str | None]:
    """Read a call's metadata by (lower-case) key."""
    metadata = {key: value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)}
    return metadata.get


def _guarded(behaviour: Any, group: str | None, guard: Guard, streaming: bool) -> Any:
    """``behaviour``, refusing callers without the metadata its restricted group needs (UNAVAILABLE, as Triton)."""
    if not guard.restricts(group):
        return behaviour
    assert group is not None

    async def refuse(context: Any) -> None:
        key = guard.refusal(group, metadata_reader(context))
        if key is not None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(grpc_refusal(key)))

    if streaming:

        async def guarded_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            await refuse(context)
            async for answer in behaviour(request, context):
                yield answer

        return guarded_stream

    async def guarded(request: Any, context: Any) -> Any:
        await refuse(context)
        return await behaviour(request, context)

    return guarded


def _answering_errors(method: Method) -> Method:
    """End the call with the status of the error the method raised (INTERNAL, logged, for a bug of ours)."""

    @functools.wraps(method)
    async def answer(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except InferenceError as exc:
            await context.abort(status_code(exc), client_message(exc))
        except Exception as exc:
            log.exception("the gRPC call %s failed", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, client_message(f"internal server error: {exc!r}"))

    return cast(Method, answer)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """``inference.GRPCInferenceService`` over the front's models (method names are the protocol's)."""

    def __init__(
        self,
        models: Models,
        metrics: Metrics,
        readiness: Readiness,
        server_version: str,
        regions: Regions | None = None,
        forward: re.Pattern[str] | None = None,
        settings: RuntimeSettings | None = None,
    ) -> None:
        self._models, self._metrics = models, metrics
        self._forward = forward
        self._readiness = readiness
        self._server_version = server_version
        self._regions = regions
        self._extensions = sorted([*EXTENSIONS, SHARED_MEMORY_EXTENSION]) if regions is not None else EXTENSIONS
        if settings is None:
            self._extensions = [name for name in self._extensions if name not in ("logging", "trace")]
        self._settings = settings
        self._tracer = settings.tracer if settings is not None else None
        self._parser = RequestParser()

    def decode_infer_request(self, data: bytes) -> Decoded:
        """The deserializer of the infer calls (`RequestParser.decode`)."""
        # A deserializer's exception would end the call with UNKNOWN (and a whole stream with it): hand the error
        # to the handler instead, which answers INVALID_ARGUMENT (on a stream: for this request only).
        try:
            return self._parser.decode(data)
        except InvalidInputError as exc:
            return exc

    async def _parse(
        self, received: grpc_codec.Received, spec: ModelSpec, forwarded: dict[str, str] | None = None
    ) -> InferRequest:
        """`inference.Parse` for a received ModelInferRequest; ``forwarded``: metadata to add as parameters."""
        request = self._parser.parse(received, spec, self._regions)
        if forwarded:
            request.parameters.update(forwarded)
        return request

    def _forwarded(self, context: Any) -> dict[str, str] | None:
        """The call's metadata that the forward pattern selects (`InvalidInputError` for a reserved name)."""
        if self._forward is None:
            return None
        metadata = [(k, v) for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)]
        try:
            return forwarded_headers(self._forward, metadata)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None

    @_answering_errors
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @_answering_errors
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._readiness())

    @_answering_errors
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        try:
            entry = self._models.find(request.name, request.version)
        except ModelNotFoundError:  # as Triton: not ready (REST answers 404, which clients read as not ready)
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=self._readiness.model_ready(entry))

    @_answering_errors
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return grpc_codec.server_metadata_response(self._server_version, self._extensions)

    @_answering_errors
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        return grpc_codec.model_metadata_response(self._models.find(request.name, request.version).spec)

    @_answering_errors
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        return grpc_codec.model_config_response(self._models.find(request.name, request.version).spec)

    @_answering_errors
    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Any) -> pb.ModelStatisticsResponse:
        entries = await statistics.model_statistics(self._models, self._metrics, request.name, request.version)
        return grpc_codec.model_statistics_response(entries)

    @_answering_errors
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any) -> pb.RepositoryIndexResponse:
        return grpc_codec.repository_index_response(self._models.index(request.ready))

    @_answering_errors
    async def ModelInfer(self, request: Decoded, context: Any) -> bytes:
        if isinstance(request, InvalidInputError):
            raise request
        return await self._infer(request, self._forwarded(context), self._traced(context))

    async def _infer(
        self,
        received: grpc_codec.Received,
        forwarded: dict[str, str] | None = None,
        traced: inference.Traced | None = None,
    ) -> bytes:
        """The serialized response, or the error to answer with; cancelling the task takes the request out of
        its queue."""
        message = received.message
        model = (message.model_name, message.model_version)
        if self._models.find(*model).spec.config.decoupled:
            responses = self._responses(received, None, forwarded, traced)
            return await inference.single(responses, f"model {message.model_name!r}")
        parse = partial(self._parse, received, forwarded=forwarded)
        encode = grpc_codec.encode_infer_response
        return await inference.infer(self._models, self._metrics, model, parse, encode, time.monotonic(), traced=traced)

    def _responses(
        self,
        received: grpc_codec.Received,
        final: bool | None,
        forwarded: dict[str, str] | None = None,
        traced: inference.Traced | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """Each serialized response to a request as it is ready (`inference.stream`)."""
        message = received.message
        model = (message.model_name, message.model_version)
        encode = partial(grpc_codec.encode_infer_response, final=final)
        parse = partial(self._parse, received, forwarded=forwarded)
        return inference.stream(self._models, self._metrics, model, parse, encode, time.monotonic(), traced)

    def _traced(self, context: Any) -> inference.Traced | None:
        """While tracing is on: `Tracer.start` with the call's ``traceparent`` and ``tracestate`` metadata."""
        tracer = self._tracer
        if tracer is None or not tracer.on:
            return None
        metadata = metadata_reader(context)
        return partial(tracer.start, "grpc", metadata("traceparent"), metadata("tracestate"))

    async def ModelStreamInfer(
        self, requests: AsyncIterator[Decoded], context: Any
    ) -> AsyncIterator[bytes | pb.ModelStreamInferResponse]:
        """The answers to each request as soon as they are ready (so possibly out of order), carrying its id:
        one per request of an ordinary model, any number for a decoupled one.

        When the server starts stopping, reading stops, the requests in flight are answered, and the call ends
        with UNAVAILABLE; when the client cancels, the requests in flight are cancelled.
        """
        try:
            forwarded = self._forwarded(context)
        except InvalidInputError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, client_message(exc))
        stream = _Stream(partial(self._stream_answers, forwarded=forwarded, context=context))
        reader = asyncio.ensure_future(stream.read(requests))
        stopping = asyncio.ensure_future(self._readiness.stopping.wait())
        stopping.add_done_callback(lambda _: stream.stop_reading(reader))
        try:
            while (answer := await stream.answers.get()) is not None:
                yield answer
        finally:
            stopping.cancel()
            stream.cancel(reader)
        if stream.cut_short:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is stopping; requests not answered above")

    async def _stream_answers(
        self, received: Decoded, forwarded: dict[str, str] | None = None, context: Any = None
    ) -> AsyncGenerator[Answer, None]:
        """The answers to one request of a ModelStreamInfer call: its responses, each marked final or not
        (``triton_final_response``), or an error. A decoupled model's responses are all marked not final, as
        its stream ends only after the last: an empty final response follows if the request asked for it."""
        if isinstance(received, InvalidInputError):
            yield pb.ModelStreamInferResponse(error_message=client_message(received))
            return
        message = received.message
        try:
            decoupled = self._models.find(message.model_name, message.model_version).spec.config.decoupled
            traced = self._traced(context) if context is not None else None
            async with aclosing(self._responses(received, not decoupled, forwarded, traced)) as responses:
                async for response in responses:
                    yield grpc_codec.encode_stream_response(response)
        except InferenceError as exc:
            error = client_message(exc)
        except Exception as exc:
            log.exception("a ModelStreamInfer request failed")
            error = client_message(f"internal server error: {exc!r}")
        else:
            if decoupled and grpc_codec.parameters_of(message.parameters).get(grpc_codec.EMPTY_FINAL_RESPONSE):
                yield grpc_codec.final_stream_response(message)
            return
        echo = pb.ModelInferResponse(model_name=message.model_name, model_version=message.model_version, id=message.id)
        yield pb.ModelStreamInferResponse(error_message=error, infer_response=echo)

    @_answering_errors
    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest, context: Any) -> Any:
        raise UnsupportedError(f"cannot load model {request.model_name!r}: {NO_REPOSITORY}")

    @_answering_errors
    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest, context: Any) -> Any:
        raise UnsupportedError(f"cannot unload model {request.model_name!r}: {NO_REPOSITORY}")

    # The system shared-memory extension (UNIMPLEMENTED while it is off); CUDA shared memory is not supported.

    @_answering_errors
    async def SystemSharedMemoryStatus(
        self, request: pb.SystemSharedMemoryStatusRequest, context: Any
    ) -> pb.SystemSharedMemoryStatusResponse:
        regions = enabled(self._regions).status(request.name)
        status = pb.SystemSharedMemoryStatusResponse.RegionStatus
        return pb.SystemSharedMemoryStatusResponse(
            regions={r.name: status(name=r.name, key=r.key, offset=r.offset, byte_size=r.byte_size) for r in regions}
        )

    @_answering_errors
    async def SystemSharedMemoryRegister(
        self, request: pb.SystemSharedMemoryRegisterRequest, context: Any
    ) -> pb.SystemSharedMemoryRegisterResponse:
        body = {"key": request.key, "offset": request.offset, "byte_size": request.byte_size}
        await enabled(self._regions).register_everywhere(shared_memory.parse_register(request.name, body))
        return pb.SystemSharedMemoryRegisterResponse()

    @_answering_errors
    async def SystemSharedMemoryUnregister(
        self, request: pb.SystemSharedMemoryUnregisterRequest, context: Any
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        await enabled(self._regions).unregister_everywhere(request.name)
        return pb.SystemSharedMemoryUnregisterResponse()

    @_answering_errors
    async def CudaSharedMemoryStatus(
        self, request: pb.CudaSharedMemoryStatusRequest, context: Any
    ) -> pb.CudaSharedMemoryStatusResponse:
        if request.name:  # none can be registered
            raise InvalidInputError(f"Unable to find cuda shared memory region: '{request.name}'")
        return pb.CudaSharedMemoryStatusResponse()

    @_answering_errors
    async def CudaSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        raise UnsupportedError(NO_CUDA)

    @_answering_errors
    async def CudaSharedMemoryUnregister(
        self, request: pb.CudaSharedMemoryUnregisterRequest, context: Any
    ) -> pb.CudaSharedMemoryUnregisterResponse:
        return pb.CudaSharedMemoryUnregisterResponse()  # none is registered (perf_analyzer unregisters all first)

    # Triton's trace and logging extensions (UNIMPLEMENTED where the front has no settings).

    @_answering_errors
    async def TraceSetting(self, request: pb.TraceSettingRequest, context: Any) -> pb.TraceSettingResponse:
        changes = {name: _trace_value(name, list(setting.value)) for name, setting in request.settings.items()}
        document = await self._runtime_settings().trace(request.model_name, changes)
        value = pb.TraceSettingResponse.SettingValue
        return pb.TraceSettingResponse(
            settings={k: value(value=v if isinstance(v, list) else [str(v)]) for k, v in document.items()}
        )

    @_answering_errors
    async def LogSettings(self, request: pb.LogSettingsRequest, context: Any) -> pb.LogSettingsResponse:
        changes = {name: _log_value(setting) for name, setting in request.settings.items()}
        document = await self._runtime_settings().logging(changes)
        return pb.LogSettingsResponse(settings={k: _log_setting(v) for k, v in document.items()})

    def _runtime_settings(self) -> RuntimeSettings:
        if self._settings is None:
            raise UnsupportedError("the trace and logging extensions are not served here")
        return self._settings


def _trace_value(name: str, values: list[str]) -> list[str] | str | None:
    """A TraceSettingRequest value as the REST extension has it: ``trace_level`` a list, the others one string,
    none a null (clear)."""
    if not values:
        return None
    if name == "trace_level":
        return values
    if len(values) != 1:
        raise InvalidInputError(f"trace setting {name!r} takes one value, got {values}")
    return values[0]


def _log_value(setting: Any) -> bool | int | str | None:
    """A LogSettingsRequest value: whichever of bool_param, uint32_param, string_param was sent (none: null)."""
    which = setting.WhichOneof("parameter_choice")
    return None if which is None else getattr(setting, which)


def _log_setting(value: Any) -> pb.LogSettingsResponse.SettingValue:
    kind = pb.LogSettingsResponse.SettingValue
    if isinstance(value, bool):
        return kind(bool_param=value)
    if isinstance(value, int):
        return kind(uint32_param=value)
    return kind(string_param=str(value))


class _Stream:
    """The requests of one ModelStreamInfer call in flight, and their answers in the order they are ready."""

    def __init__(self, answer: Callable[[Decoded], AsyncGenerator[Answer, None]]) -> None:
        self.answers: asyncio.Queue[Answer | None] = asyncio.Queue()  # None: the end
        self.cut_short = False  # reading stopped before the client closed its side
        self._answer = answer
        self._tasks: set[asyncio.Task[None]] = set()

    async def read(self, requests: AsyncIterator[Decoded]) -> None:
        """Start answering each request as it arrives; once the client closes its side (or `stop_reading`),
        wait for the answers in flight and queue the end."""
        try:
            async for message in requests:
                task = asyncio.ensure_future(self._run(message))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except asyncio.CancelledError:
            if not self.cut_short:
                raise  # cancelled by `cancel`: the call is over
        except Exception:  # the client's side broke (e.g. a request that does not decode): end as if closed
            log.debug("reading a ModelStreamInfer request failed", exc_info=True)
        while self._tasks:
            await asyncio.wait(set(self._tasks))
        self.answers.put_nowait(None)

    async def _run(self, message: Decoded) -> None:
        async with aclosing(self._answer(message)) as answers:
            async for answer in answers:
                self.answers.put_nowait(answer)

    def stop_reading(self, reader: asyncio.Future[None]) -> None:
        """The server is stopping: take no more requests (a pending read is dropped with the call)."""
        if not reader.done():
            self.cut_short = True
            reader.cancel()

    def cancel(self, reader: asyncio.Future[None]) -> None:
        """The call is over (the client cancelled, or every answer was sent): cancel what is still running."""
        reader.cancel()
        for task in list(self._tasks):
            task.cancel()
