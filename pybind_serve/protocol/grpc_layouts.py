"""ModelInferRequests that differ only in their tensor bytes, decoded and checked once.

A client sends the same request over and over with new data: perf_analyzer and most tritonclient loops send
one message whose fields other than ``raw_input_contents`` (model, inputs' names, datatypes and shapes,
parameters, requested outputs, often the id) do not change. `RequestParser` remembers, for the last such
messages it saw (the serialized fields, at most `MAX_KEY_BYTES` each), the decoded message and what
`grpc_codec.parse_infer_request` made of it for a model; a request whose fields match one of them only has
its raw contents read (`tensor_codec.array_from_buffer`, which still checks each size).

Only requests whose every input travels in ``raw_input_contents`` and whose outputs do not go to shared memory
are remembered: registered regions can change between requests, so those are checked each time. Whatever
goes wrong on the short path is left to the full parse, which raises the error with its usual message.

    parser = RequestParser()
    received = parser.decode(data)                    # in the gRPC deserializer
    request = parser.parse(received, spec, regions)   # once the model is known
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInputError
from ..spec import ModelSpec
from .grpc_codec import Received, decode_infer_request, parse_infer_request
from .messages import InferRequest, RequestedOutput
from .proto import grpc_service_pb2 as pb
from .protowire import split_field
from .shared_memory import REGION, RegionLookup
from .tensor_codec import array_from_buffer

__all__ = ["MAX_KEY_BYTES", "MAX_LAYOUTS", "RequestParser"]

MAX_LAYOUTS = 256  # distinct messages remembered; all are forgotten when one more comes
MAX_KEY_BYTES = 4096  # larger fields (e.g. typed ``contents``) are not worth remembering

_RAW_INPUT_CONTENTS = pb.ModelInferRequest.RAW_INPUT_CONTENTS_FIELD_NUMBER


@dataclass(frozen=True, slots=True)
class _Layout:
    """What a message parses to for one model, but for its tensors' bytes."""

    spec: ModelSpec
    inputs: tuple[tuple[str, str, tuple[int, ...]], ...]  # name, datatype, shape, in raw_input_contents order
    rows: int
    id: str
    parameters: dict[str, Any]  # copied into each request
    priority: int
    timeout_us: int
    outputs: tuple[RequestedOutput, ...] | None


class _Known:
    """A message seen before: decoded once, and its layout for the last model it was parsed for."""

    __slots__ = ("layout", "message")

    def __init__(self, message: pb.ModelInferRequest) -> None:
        self.message = message
        self.layout: _Layout | None = None


class RequestParser:
    """`decode` and `parse` ModelInferRequests, as `grpc_codec` does, remembering repeated messages."""

    def __init__(self, max_layouts: int = MAX_LAYOUTS) -> None:
        self._known: dict[bytes, _Known] = {}
        self._max = max_layouts

    def decode(self, data: bytes) -> Received:
        """`grpc_codec.decode_infer_request`; the message is shared by the requests that repeat it: read only.

        Raises `InvalidInputError` when ``data`` is not a ModelInferRequest.
        """
        try:
            split = split_field(data, _RAW_INPUT_CONTENTS)
        except ValueError:
            split = None
        if split is None or len(split[0]) > MAX_KEY_BYTES:
            return decode_infer_request(data)
        rest, raw = split
        known = self._known.get(rest)
        if known is None:
            received = decode_infer_request(data)
            if len(self._known) >= self._max:
                self._known.clear()
            known = self._known[rest] = _Known(received.message)
        return Received(known.message, raw, known)

    def parse(self, received: Received, spec: ModelSpec, regions: RegionLookup | None = None) -> InferRequest:
        """`grpc_codec.parse_infer_request` for the model ``spec``: from the remembered layout when there is
        one (for this very spec: a model loaded again gets a new one), else in full (then remembered)."""
        known: _Known | None = received.known
        if known is None:
            return parse_infer_request(received.message, spec, received.raw, regions)
        layout = known.layout
        if layout is not None and layout.spec is spec:
            request = _from_layout(layout, received.raw)
            if request is not None:
                return request
        request = parse_infer_request(received.message, spec, received.raw, regions)
        known.layout = _layout_of(received.message, received.raw, spec, request)
        return request


def _from_layout(layout: _Layout, raw: Sequence[bytes | memoryview]) -> InferRequest | None:
    """The request, its arrays read from ``raw``; None when they do not fit the layout (the full parse says
    why)."""
    if len(raw) != len(layout.inputs):
        return None
    arrays = {}
    try:
        for (name, datatype, shape), buffer in zip(layout.inputs, raw, strict=True):
            arrays[name] = array_from_buffer(buffer, datatype, shape)
    except InvalidInputError:
        return None
    spec = layout.spec
    return InferRequest(
        model=spec.name,
        version=spec.version,
        inputs=arrays,
        rows=layout.rows,
        id=layout.id,
        parameters=dict(layout.parameters),
        priority=layout.priority,
        timeout_us=layout.timeout_us,
        outputs=layout.outputs,
    )


def _layout_of(
    message: pb.ModelInferRequest, raw: Sequence[bytes | memoryview], spec: ModelSpec, request: InferRequest
) -> _Layout | None:
    """The layout of a message that parsed into ``request``; None unless every input came from ``raw`` and
    no output goes to shared memory."""
    if len(raw) != len(message.inputs) or any(REGION in entry.parameters for entry in message.inputs):
        return None
    if any(output.shared is not None for output in request.outputs or ()):
        return None
    inputs = tuple((entry.name, entry.datatype, tuple(entry.shape)) for entry in message.inputs)
    return _Layout(
        spec,
        inputs,
        request.rows,
        request.id,
        dict(request.parameters),
        request.priority,
        request.timeout_us,
        request.outputs,
    )
