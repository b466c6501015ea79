"""The protobuf wire helpers agree with protobuf itself."""

from __future__ import annotations

import pytest

from pybind_serve.protocol.proto import grpc_service_pb2 as pb
from pybind_serve.protocol.protowire import (
    double_field,
    field_header,
    message_field,
    packed_varints_field,
    split_field,
    string_field,
    varint,
    varint_field,
)


@pytest.mark.parametrize("size", [0, 1, 127, 128, 300, 1 << 20])
def test_field_header_frames_bytes_as_protobuf_does(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    ours = field_header(6, size) + payload
    assert ours == pb.ModelInferResponse(raw_output_contents=[payload]).SerializeToString()


def test_split_field_takes_out_every_value_of_the_field_in_order() -> None:
    message = pb.ModelInferRequest(model_name="m", id="i", raw_input_contents=[b"a", b"", b"c" * 200])
    message.inputs.add(name="x", datatype="FP32", shape=[1])
    split = split_field(message.SerializeToString(), 7)
    assert split is not None
    rest, values = split
    assert [bytes(v) for v in values] == [b"a", b"", b"c" * 200]
    del message.raw_input_contents[:]
    assert pb.ModelInferRequest.FromString(rest) == message


def test_split_field_without_the_field_returns_the_data_itself() -> None:
    data = pb.ModelInferRequest(model_name="m").SerializeToString()
    assert split_field(data, 7) == (data, [])
    assert split_field(b"", 7) == (b"", [])


@pytest.mark.parametrize("data", [b"\x0a", b"\x0a\x05ab", b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"])
def test_malformed_messages_raise_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        split_field(data, 7)


# -- writers: each field as protobuf serializes it -----------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 1 << 35, (1 << 63) - 1, -1, -300, -(1 << 63)])
def test_varint_fields_agree_with_protobuf(value: int) -> None:
    expected = pb.InferParameter(int64_param=value).SerializeToString()
    assert b"\x10" + varint(value) == expected
    assert varint_field(2, value) == (expected if value else b"")


@pytest.mark.parametrize("value", ["", "a", "é" * 100, "x" * 300])
def test_string_fields_agree_with_protobuf(value: str) -> None:
    assert string_field(1, value) == pb.ModelInferResponse(model_name=value).SerializeToString()


@pytest.mark.parametrize("value", [0.0, 0.5, -1e300, float("inf")])
def test_double_fields_agree_with_protobuf(value: float) -> None:
    # double_param is a oneof member, which protobuf writes even at 0.0; a plain double field leaves 0.0 out
    expected = pb.InferParameter(double_param=value).SerializeToString()
    assert double_field(4, value) == (expected if value else b"")


@pytest.mark.parametrize("shape", [[], [0], [1, 16], [3, 300, 1 << 40], [-1, 2]])
def test_packed_varints_agree_with_protobuf(shape: list[int]) -> None:
    expected = pb.ModelInferResponse.InferOutputTensor(shape=shape).SerializeToString()
    assert packed_varints_field(3, shape) == expected


def test_message_fields_nest_serialized_messages() -> None:
    output = pb.ModelInferResponse.InferOutputTensor(name="y", datatype="FP32", shape=[1, 2])
    inner = string_field(1, "y") + string_field(2, "FP32") + packed_varints_field(3, [1, 2])
    assert inner == output.SerializeToString()
    assert message_field(5, inner) == pb.ModelInferResponse(outputs=[output]).SerializeToString()
    assert message_field(5, b"") == pb.ModelInferResponse(outputs=[{}]).SerializeToString()
