"""KServe v2 gRPC (``inference.GRPCInferenceService``) for the clients, sans I/O: each operation as a
`GrpcRequest` (the method name and the serialized request) and the parser of its `GrpcReply`.

Tensors travel as ``raw_input_contents`` / ``raw_output_contents``: each input's bytes are copied once, into
the serialized request (`protowire`), and outputs are read as views of the received buffer (writable: the
transport receives into a bytearray); outputs a server sends as typed ``contents`` lists are read too. A
failed call raises the `pybind_serve.errors` class of its status code with the server's message. The server
side of the same wire is `pybind_serve.protocol.grpc_codec`.

>>> request = encode_infer(ModelRef("m"), {"x": np.ones((1, 2), np.float32)}, {"priority": 1}, None)
>>> message = pb.ModelInferRequest.FromString(request)
>>> message.inputs[0].shape, message.parameters["priority"].uint64_param, len(message.raw_input_contents[0])
([1, 2], 1, 8)
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from ..dtypes import from_datatype
from ..errors import InferenceError, InvalidInputError, from_grpc_code
from ..protocol.grpc_codec import set_parameter
from ..protocol.proto import grpc_service_pb2 as pb
from ..protocol.protowire import field_header, split_field
from ..protocol.tensor_codec import array_to_buffer
from .exchange import Call, CallOptions, GrpcReply, GrpcRequest, ModelRef
from .inputs import datatype_of
from .model import ModelMetadata, RemoteModelConfig, config_from_document, malformed, metadata_from_document
from .outputs import read_output
from .shared_memory import Placement

__all__ = ["SERVICE", "GrpcCodec", "StreamResponse", "decode_infer", "decode_stream", "encode_infer", "error_of"]

SERVICE = "inference.GRPCInferenceService"
FINAL_RESPONSE = "triton_final_response"  # set by a server on a stream's responses; true on the last one
_RAW_INPUT_CONTENTS = pb.ModelInferRequest.RAW_INPUT_CONTENTS_FIELD_NUMBER
_RAW_OUTPUT_CONTENTS = pb.ModelInferResponse.RAW_OUTPUT_CONTENTS_FIELD_NUMBER
_INFER_RESPONSE = pb.ModelStreamInferResponse.INFER_RESPONSE_FIELD_NUMBER
_CONTENTS = {"BOOL": "bool", "INT64": "int64", "UINT64": "uint64", "FP32": "fp32", "FP64": "fp64", "BYTES": "bytes"}
_CONTENTS.update({name: "int" for name in ("INT8", "INT16", "INT32")} | {f"UINT{n}": "uint" for n in (8, 16, 32)})


@dataclass(frozen=True)
class StreamResponse:
    """One response of a ModelStreamInfer call: its outputs (none, for an empty final response) and whether it
    is the last one for its request."""

    outputs: dict[str, np.ndarray]
    final: bool


class GrpcCodec:
    """The gRPC requests of each client operation, and the parsers of their replies."""

    def model_ready(self, model: ModelRef, options: CallOptions) -> Call[bool]:
        request = _request("ModelReady", pb.ModelReadyRequest(name=model.name, version=model.version), model, options)

        def parse(reply: GrpcReply) -> bool:
            if reply.code in ("NOT_FOUND", "UNAVAILABLE"):  # as REST's 404 and 503: "not yet"
                return False
            return bool(_message(reply, pb.ModelReadyResponse).ready)

        return Call(request, parse)

    def model_metadata(self, model: ModelRef, options: CallOptions) -> Call[ModelMetadata]:
        message = pb.ModelMetadataRequest(name=model.name, version=model.version)

        def parse(reply: GrpcReply) -> ModelMetadata:
            return metadata_from_document(_document(_message(reply, pb.ModelMetadataResponse)), model.label)

        return Call(_request("ModelMetadata", message, model, options), parse)

    def model_config(self, model: ModelRef, options: CallOptions) -> Call[RemoteModelConfig]:
        message = pb.ModelConfigRequest(name=model.name, version=model.version)

        def parse(reply: GrpcReply) -> RemoteModelConfig:
            return config_from_document(_document(_message(reply, pb.ModelConfigResponse).config), model.label)

        return Call(_request("ModelConfig", message, model, options), parse)

    def infer(
        self,
        model: ModelRef,
        inputs: Mapping[str, np.ndarray],
        parameters: Mapping[str, Any],
        outputs: Sequence[str] | None,
        options: CallOptions,
        placement: Placement | None = None,
    ) -> Call[dict[str, np.ndarray]]:
        body = encode_infer(model, inputs, parameters, outputs, placement)
        request = GrpcRequest("ModelInfer", model.label, body, _metadata(options), options.timeout_s)
        return Call(
            request, decode_infer if placement is None else functools.partial(decode_infer, placement=placement)
        )

    def register_region(self, name: str, key: str, byte_size: int, options: CallOptions) -> Call[None]:
        """Register ``byte_size`` bytes of the /dev/shm segment ``key`` as system shared-memory region ``name``."""
        message = pb.SystemSharedMemoryRegisterRequest(name=name, key=key, offset=0, byte_size=byte_size)
        request = _request("SystemSharedMemoryRegister", message, "system shared memory", options)
        return Call(request, _nothing)

    def unregister_region(self, name: str, options: CallOptions) -> Call[None]:
        message = pb.SystemSharedMemoryUnregisterRequest(name=name)
        request = _request("SystemSharedMemoryUnregister", message, "system shared memory", options)
        return Call(request, _nothing)

    def stream_infer(
        self,
        model: ModelRef,
        inputs: Mapping[str, np.ndarray],
        parameters: Mapping[str, Any],
        outputs: Sequence[str] | None,
        options: CallOptions,
    ) -> Call[StreamResponse]:
        """The one request of a ModelStreamInfer call, asking for an empty final response (as tritonclient
        does), and the parser of each response on the stream."""
        body = encode_infer(model, inputs, {**parameters, "triton_enable_empty_final_response": True}, outputs)
        request = GrpcRequest("ModelStreamInfer", model.label, body, _metadata(options), options.timeout_s)
        return Call(request, decode_stream)

    def load_model(self, model: ModelRef, options: CallOptions) -> Call[None]:
        message = pb.RepositoryModelLoadRequest(model_name=model.name)
        return Call(_request("RepositoryModelLoad", message, model, options), _nothing)

    def unload_model(self, model: ModelRef, options: CallOptions) -> Call[None]:
        message = pb.RepositoryModelUnloadRequest(model_name=model.name)
        return Call(_request("RepositoryModelUnload", message, model, options), _nothing)


def _request(method: str, message: Message, model: ModelRef | str, options: CallOptions) -> GrpcRequest:
    """A call of ``method``; ``model`` (or a text) names what it is for in transport errors."""
    what = model if isinstance(model, str) else model.label
    return GrpcRequest(method, what, message.SerializeToString(), _metadata(options), options.timeout_s)


def _metadata(options: CallOptions) -> tuple[tuple[str, str], ...]:
    return tuple((key.lower(), value) for key, value in options.headers.items())  # gRPC keys are lower case


def _nothing(reply: GrpcReply) -> None:
    if reply.code != "OK":
        raise error_of(reply)


def _message(reply: GrpcReply, kind: type[Any]) -> Any:
    if reply.code != "OK":
        raise error_of(reply)
    try:
        return kind.FromString(reply.body)
    except DecodeError as exc:
        raise malformed(f"a {kind.__name__} that does not decode ({exc})") from None


def _document(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def error_of(reply: GrpcReply) -> InferenceError:
    """The `pybind_serve.errors` class of a failed call's status code, with the server's message."""
    return from_grpc_code(reply.code, reply.details or f"the call ended with {reply.code}")


def encode_infer(
    model: ModelRef,
    inputs: Mapping[str, np.ndarray],
    parameters: Mapping[str, Any],
    outputs: Sequence[str] | None,
    placement: Placement | None = None,
) -> bytes:
    """A serialized ModelInferRequest, the inputs' bytes appended as raw contents (copied once, here); with a
    ``placement``, the inputs and outputs it places are windows of its shared-memory region instead."""
    message = pb.ModelInferRequest(model_name=model.name, model_version=model.version)
    for key, value in parameters.items():
        _set_parameter(message.parameters[key], key, value)
    for name in outputs or ():
        output = message.outputs.add(name=name)
        if placement is not None and name in placement.outputs:
            for key, value in placement.parameters(placement.outputs[name]).items():
                _set_parameter(output.parameters[key], key, value)
    pieces: list[bytes | memoryview] = []
    for name, array in inputs.items():
        datatype = datatype_of(name, array)
        entry = message.inputs.add(name=name, datatype=datatype, shape=array.shape)
        if placement is not None and name in placement.inputs:
            for key, value in placement.parameters(placement.inputs[name]).items():
                _set_parameter(entry.parameters[key], key, value)
            continue
        buffer = array_to_buffer(array, datatype)
        pieces += [field_header(_RAW_INPUT_CONTENTS, len(buffer)), buffer]
    return b"".join([message.SerializeToString(), *pieces])


def _set_parameter(parameter: pb.InferParameter, key: str, value: Any) -> None:
    try:
        set_parameter(parameter, value, unsigned=key == "priority")  # Triton reads the priority from uint64_param
    except InvalidInputError:
        raise InvalidInputError(f"parameter {key!r} must be a bool, int, float or str, got {value!r}") from None


def decode_infer(reply: GrpcReply, placement: Placement | None = None) -> dict[str, np.ndarray]:
    """The outputs of a ModelInferResponse, by name (those in the ``placement``'s region copied out of it); the
    error of a failed call, raised."""
    if reply.code != "OK":
        raise error_of(reply)
    return _read_response(memoryview(reply.body), placement)[1]


def decode_stream(reply: GrpcReply) -> StreamResponse:
    """One ModelStreamInferResponse: its outputs and whether it is final; its error message, raised.

    The protocol gives a stream's errors no status code, so they are raised as `InferenceError`.
    """
    if reply.code != "OK":
        raise error_of(reply)
    split = _split(memoryview(reply.body), _INFER_RESPONSE)
    rest, inner = split if split is not None else (reply.body, [])
    envelope = _parse(pb.ModelStreamInferResponse, rest)
    if envelope.error_message:
        raise InferenceError(envelope.error_message)
    if not inner:  # protobuf parsed it whole (or there is no response): read it from the message
        inner = [memoryview(envelope.infer_response.SerializeToString())]
    response, outputs = _read_response(inner[-1])
    final = response.parameters[FINAL_RESPONSE].bool_param if FINAL_RESPONSE in response.parameters else False
    return StreamResponse(outputs, final)


def _read_response(
    body: memoryview, placement: Placement | None = None
) -> tuple[pb.ModelInferResponse, dict[str, np.ndarray]]:
    split = _split(body, _RAW_OUTPUT_CONTENTS)
    if split is None:
        response = _parse(pb.ModelInferResponse, body)
        raw: Sequence[bytes | memoryview] = response.raw_output_contents
    else:
        response, raw = _parse(pb.ModelInferResponse, split[0]), split[1]
    if raw and len(raw) != len(response.outputs):
        raise malformed(f"{len(raw)} raw_output_contents for {len(response.outputs)} outputs")
    outputs = {}
    for i, entry in enumerate(response.outputs):
        shape = list(entry.shape)
        if placement is not None and entry.name in placement.outputs:  # its raw entry (if any) is empty
            outputs[entry.name] = placement.read_output(entry.name, entry.datatype, shape)
        elif raw:
            outputs[entry.name] = read_output(entry.name, entry.datatype, shape, buffer=raw[i])
        else:
            outputs[entry.name] = _from_contents(entry, shape)
    return response, outputs


def _from_contents(entry: Any, shape: list[int]) -> np.ndarray:
    """An output sent as a typed ``contents`` list (FP16 and others without a list always travel raw)."""
    kind = _CONTENTS.get(entry.datatype)
    if kind is None:
        return read_output(entry.name, entry.datatype, shape, buffer=b"")  # raises: unsupported, or no data
    values = list(getattr(entry.contents, f"{kind}_contents"))
    try:
        if entry.datatype == "BYTES":
            array = np.empty(len(values), dtype=object)
            array[:] = values
        else:
            array = np.array(values, dtype=from_datatype(entry.datatype))
        return array.reshape(shape)
    except (OverflowError, ValueError) as exc:
        raise malformed(f"output {entry.name!r} whose contents are not {entry.datatype} {shape} ({exc})") from None


def _split(body: memoryview, number: int) -> tuple[bytes | memoryview, list[memoryview]] | None:
    try:
        return split_field(body, number)  # type: ignore[arg-type]  # reads any buffer
    except ValueError as exc:
        raise malformed(f"a response that is not a protobuf message ({exc})") from None


def _parse(kind: type[Any], data: bytes | bytearray | memoryview) -> Any:
    try:
        return kind.FromString(data)
    except DecodeError as exc:
        raise malformed(f"a {kind.__name__} that does not decode ({exc})") from None
