"""KServe v2 gRPC messages (``inference.GRPCInferenceService``) <-> our request objects and documents, sans I/O.

The gRPC front hands in the received bytes and sends back bytes::

    received = decode_infer_request(data)                  # a serialized ModelInferRequest
    request = parse_infer_request(received.message, spec, received.raw)
    ... run the model ...
    data = encode_infer_response(spec, request, outputs)   # a serialized ModelInferResponse

Inputs come as ``raw_input_contents`` (what tritonclient and perf_analyzer send: one little-endian buffer per
input, BYTES elements length-prefixed; `decode_infer_request` leaves them in the received buffer, and they are
read as numpy views of it, never copied), as typed ``contents`` lists (FP16 has none: it travels raw), or in a
registered shared-memory region (then the input has no raw contents, and an output asked there gets an empty
raw entry, so that clients still pair the others with their raw contents by position).
Everything else about a request (names, datatypes, shapes, batch sizes, parameters, requested outputs) is
checked by `inference`, as for REST, with the same messages. Outputs always go back as ``raw_output_contents``,
copied once from the model's arrays into the serialized response (`protowire`). The metadata, config, index and
statistics responses are built from the same `documents` dicts as the REST answers.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from ..dtypes import BYTES, from_datatype
from ..errors import InvalidInputError
from ..spec import ModelSpec
from . import documents
from .inference import (
    Inputs,
    apply_parameters,
    requested_outputs,
    selected_outputs,
    shared_input,
    write_shared_output,
)
from .messages import InferRequest
from .proto import grpc_service_pb2 as pb
from .protowire import field_header, message_field, packed_varints_field, split_field, string_field, varint
from .shared_memory import REGION, RegionLookup
from .tensor_codec import array_from_buffer, array_to_buffer, datatype_of

__all__ = [
    "EMPTY_FINAL_RESPONSE",
    "FINAL_RESPONSE",
    "Received",
    "decode_infer_request",
    "encode_infer_response",
    "encode_stream_response",
    "final_stream_response",
    "model_config_response",
    "model_metadata_response",
    "model_statistics_response",
    "parameters_field",
    "parameters_of",
    "parse_infer_request",
    "repository_index_response",
    "server_metadata_response",
    "set_parameter",
]

# Response parameter of ModelStreamInfer: whether a response is its request's last (Triton's name).
FINAL_RESPONSE = "triton_final_response"
# Request parameter of ModelStreamInfer: send an empty last response when the last data response was not final.
EMPTY_FINAL_RESPONSE = "triton_enable_empty_final_response"

# Field numbers in grpc_service.proto.
_RAW_INPUT_CONTENTS = pb.ModelInferRequest.RAW_INPUT_CONTENTS_FIELD_NUMBER
_RAW_OUTPUT_CONTENTS = pb.ModelInferResponse.RAW_OUTPUT_CONTENTS_FIELD_NUMBER
_RESPONSE_PARAMETERS = pb.ModelInferResponse.PARAMETERS_FIELD_NUMBER
_OUTPUTS = pb.ModelInferResponse.OUTPUTS_FIELD_NUMBER
_DOUBLE = struct.Struct("<d")
_INFER_RESPONSE = pb.ModelStreamInferResponse.INFER_RESPONSE_FIELD_NUMBER

# The typed list each datatype travels in, and the dtype of that list: narrower ints share the 32-bit lists.
_CONTENTS: dict[str, tuple[str, np.dtype[Any]]] = {
    "BOOL": ("bool_contents", np.dtype(np.bool_)),
    "UINT8": ("uint_contents", np.dtype(np.uint32)),
    "UINT16": ("uint_contents", np.dtype(np.uint32)),
    "UINT32": ("uint_contents", np.dtype(np.uint32)),
    "UINT64": ("uint64_contents", np.dtype(np.uint64)),
    "INT8": ("int_contents", np.dtype(np.int32)),
    "INT16": ("int_contents", np.dtype(np.int32)),
    "INT32": ("int_contents", np.dtype(np.int32)),
    "INT64": ("int64_contents", np.dtype(np.int64)),
    "FP32": ("fp32_contents", np.dtype(np.float32)),
    "FP64": ("fp64_contents", np.dtype(np.float64)),
    BYTES: ("bytes_contents", np.dtype(object)),
}


def parameters_of(parameters: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    """A parameters map as plain Python values (bool, int, str, float); a parameter with no value is None.

    >>> parameters_of({"priority": pb.InferParameter(uint64_param=2), "tag": pb.InferParameter(string_param="a")})
    {'priority': 2, 'tag': 'a'}
    """
    return {key: _value(parameter) for key, parameter in parameters.items()}


def _value(parameter: pb.InferParameter) -> Any:
    which = parameter.WhichOneof("parameter_choice")
    return None if which is None else getattr(parameter, which)


class Received(NamedTuple):
    """A ModelInferRequest as received: the message without its raw contents, and those as views; ``known``:
    a `grpc_layouts.RequestParser`'s memo of this message (None: not remembered)."""

    message: pb.ModelInferRequest
    raw: Sequence[bytes | memoryview]
    known: Any = None


def decode_infer_request(data: bytes) -> Received:
    """Decode a serialized ModelInferRequest, leaving ``raw_input_contents`` in ``data`` (views, no copies).

    Raises `InvalidInputError` when ``data`` is not a ModelInferRequest.

    >>> message = pb.ModelInferRequest(model_name="add", raw_input_contents=[b"abcd"])
    >>> received = decode_infer_request(message.SerializeToString())
    >>> received.message.model_name, [bytes(raw) for raw in received.raw], len(received.message.raw_input_contents)
    ('add', [b'abcd'], 0)
    """
    try:
        split = split_field(data, _RAW_INPUT_CONTENTS)
        if split is None:  # fields protowire does not read: let protobuf parse (and copy) it all
            message = pb.ModelInferRequest.FromString(data)
            return Received(message, message.raw_input_contents)
        rest, raw = split
        return Received(pb.ModelInferRequest.FromString(rest), raw)
    except (ValueError, DecodeError) as exc:
        raise InvalidInputError(f"the request is not a well-formed ModelInferRequest: {exc}") from None


def parse_infer_request(
    message: pb.ModelInferRequest,
    spec: ModelSpec,
    raw: Sequence[bytes | memoryview] | None = None,
    regions: RegionLookup | None = None,
) -> InferRequest:
    """Parse and validate a ModelInferRequest for the model ``spec``; raw inputs are views, never copies.

    ``raw`` are the raw input contents when `decode_infer_request` took them out of the message; ``regions``
    the registered shared-memory regions (None refuses tensors in shared memory).

    >>> from pybind_serve.config import ModelConfig
    >>> from pybind_serve.tensor import Tensor
    >>> spec = ModelSpec("add", 1, (Tensor("x", np.float32, (2,)),), (Tensor("y", np.float32, (2,)),), ModelConfig())
    >>> message = pb.ModelInferRequest(inputs=[{"name": "x", "datatype": "FP32", "shape": [1, 2]}])
    >>> message.raw_input_contents.append(np.array([1, 2], np.float32).tobytes())
    >>> parse_infer_request(message, spec).inputs["x"]
    array([[1., 2.]], dtype=float32)
    """
    inputs, rows = _parse_inputs(message, message.raw_input_contents if raw is None else raw, spec, regions)
    request = InferRequest(model=spec.name, version=spec.version, inputs=inputs, rows=rows, id=message.id)
    apply_parameters(request, parameters_of(message.parameters), spec)
    outputs = ((o.name, parameters_of(o.parameters)) for o in message.outputs)
    request.outputs = requested_outputs(outputs, spec, regions)
    return request


def _parse_inputs(
    message: pb.ModelInferRequest, raw: Sequence[bytes | memoryview], spec: ModelSpec, regions: RegionLookup | None
) -> tuple[dict[str, np.ndarray], int]:
    in_request = sum(1 for entry in message.inputs if REGION not in entry.parameters)  # not in shared memory
    if raw and len(raw) != in_request:
        raise InvalidInputError(
            f"the request for {spec.label} has {len(raw)} raw_input_contents for {in_request} inputs not in shared "
            "memory; give raw contents for every such input or for none"
        )
    inputs = Inputs(spec)
    contents = iter(raw)
    for entry in message.inputs:
        tensor, datatype, shape = inputs.check(entry.name, entry.datatype, list(entry.shape))
        with inputs.reading(tensor):
            array = shared_input(entry.name, datatype, shape, parameters_of(entry.parameters), regions)
            if array is not None:
                if entry.contents.ListFields():
                    raise InvalidInputError("give either shared memory parameters or 'contents', not both")
            elif not raw:
                array = _array_from_contents(entry.contents, datatype, shape)
            elif entry.contents.ListFields():
                raise InvalidInputError("give either 'contents' or raw_input_contents, not both")
            else:
                array = array_from_buffer(next(contents), datatype, shape)
        inputs.add(tensor, array)
    return inputs.finish()


def _array_from_contents(contents: pb.InferTensorContents, datatype: str, shape: list[int]) -> np.ndarray:
    if datatype not in _CONTENTS:
        raise InvalidInputError(f"{datatype} data has no 'contents' list; send it in raw_input_contents")
    field, dtype = _CONTENTS[datatype]
    others = [f.name for f, _ in contents.ListFields() if f.name != field]
    if others:
        raise InvalidInputError(f"{datatype} 'contents' go in {field}, got {', '.join(others)}")
    values = getattr(contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidInputError(f"'contents' hold {len(values)} elements but shape {shape} needs {count}")
    if datatype == BYTES:
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    return _narrowed(np.array(values, dtype=dtype), datatype).reshape(shape)


def _narrowed(array: np.ndarray, datatype: str) -> np.ndarray:
    """The array in the datatype's own dtype; INT8 etc. arrive in a 32-bit list and must fit."""
    target = from_datatype(datatype)
    if target == array.dtype:
        return array
    info = np.iinfo(target)
    if array.size and (array.min() < info.min or array.max() > info.max):
        low, high = array.min(), array.max()
        raise InvalidInputError(f"{datatype} 'contents' hold {low if low < info.min else high}, out of range")
    return array.astype(target)


def encode_infer_response(
    spec: ModelSpec, request: InferRequest, outputs: dict[str, np.ndarray], final: bool | None = None
) -> bytes:
    """The serialized ModelInferResponse for ``request``: the outputs it asked for (else all), as raw contents
    (an output asked into shared memory is written there, and its raw entry left empty).

    Each array's bytes are copied once, into the result, which keeps no reference to the arrays: they may be
    views into memory that is reused as soon as this returns. ``final`` (on ModelStreamInfer) is carried as
    the ``triton_final_response`` parameter: whether this is the request's last response. The message is
    written field by field (`protowire`), as protobuf would serialize it, without building protobuf objects.
    """
    fields = [string_field(1, spec.name), string_field(2, str(spec.version)), string_field(3, request.id)]
    if final is not None:
        fields.append(parameters_field(_RESPONSE_PARAMETERS, {FINAL_RESPONSE: final}))
    raw: list[bytes | memoryview] = []
    for tensor, array, _, shared in selected_outputs(spec, request, outputs):
        datatype = datatype_of(tensor.dtype)
        output = string_field(1, tensor.name) + string_field(2, datatype) + packed_varints_field(3, array.shape)
        if shared is not None:
            output += parameters_field(4, write_shared_output(shared, tensor, array, datatype, spec))
            raw.append(field_header(_RAW_OUTPUT_CONTENTS, 0))
        else:
            buffer = array_to_buffer(array, datatype)
            raw += [field_header(_RAW_OUTPUT_CONTENTS, len(buffer)), buffer]
        fields.append(message_field(_OUTPUTS, output))
    return b"".join([*fields, *raw])


def parameters_field(number: int, parameters: Mapping[str, bool | int | float | str]) -> bytes:
    """A ``map<string, InferParameter>`` field, each value in the member `set_parameter` puts it in.

    >>> data = parameters_field(4, {"final": True})
    >>> pb.ModelInferResponse.FromString(data).parameters["final"].bool_param
    True
    """
    return b"".join(
        message_field(number, string_field(1, key) + message_field(2, _parameter(value)))
        for key, value in parameters.items()
    )


def _parameter(value: bool | int | float | str) -> bytes:
    """A serialized InferParameter: its oneof member is written even when it holds the default value."""
    if isinstance(value, bool):
        return b"\x08" + varint(value)  # bool_param = 1
    if isinstance(value, int):
        return b"\x10" + varint(value)  # int64_param = 2
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)  # double_param = 4
    if isinstance(value, str):
        data = value.encode()
        return b"\x1a" + varint(len(data)) + data  # string_param = 3
    raise InvalidInputError(f"a parameter must be a bool, int, float or str, got {value!r}")


def set_parameter(parameter: pb.InferParameter, value: bool | int | float | str, *, unsigned: bool = False) -> None:
    """Put a plain value in an InferParameter (``parameters_of`` reads it back); ``unsigned``: an int goes in
    uint64_param (Triton reads ``priority`` from there only). Raises `InvalidInputError` for other types.

    >>> parameter = pb.InferParameter()
    >>> set_parameter(parameter, 3); parameter.int64_param
    3
    """
    if isinstance(value, bool):
        parameter.bool_param = value
    elif isinstance(value, int) and unsigned:
        parameter.uint64_param = value
    elif isinstance(value, int):
        parameter.int64_param = value
    elif isinstance(value, float):
        parameter.double_param = value
    elif isinstance(value, str):
        parameter.string_param = value
    else:
        raise InvalidInputError(f"a parameter must be a bool, int, float or str, got {value!r}")


def encode_stream_response(infer_response: bytes) -> bytes:
    """A serialized ModelStreamInferResponse around a serialized ModelInferResponse (no error)."""
    return field_header(_INFER_RESPONSE, len(infer_response)) + infer_response


def final_stream_response(message: pb.ModelInferRequest) -> pb.ModelStreamInferResponse:
    """The empty last response of a decoupled model's stream, sent when the request asked for it
    (``triton_enable_empty_final_response``): it only says that no more responses will come."""
    response = pb.ModelInferResponse(model_name=message.model_name, model_version=message.model_version, id=message.id)
    response.parameters[FINAL_RESPONSE].bool_param = True
    return pb.ModelStreamInferResponse(infer_response=response)


def server_metadata_response(version: str, extensions: list[str]) -> pb.ServerMetadataResponse:
    return json_format.ParseDict(documents.server_metadata(version, extensions), pb.ServerMetadataResponse())


def model_metadata_response(spec: ModelSpec) -> pb.ModelMetadataResponse:
    return json_format.ParseDict(documents.model_metadata(spec), pb.ModelMetadataResponse())


def model_config_response(spec: ModelSpec) -> pb.ModelConfigResponse:
    return json_format.ParseDict({"config": documents.model_config(spec)}, pb.ModelConfigResponse())


def repository_index_response(rows: list[tuple[str, int, str, str]]) -> pb.RepositoryIndexResponse:
    """From (name, version, state, reason) rows, as `documents.repository_index` takes them."""
    return json_format.ParseDict({"models": documents.repository_index(rows)}, pb.RepositoryIndexResponse())


def model_statistics_response(entries: list[dict[str, Any]]) -> pb.ModelStatisticsResponse:
    """From `documents.model_statistics` entries."""
    return json_format.ParseDict({"model_stats": entries}, pb.ModelStatisticsResponse())
