"""OpenTelemetry's side of tracing, imported only once tracing is on: the front's ``TracerProvider`` and exporter
(as `Tracing` chose them), and `RequestTrace`, one traced request's timings, made into spans when it ends.

A traced request's span, ``infer <model>`` (kind SERVER, a child of the caller's span when the request carried a
W3C ``traceparent``), gets its identity when the request is found to be for a ready model (the worker is given
it), and is made with its children when the request ends, from the times noted on the way (all on the
monotonic clock, which the workers share, turned into wall-clock times with one offset per request):

- ``queue``: from entering the model's scheduler until its batch is sent (or until the request ends there);
- ``compute-input``: from the front writing the batch's inputs into shared memory until the worker has them as
  arrays (so it includes the hop to the worker; an event marks the worker receiving the batch);
- ``compute-infer``: the bound function's call;
- ``compute-output``: from the function's return until this request's response is encoded (the worker writing
  the outputs, the hop back, and the encoding).

The worker reports its times in its answer (``times``, `transport.frames`): exporting from the front works for
every kind of worker (threads, forked or spawned processes, a `RemoteServe`'s) and needs OpenTelemetry in the
front process only. A request served from the response cache has no children; a decoupled model's responses are
events ``response`` on the request's span, and its ``compute-infer`` lasts until its generator ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import trace as api
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter, SpanExportResult
from opentelemetry.sdk.util import ns_to_iso_str
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ..dtypes import to_datatype
from ..errors import InferenceError, StartupError, client_message
from ..protocol.messages import InferRequest
from ..spec import ModelSpec
from ..tracing import Tracing
from ..version import __version__
from .inference import ClientGone

__all__ = ["Exporting", "JsonLinesExporter", "RequestTrace"]

log = logging.getLogger("pybind_serve.front")

_PROPAGATOR = TraceContextTextMapPropagator()
_DEFAULT_SERVICE = "pybind_serve"
_OTLP_HTTP_PATH = "/v1/traces"
_COMPUTE = ("compute-input", "compute-infer", "compute-output")
_RECEIVED = "worker received the batch"
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_OK = Status()  # unset: the request was answered


class JsonLinesExporter(SpanExporter):
    """Appends each span to a file as one line of JSON: OpenTelemetry's own JSON form of a span (``to_json``), with
    the trace state in its header form, in a third of the time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held until shutdown
        self._lock = threading.Lock()
        self._resources: dict[int, str] = {}  # each resource's JSON, made once

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(self._line(span) for span in spans)
        with self._lock:
            if self._file.closed:
                return SpanExportResult.FAILURE
            self._file.write(lines)
            self._file.flush()
        return SpanExportResult.SUCCESS

    def _line(self, span: ReadableSpan) -> str:
        context, parent, status = span.context, span.parent, span.status
        assert context is not None
        document = {
            "name": span.name,
            "context": {
                "trace_id": f"0x{context.trace_id:032x}",
                "span_id": f"0x{context.span_id:016x}",
                "trace_state": context.trace_state.to_header(),
            },
            "kind": str(span.kind),
            "parent_id": f"0x{parent.span_id:016x}" if parent is not None else None,
            "start_time": _iso(span.start_time),
            "end_time": _iso(span.end_time),
            "status": {"status_code": status.status_code.name, "description": status.description},
            "attributes": dict(span.attributes or {}),
            "events": [
                {"name": e.name, "timestamp": _iso(e.timestamp), "attributes": dict(e.attributes or {})}
                for e in span.events
            ],
        }
        resource = self._resources.get(id(span.resource))
        if resource is None:
            described = {"attributes": dict(span.resource.attributes), "schema_url": span.resource.schema_url}
            resource = self._resources[id(span.resource)] = json.dumps(described, separators=(",", ":"))
        return f'{json.dumps(document, separators=(",", ":"))[:-1]},"resource":{resource}}}\n'

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()


def exporter_for(config: Tracing) -> SpanExporter:
    """The exporter `Tracing` names (`StartupError` saying what is missing or wrong)."""
    kind = config.resolved_exporter
    if kind == "file":
        assert config.file is not None
        return JsonLinesExporter(config.file)
    if kind == "console":
        return ConsoleSpanExporter()
    if kind == "otlp":
        return _otlp(config)
    module_name, _, attribute = kind.partition(":")
    try:
        factory: Any = __import__(module_name, fromlist=["_"])
        for part in attribute.split("."):
            factory = getattr(factory, part)
        exporter = factory()
    except Exception as exc:
        raise StartupError(f"tracing exporter {kind!r} could not be made: {type(exc).__name__}: {exc}") from exc
    if not isinstance(exporter, SpanExporter):
        raise StartupError(f"tracing exporter {kind!r} returned {type(exporter).__name__}, not a SpanExporter")
    return exporter


def _otlp(config: Tracing) -> SpanExporter:
    endpoint = config.endpoint
    if config.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter(endpoint=endpoint)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    if endpoint is not None and endpoint.split("://", 1)[-1].rstrip("/").count("/") == 0:
        endpoint = endpoint.rstrip("/") + _OTLP_HTTP_PATH  # a base URL, as OTEL_EXPORTER_OTLP_ENDPOINT is
    return HttpExporter(endpoint=endpoint)


def provider_for(config: Tracing) -> tuple[TracerProvider, BatchSpanProcessor]:
    """A provider of the front's own (never the process's global one), and the processor that exports its spans
    in batches from a thread of its own. Its sampler is OpenTelemetry's (``OTEL_TRACES_SAMPLER``; by default it
    follows the caller's sampled flag)."""
    attributes: dict[str, Any] = {SERVICE_VERSION: __version__}
    if config.service_name:
        attributes[SERVICE_NAME] = config.service_name
    resource = Resource.create(attributes)  # also OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: _DEFAULT_SERVICE}))
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    processor = BatchSpanProcessor(exporter_for(config))
    provider.add_span_processor(processor)
    return provider, processor


class Exporting:
    """Where `RequestTrace` objects come from, and where their spans go.

    A request's spans are made when it ends, each a finished ``ReadableSpan`` handed straight to the exporting
    processor: the SDK's tracer would build each as a live span first, at about five times the CPU, on the event
    loop of every traced request. The provider still decides the resource and the sampling, and flushes at the end.
    """

    def __init__(self, config: Tracing) -> None:
        self.config = config
        self.provider, self.processor = provider_for(config)
        self.scope = InstrumentationScope("pybind_serve", __version__)

    def begin(
        self,
        protocol: str,
        traceparent: str | bytes | None,
        tracestate: str | bytes | None,
        spec: ModelSpec,
        arrived: float,
        tensors: bool,
        ended: Callable[[], None],
    ) -> RequestTrace | None:
        """The trace of a request for ``spec`` that ``arrived`` (`time.monotonic`), under the caller's span if
        ``traceparent`` names one; None when OpenTelemetry's sampler drops it (by default: the caller did not
        sample it). ``ended`` is called once when the trace ends."""
        parent_context, parent = None, None
        if traceparent:
            carrier = {"traceparent": _text(traceparent)}
            if tracestate:
                carrier["tracestate"] = _text(tracestate)
            parent_context = _PROPAGATOR.extract(carrier)
            parent = api.get_current_span(parent_context).get_span_context()
            if not parent.is_valid:
                parent_context, parent = None, None
        trace_id = parent.trace_id if parent is not None else _new_id(128)
        name = f"infer {spec.name}"
        attributes: dict[str, Any] = {
            "triton.model_name": spec.name,
            "triton.model_version": spec.version,
            "pybind_serve.protocol": protocol,
        }
        sampled = self.provider.sampler.should_sample(parent_context, trace_id, name, SpanKind.SERVER, attributes)
        if not sampled.decision.is_sampled():
            return None
        if sampled.attributes:
            attributes.update(sampled.attributes)
        state = sampled.trace_state if sampled.trace_state is not None else TraceState()
        context = SpanContext(trace_id, _new_id(64), False, _SAMPLED, state)
        offset = time.time_ns() - time.monotonic_ns()
        start = int(arrived * 1e9) + offset
        return RequestTrace(
            self, name, context, parent, start, attributes, offset, tensors, ended, spec.config.decoupled
        )

    def export(self, span: ReadableSpan) -> None:
        self.processor.on_end(span)

    def close(self, timeout_s: float = 3.0) -> None:
        """Export what is left and stop, waiting at most ``timeout_s`` (an unreachable collector must not hold up
        the front's stop)."""
        stopper = threading.Thread(target=self.provider.shutdown, name="trace-export-stop", daemon=True)
        stopper.start()
        stopper.join(timeout_s)


class RequestTrace:
    """One traced request: its span's identity and attributes, and the times of its way through the front and the
    worker, made into spans when it ends."""

    __slots__ = ("_attributes", "_batch", "_dispatched", "_ended", "_enqueued", "_exporting", "_marks", "_name",
                 "_offset", "_parent", "_responses", "_start", "_streaming", "_tensors", "context",
                 "traceparent")  # fmt: skip

    def __init__(
        self,
        exporting: Exporting,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        start: int,
        attributes: dict[str, Any],
        offset: int,
        tensors: bool,
        ended: Callable[[], None],
        streaming: bool = False,
    ) -> None:
        self._exporting, self._name, self.context, self._parent = exporting, name, context, parent
        self._start, self._attributes, self._offset = start, attributes, offset
        self._tensors, self._ended = tensors, ended
        self._streaming = streaming  # a decoupled model's: its responses are events
        self.traceparent = f"00-{context.trace_id:032x}-{context.span_id:016x}-01"
        self._enqueued: float | None = None
        self._dispatched: float | None = None
        self._batch: tuple[int, int] = (0, 0)  # rows and requests of the batch it ran in
        self._marks: list[int] | None = None
        self._responses: list[int] = []

    def admitted(self, request: InferRequest, respond: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """The request was parsed: note what it is; ``respond``, noting when each response is encoded."""
        attributes = self._attributes
        attributes["pybind_serve.batch_size"] = request.rows
        if request.id:
            attributes["triton.request_id"] = request.id
        if self._tensors:
            for name, array in request.inputs.items():
                attributes[f"pybind_serve.input.{name}"] = _described(array)

        def timed(outputs: Any) -> Any:
            response = respond(outputs)
            if self._tensors and not self._responses:
                for name, array in outputs.items():
                    attributes[f"pybind_serve.output.{name}"] = _described(array)
            self._responses.append(time.monotonic_ns())
            return response

        return timed

    def cached(self, hit: bool) -> None:
        self._attributes["pybind_serve.cache_hit"] = hit

    def queued(self, enqueued: float) -> None:
        self._enqueued = enqueued

    def dispatched(self, started: float, rows: int, requests: int) -> str:
        """Its batch is being sent (``started``: `time.monotonic`); the traceparent the worker gets."""
        self._dispatched, self._batch = started, (rows, requests)
        return self.traceparent

    def computed(self, marks: list[int] | None) -> None:
        """The worker's times (`time.monotonic_ns`): received, inputs read, function returned, outputs written;
        fewer when it failed (the last one is then when it failed)."""
        self._marks = marks

    def end(self, error: BaseException | None = None) -> None:
        """The request is answered (or failed with ``error``): make its span and the children, export them. A
        failure here is logged, never the request's."""
        try:
            self._end(error)
        except Exception:
            log.exception("tracing a request failed")
        finally:
            self._ended()

    def _end(self, error: BaseException | None) -> None:
        now = time.monotonic_ns()
        offset, dispatched, context = self._offset, self._dispatched, self.context
        if self._enqueued is not None:
            until = _ns(dispatched) if dispatched is not None else now
            self._child("queue", _ns(self._enqueued) + offset, until + offset)
        marks = self._marks
        if marks and dispatched is not None:
            ends = marks[1:4]
            if len(ends) == 3 and self._responses:  # the output ends once this request's response is encoded
                ends[2] = max(ends[2], self._responses[0])
            rows, requests = self._batch
            batch = {"pybind_serve.batch_size": rows, "pybind_serve.batch_requests": requests}
            start = _ns(dispatched)
            for name, end in zip(_COMPUTE, ends, strict=False):
                received = [Event(_RECEIVED, timestamp=marks[0] + offset)] if name == _COMPUTE[0] else []
                self._child(name, start + offset, end + offset, batch, received)
                start = end
        events = (
            tuple(Event("response", timestamp=when + offset) for when in self._responses) if self._streaming else ()
        )
        status = _OK
        if error is not None:
            self._attributes["error.type"] = type(error).__name__
            if isinstance(error, InferenceError):
                message = client_message(error)
            elif isinstance(error, (asyncio.CancelledError, GeneratorExit, ClientGone)):
                message = "cancelled: the client went away, or the server stopped"
            else:
                message = client_message(f"{type(error).__name__}: {error}")
            status = Status(StatusCode.ERROR, message)
        exporting = self._exporting
        span = ReadableSpan(
            self._name, context, self._parent, exporting.provider.resource, self._attributes, events,
            kind=SpanKind.SERVER, status=status, start_time=self._start, end_time=now + offset,
            instrumentation_scope=exporting.scope,
        )  # fmt: skip
        exporting.export(span)

    def _child(
        self, name: str, start: int, end: int, attributes: dict[str, Any] | None = None, events: Sequence[Event] = ()
    ) -> None:
        context = self.context
        span_context = SpanContext(context.trace_id, _new_id(64), False, _SAMPLED, context.trace_state)
        exporting = self._exporting
        span = ReadableSpan(
            name, span_context, context, exporting.provider.resource, attributes or {}, events,
            start_time=start, end_time=end, instrumentation_scope=exporting.scope,
        )  # fmt: skip
        exporting.export(span)


def _new_id(bits: int) -> int:
    """A random trace (128 bits) or span (64 bits) id, never the invalid 0."""
    while not (value := random.getrandbits(bits)):
        pass
    return value


def _ns(monotonic_s: float) -> int:
    return int(monotonic_s * 1e9)


def _iso(ns: int | None) -> str | None:
    return ns_to_iso_str(ns) if ns is not None else None


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _described(array: Any) -> str:
    try:
        datatype = to_datatype(array.dtype)
    except Exception:
        datatype = str(getattr(array, "dtype", "?"))
    return f"{datatype}{list(getattr(array, 'shape', ()))}"
