"""The gRPC fast paths agree with protobuf: ModelInferResponse written field by field (`grpc_codec`), and
repeated ModelInferRequests parsed from a remembered layout (`grpc_layouts`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pybind_serve.errors import InvalidInputError
from pybind_serve.protocol.grpc_codec import (
    FINAL_RESPONSE,
    decode_infer_request,
    encode_infer_response,
    parameters_field,
    parse_infer_request,
    set_parameter,
)
from pybind_serve.protocol.grpc_layouts import MAX_KEY_BYTES, RequestParser
from pybind_serve.protocol.messages import InferRequest, RequestedOutput
from pybind_serve.protocol.proto import grpc_service_pb2 as pb
from pybind_serve.tensor import Tensor
from tests.unit.test_protocol_rest import DTYPES, make_spec, sample

TWO_OUT = make_spec(outputs=(Tensor("y", np.float32, (-1,)), Tensor("z", np.int64, (-1,))))


def expected_response(spec: Any, request: InferRequest, outputs: dict[str, np.ndarray], final: Any) -> Any:
    """The response as protobuf objects would build it."""
    response = pb.ModelInferResponse(model_name=spec.name, model_version=str(spec.version), id=request.id)
    if final is not None:
        response.parameters[FINAL_RESPONSE].bool_param = final
    for name, array in outputs.items():
        response.outputs.add(name=name, datatype="FP32" if array.dtype == np.float32 else "INT64", shape=array.shape)
        response.raw_output_contents.append(array.tobytes())
    return response


@pytest.mark.parametrize("final", [None, True, False])
@pytest.mark.parametrize("request_id", ["", "r-1", "é" * 200])
def test_responses_equal_protobufs(final: bool | None, request_id: str) -> None:
    outputs: dict[str, np.ndarray] = {
        "y": np.arange(6, dtype=np.float32).reshape(2, 3),
        "z": np.array([[-1], [1 << 40]], np.int64),
    }
    request = InferRequest("m", 1, {}, id=request_id)
    data = encode_infer_response(TWO_OUT, request, outputs, final=final)
    expected = expected_response(TWO_OUT, request, outputs, final)
    assert pb.ModelInferResponse.FromString(data) == expected
    if final is None:
        assert data == expected.SerializeToString()  # byte for byte when no map is involved


@pytest.mark.parametrize("datatype", list(DTYPES))
def test_every_datatype_round_trips(datatype: str) -> None:
    spec = make_spec(outputs=(Tensor("y", DTYPES[datatype], (-1,)),))
    array = sample(datatype, (2, 3))
    response = pb.ModelInferResponse.FromString(encode_infer_response(spec, InferRequest("m", 1, {}), {"y": array}))
    assert (response.outputs[0].name, response.outputs[0].datatype, list(response.outputs[0].shape)) == (
        "y",
        datatype,
        [2, 3],
    )


def test_empty_and_scalar_shapes() -> None:
    spec = make_spec(outputs=(Tensor("y", np.float32, (-1,)),), batching=False)
    for array in (np.zeros((0,), np.float32), np.float32(2.5).reshape(())):
        response = pb.ModelInferResponse.FromString(encode_infer_response(spec, InferRequest("m", 1, {}), {"y": array}))
        assert list(response.outputs[0].shape) == list(array.shape)
        assert response.raw_output_contents == [array.tobytes()]


@pytest.mark.parametrize("value", [True, False, 0, -5, 1 << 40, 0.0, 2.5, "", "key-é"])
def test_parameters_equal_set_parameter(value: Any) -> None:
    expected = pb.ModelInferResponse()
    set_parameter(expected.parameters["p"], value)
    assert pb.ModelInferResponse.FromString(parameters_field(4, {"p": value})) == expected


def test_parameters_of_another_type_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="must be a bool, int, float or str"):
        parameters_field(4, {"p": [1]})  # type: ignore[dict-item]


# -- RequestParser --------------------------------------------------------------------------------------------


def infer_request(request_id: str = "", data: tuple[bytes, ...] | None = None, **fields: Any) -> bytes:
    message = pb.ModelInferRequest(model_name="m", id=request_id, **fields)
    if "inputs" not in fields:
        message.inputs.add(name="x", datatype="FP32", shape=[2, 3])
    message.raw_input_contents.extend(data if data is not None else [np.arange(6, dtype=np.float32).tobytes()])
    return message.SerializeToString()


def same(a: InferRequest, b: InferRequest) -> bool:
    arrays = a.inputs.keys() == b.inputs.keys() and all(np.array_equal(a.inputs[k], b.inputs[k]) for k in a.inputs)
    rest = [(r.id, r.rows, r.parameters, r.priority, r.timeout_us, r.outputs, r.model, r.version) for r in (a, b)]
    return arrays and rest[0] == rest[1]


def full_parse(data: bytes, spec: Any = None) -> InferRequest:
    received = decode_infer_request(data)
    return parse_infer_request(received.message, spec or make_spec(), received.raw)


def test_a_repeated_message_parses_as_the_first() -> None:
    spec, parser = make_spec(), RequestParser()
    fields: dict[str, Any] = {
        "parameters": {"priority": pb.InferParameter(uint64_param=2), "tag": pb.InferParameter(string_param="t")}
    }
    first = parser.parse(parser.decode(infer_request("a", **fields)), spec)
    new_data = (np.full(6, 7, np.float32).tobytes(),)
    received = parser.decode(infer_request("a", new_data, **fields))
    assert received.known is not None and received.known.layout is not None  # the short path
    again = parser.parse(received, spec)
    assert same(again, full_parse(infer_request("a", new_data, **fields), spec))
    assert again.inputs["x"][0, 0] == 7 and first.inputs["x"][0, 0] == 0
    again.parameters["more"] = 1  # each request has its own parameters
    assert "more" not in parser.parse(parser.decode(infer_request("a", **fields)), spec).parameters


def test_outputs_and_ids_are_part_of_the_layout() -> None:
    spec, parser = TWO_OUT, RequestParser()
    asked: dict[str, Any] = {"outputs": [pb.ModelInferRequest.InferRequestedOutputTensor(name="z")]}
    cases: list[tuple[str, dict[str, Any]]] = [("a", {}), ("b", {}), ("a", asked), ("a", {})]
    for request_id, fields in cases:
        got = parser.parse(parser.decode(infer_request(request_id, **fields)), spec)
        assert same(got, full_parse(infer_request(request_id, **fields), spec))
    assert parser.parse(parser.decode(infer_request("a", **asked)), spec).outputs == (RequestedOutput("z"),)


def test_a_layout_holds_for_its_spec_only() -> None:
    parser = RequestParser()
    parser.parse(parser.decode(infer_request()), make_spec())
    other = make_spec(inputs=(Tensor("x", np.float32, (4,)),))  # e.g. the model loaded again, changed
    with pytest.raises(InvalidInputError, match="expected FP32 shape"):
        parser.parse(parser.decode(infer_request()), other)


@pytest.mark.parametrize(
    "data, message",
    [
        ((b"\0" * 20,), "binary data holds 20 bytes but FP32 \\[2, 3\\] needs 24"),
        ((), "'contents'"),
        ((b"\0" * 24, b"\0" * 24), "2 raw_input_contents for 1 inputs"),
    ],
)
def test_bad_tensor_data_gets_the_full_parses_error(data: tuple[bytes, ...], message: str) -> None:
    spec, parser = make_spec(), RequestParser()
    parser.parse(parser.decode(infer_request()), spec)
    with pytest.raises(InvalidInputError, match=message) as ours:
        parser.parse(parser.decode(infer_request("", data)), spec)
    with pytest.raises(InvalidInputError) as theirs:
        full_parse(infer_request("", data), spec)
    assert str(ours.value) == str(theirs.value)


def test_shared_memory_requests_are_not_remembered() -> None:
    message = pb.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name="x", datatype="FP32", shape=[2, 3])
    tensor.parameters["shared_memory_region"].string_param = "r"
    parser = RequestParser()
    received = parser.decode(message.SerializeToString())
    with pytest.raises(InvalidInputError):
        parser.parse(received, make_spec())  # no regions: refused, and nothing remembered
    assert received.known is not None and received.known.layout is None


def test_large_or_unusual_messages_are_not_remembered() -> None:
    parser = RequestParser()
    long_id = infer_request("i" * (MAX_KEY_BYTES + 1))
    assert parser.decode(long_id).known is None
    assert parser.decode(b"\x08\x01").known is None  # a varint field: left to protobuf
    with pytest.raises(InvalidInputError, match="not a well-formed ModelInferRequest"):
        parser.decode(b"\x0a\x05ab")


def test_memory_is_bounded() -> None:
    parser = RequestParser(max_layouts=3)
    for i in range(10):
        parser.parse(parser.decode(infer_request(str(i))), make_spec())
    assert len(parser._known) <= 3
